"""The world's detector: a narrow Mask R-CNN C4 in MAttNet's exact key layout, *trained* on
generated scenes (``sepnms world train-detector``, ``sepnms.world.train_detector``).

The trained checkpoint ships in the package (``sepnms/world/weights/``); every world copies it to
``<world>/detector/res101_mask_rcnn_world.pth`` (``paths.detector_checkpoint`` of its config),
and the world's detector outputs and head features are that network's output on the world's
images (``sepnms.engine.world``).  Widths come from the config (``world_detector_config``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sepnms.config import DetectorConfig

WORLD_CHECKPOINT = "detector/res101_mask_rcnn_world.pth"
#: the checkpoint shipped in the package (docs/METHOD.md "The world's detector" says how it was trained)
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "res101_mask_rcnn_world.pth"


def world_checkpoint(cfg) -> Path:
    """``world_detector.checkpoint``, else the shipped one; a SepNMSError if it is missing."""
    from sepnms.errors import SepNMSError

    path = Path(cfg.world_detector.checkpoint) if cfg.world_detector.checkpoint else SHIPPED_CHECKPOINT
    if not path.is_file():
        raise SepNMSError(f"world_detector.checkpoint: {path} not found (train one with "
                          "`sepnms world train-detector --out FILE`)")
    return path


def copy_world_detector(cfg, out_dir: Path) -> Path:
    """Copy the world's checkpoint to ``<out_dir>/detector/``; returns the copy."""
    from sepnms.io.atomic import atomic_path

    dst = Path(out_dir) / WORLD_CHECKPOINT
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(world_checkpoint(cfg), tmp)
    return dst


def world_detector_config(cfg) -> DetectorConfig:
    """The world's detector section: ``cfg.detector`` with ``width = model.feat_channels / 16`` and
    the world's resize (short side ``round(1.25 * world.image_size)``, as MAttNet's ~600 px for
    ~480 px COCO images)."""
    from sepnms.errors import SepNMSError

    channels = int(cfg.model.feat_channels)
    if channels % 16 or int(cfg.model.feat_stride) != cfg.detector.feat_stride:
        raise SepNMSError(f"the world's detector needs model.feat_channels a multiple of 16 (C4 = 16 x "
                          f"detector.width), got {channels}, and model.feat_stride = detector.feat_stride")
    return cfg.detector.model_copy(update={"width": channels // 16,
                                           "test_scale": int(round(RESIZED_SHORT_RATIO * cfg.world.image_size))})


#: the resized image's short side, as a fraction of cfg.world.image_size (MAttNet upsamples the
#: short side to 600, a scale of about 1.25 for COCO; here to 1.25 x image_size, so the scale is
#: != 1, varies by image shape, and a small object still covers a few stride-16 cells)
RESIZED_SHORT_RATIO = 1.25
