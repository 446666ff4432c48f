"""The detector at test time (``detector``: ``sepnms detect``) and where the C4 maps come from
(``features``: the detector's head files or its trunk run on the images)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sepnms.config.fields import IoU, NonNegInt, Pixel, PosFloat, PosInt, Prob, Section


class DetectorConfig(Section):
    """MAttNet's Mask R-CNN res101 (C4) at test time (``sepnms.detection``; paper values)."""

    width: PosInt = 64
    """Stem channels; layer1..4 have 1, 2, 4, 8 x width mid channels and 4x that out (64: ResNet-101)."""
    blocks: tuple[PosInt, PosInt, PosInt, PosInt] = (3, 4, 23, 3)
    rpn_channels: PosInt = 512
    num_classes: Annotated[int, Field(ge=2, strict=True)] = 81
    anchor_scales: list[PosFloat] = Field(default_factory=lambda: [4.0, 8.0, 16.0, 32.0], min_length=1)
    anchor_ratios: list[PosFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    feat_stride: PosInt = 16
    pixel_means: tuple[Pixel, Pixel, Pixel] = (102.9801, 115.9465, 122.7717)
    """BGR means subtracted before resizing."""
    test_scale: PosInt = 600
    """Short side of the resized image."""
    test_max_size: PosInt = 1000
    """Long side cap of the resized image."""
    rpn_pre_nms_top_n: PosInt = 6000
    rpn_post_nms_top_n: PosInt = 300
    rpn_nms_thresh: IoU = 0.7
    bbox_stds: tuple[PosFloat, PosFloat, PosFloat, PosFloat] = (0.1, 0.1, 0.2, 0.2)
    pool_size: PosInt = 7
    det_nms: IoU = 0.3
    det_score: Prob = 0.65
    det_lower_step: IoU = 0.1
    det_order: Literal["py2", "py3"] = "py2"
    """Order of ``detect``'s ``dets.json`` (and so its ``det_id`` = ``h5_id``): MAttNet's
    ``run_detect.py`` walks ``refer.Imgs`` and, per image, ``cls_to_dets`` (class name -> boxes in
    NMS order).  ``py2``: those dicts' CPython 2.7 iteration order, as MAttNet's released
    detections were written; ``py3``: the same script under Python 3 (images in instances.json
    order, classes by category id)."""
    batch_images: PosInt = 1
    """Images of the same resized size run through the trunk together."""
    roi_chunk: PosInt = 300
    """RoIs per pass through layer4."""
    num_workers: NonNegInt = 0
    """Image-decoding loader workers of ``detect``."""
    flush_every: PosInt = 64
    """``detect`` writes a part file every this many images."""
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Autocast dtype on CUDA (ignored on CPU)."""


class FeaturesConfig(Section):
    """Where the C4 maps of train / propose / benchmarks come from."""

    source: Literal["h5", "images"] = "h5"
    """``h5``: MAttNet head files in ``paths.head_feats_dir``; ``images``: computed from the image
    with the detector trunk (``paths.detector_checkpoint``), no 150 GB cache needed."""
    cache_images: PosInt = 64
    """Maps kept in memory (LRU) per process."""
