"""The embedded world (``world``: ``sepnms world``) and the training of its detector
(``world_detector``: ``sepnms world train-detector``)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from sepnms.config.fields import Dropout, IoU, NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Section


class WorldConfig(Section):
    n_images: PosInt = 160
    image_size: Annotated[int, Field(ge=32, strict=True)] = 256
    min_objects: PosInt = 4
    max_objects: PosInt = 7
    sentences_per_ref: PosInt = 2
    split_fractions: dict[str, Prob] = Field(
        default_factory=lambda: {"train": 0.6, "val": 0.14, "testA": 0.13, "testB": 0.13}
    )
    image_format: Literal["jpg", "png"] = "jpg"
    quality_fit_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5
    """Share of the world's images the linear probes of ``quality.json`` are fit on (the rest score them)."""
    quality_score_thresh: Dropout = 0.05
    """Class-score threshold of the detections scored by COCOeval (py-faster-rcnn test_net's 0.05)."""

    @model_validator(mode="after")
    def _check_objects(self) -> "WorldConfig":
        if self.min_objects > self.max_objects:
            raise ValueError(f"world.min_objects ({self.min_objects}) must not exceed world.max_objects ({self.max_objects})")
        return self


class WorldDetectorConfig(Section):
    """Training of the world's detector (``sepnms world train-detector``; docs/METHOD.md "The world's
    detector"): RPN + box-head losses (py-faster-rcnn's targets) on scenes generated on the fly
    from ``train_seed`` (a seed no demo or test world uses), plus an attribute head (colour, size)
    on the box features as in bottom-up attention detectors - the head is not saved."""

    checkpoint: Optional[Path] = None
    """The trained checkpoint the world uses; None = the one shipped in the package."""
    train_seed: NonNegInt = 9_000_017
    """Scenes of training step s come from ``numpy.random.default_rng([train_seed, s])``."""
    steps: PosInt = 3500
    batch_images: PosInt = 2
    lr: PosFloat = 2e-3
    """AdamW learning rate (linear warm-up, then cosine decay to ``lr * lr_final``)."""
    lr_final: Prob = 0.02
    warmup_steps: NonNegInt = 200
    weight_decay: NonNegFloat = 1e-4
    rpn_batch: PosInt = 256
    """Anchors sampled per image (py-faster-rcnn RPN_BATCHSIZE)."""
    rpn_fg_fraction: Prob = 0.5
    rpn_fg_iou: IoU = 0.7
    rpn_bg_iou: IoU = 0.3
    rpn_train_pre_nms_top_n: PosInt = 2000
    rpn_train_post_nms_top_n: PosInt = 300
    roi_batch: PosInt = 64
    """RoIs sampled per image for the box head (fg IoU >= roi_fg_iou, bg below it)."""
    roi_fg_fraction: Prob = 0.25
    roi_fg_iou: IoU = 0.5
    attr_weight: NonNegFloat = 0.5
    """Weight of the colour + size cross-entropies on foreground RoIs (0 = off)."""
    bn_calibration_images: NonNegInt = 64
    """Images whose statistics replace the BatchNorm running averages at the end (precise BN)."""
    log_every: PosInt = 50
    checkpoint_every: NonNegInt = 500
    """Write the (BN-calibrated) checkpoint every this many steps as well (0 = only at the end)."""
    threads: PosInt = 1
    """torch CPU threads while training."""
