"""The C4 head features the first stage pools from, by image_id: ``HeadCache`` reads them from
MAttNet's HDF5 files (``features.source: h5``) or computes them from the image files with the
detector trunk (``features.source: images``, ``ImageFeatures``), and the cheap checks of that source
(``check_image_inputs``, ``features_check``).  The dataset's image files are found by
:mod:`sepnms.data.images`.

MAttNet's head features are ~7.8 MB per image in float32 (~150 GB for RefCOCO) and were never
published; with ``features.source: images`` train, propose and the benchmarks compute the same
map (``head`` [1, C, H'/16, W'/16], ``im_info`` = (H', W', scale)) from the image with the
detector of ``paths.detector_checkpoint``, keeping a bounded LRU of recent maps
(``features.cache_images``).
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

from sepnms.config import Config
from sepnms.data.refdb import RefDB
from sepnms.detection.checkpoint import load_detector
from sepnms.detection.detector import MaskRCNNC4
from sepnms.detection.features import c4_from_bgr
from sepnms.detection.preprocess import image_scale, resized_size
from sepnms.errors import ConfigError, InputError
from sepnms.io.head_feats import read_head
from sepnms.data.images import refdb_image_files, refdb_image_sizes
from sepnms.io.images import read_bgr

ImageFiles = Union[Mapping[int, Path], Callable[[int], Path]]


def detector_checkpoint(cfg: Config) -> Path:
    """``paths.detector_checkpoint``, else ``paths.maskrcnn_checkpoint`` (the same file), else a
    ConfigError."""
    path = cfg.paths.detector_checkpoint or cfg.paths.maskrcnn_checkpoint
    if path is None:
        raise ConfigError("config key paths.detector_checkpoint is not set; `detect` and features.source=images "
                          "need MAttNet's detector checkpoint")
    return Path(path)


def check_channels(cfg: Config) -> None:
    c4 = 16 * cfg.detector.width
    if c4 != cfg.model.feat_channels:
        raise ConfigError(f"detector.width {cfg.detector.width} gives {c4}-channel C4 maps but model.feat_channels "
                          f"is {cfg.model.feat_channels}")


def _detector_resized(test_scale: int, test_max_size: int, height: int, width: int) -> tuple[int, int]:
    return resized_size(height, width, image_scale(height, width, test_scale, test_max_size))


def read_detector_image(cfg: Config, path: Path, expect_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """uint8 [H, W, 3] BGR (as ``cv2.imread`` reads it) of an image the detector will see, through
    the one image gate (``io.images.read_bgr``): ``images.max_pixels``, the dataset's recorded (width, height) when
    given, and no side resized to 0 by the detector's resize (``detector.test_scale`` /
    ``test_max_size``)."""
    dc = cfg.detector
    return read_bgr(path, max_pixels=cfg.images.max_pixels, expect_size=expect_size,
                    resized=functools.partial(_detector_resized, dc.test_scale, dc.test_max_size))


class ImageFeatures:
    """image_id -> (head, im_info) computed from the image file; the detector loads on first use
    (in a DataLoader worker it runs on the CPU)."""

    def __init__(self, cfg: Config, images: ImageFiles, device: Optional[str] = None,
                 sizes: Optional[Mapping[int, tuple[int, int]]] = None):
        check_channels(cfg)
        self.cfg, self.images, self.sizes = cfg, images, sizes or {}
        self.checkpoint = detector_checkpoint(cfg)
        self.device = device or cfg.device
        self._model: Optional[MaskRCNNC4] = None

    def path(self, image_id: int) -> Path:
        if callable(self.images):
            return Path(self.images(int(image_id)))
        if int(image_id) not in self.images:
            raise InputError(None, f"no image file known for image_id {image_id}")
        return Path(self.images[int(image_id)])

    def model(self) -> MaskRCNNC4:
        if self._model is None:
            device = "cpu" if torch.utils.data.get_worker_info() is not None else self.device
            self._model = load_detector(self.checkpoint, self.cfg.detector, device)
            self._device = device
        return self._model

    def __call__(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        model = self.model()
        bgr = read_detector_image(self.cfg, self.path(image_id), self.sizes.get(int(image_id)))
        return c4_from_bgr(model, bgr, self._device, self.cfg.detector.amp)


class HeadCache:
    """A small LRU cache of head-feature maps (each image is read once per worker while hot).

    The maps come from MAttNet's HDF5 files in ``feats_dir``, or from ``compute(image_id) ->
    (head, im_info)`` when given (``features.source: images``; see :meth:`for_config`).
    """

    def __init__(self, feats_dir: Optional[Path], channels: int, size: int = 64,
                 compute: Optional[Callable[[int], tuple[np.ndarray, np.ndarray]]] = None):
        self.feats_dir, self.channels, self.size = (Path(feats_dir) if feats_dir else None), channels, size
        self.compute = compute
        self._cache: OrderedDict[int, tuple[torch.Tensor, float]] = OrderedDict()

    @classmethod
    def for_config(cls, cfg: Config, images: Any = None, size: Optional[int] = None) -> "HeadCache":
        """The C4 source of ``cfg.features``: ``h5`` reads ``paths.head_feats_dir``; ``images``
        runs the detector trunk on the image files (``images``: {image_id: path}, a callable, or
        a RefDB whose ``file_name`` entries sit in ``cfg.images_dir()``).  ``size`` defaults to
        ``features.cache_images``."""
        size = size or cfg.features.cache_images
        if cfg.features.source == "h5":
            return cls(cfg.need_path("head_feats_dir"), cfg.model.feat_channels, size)
        sizes = None
        if isinstance(images, RefDB):
            images, sizes = refdb_image_files(cfg, images), refdb_image_sizes(images)
        if images is None:
            raise ValueError("features.source=images needs the image files")
        return cls(None, cfg.model.feat_channels, size, compute=ImageFeatures(cfg, images, sizes=sizes))

    def get(self, image_id: int) -> tuple[torch.Tensor, float]:
        """``(head [1, C, Hf, Wf], scale)``."""
        iid = int(image_id)
        if iid in self._cache:
            self._cache.move_to_end(iid)
            return self._cache[iid]
        if self.compute is not None:
            head, im_info = self.compute(iid)
        else:
            head, im_info = read_head(self.feats_dir, iid, expect_channels=self.channels)
        item = (torch.from_numpy(head), float(im_info[2]))
        self._cache[iid] = item
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return item


def check_image_inputs(cfg: Config, refdb) -> None:
    """``features.source: images`` inputs, cheaply: channel widths agree, the detector checkpoint
    exists, and every image file of ``refdb`` exists (the first one is decoded)."""
    check_channels(cfg)
    ckpt = detector_checkpoint(cfg)
    if not ckpt.is_file():
        raise InputError(ckpt, "detector checkpoint not found (paths.detector_checkpoint)")
    files = refdb_image_files(cfg, refdb)
    missing = [iid for iid, p in sorted(files.items()) if not p.is_file()]
    if missing:
        raise InputError(files[missing[0]], f"image files missing for {len(missing)} of {len(files)} images "
                                            f"(first: image_id {missing[0]})")
    if files:
        first = min(files)
        read_detector_image(cfg, files[first], refdb.image_size(first) if hasattr(refdb, "image_size") else None)


def features_check(cfg: Config, n_images: int = 4) -> dict:
    """Cheap check that ``features.source: images`` reproduces the HDF5 head features: the C4 maps
    of the first ``n_images`` images computed from their files vs ``paths.head_feats_dir``."""
    from sepnms.data.refdb import load_refdb

    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    ids = sorted(refdb.images)[:n_images]
    h5 = HeadCache(cfg.need_path("head_feats_dir"), cfg.model.feat_channels, size=1)
    images = ImageFeatures(cfg, refdb_image_files(cfg, refdb), sizes=refdb_image_sizes(refdb))
    worst, scale_diff = 0.0, 0.0
    for iid in ids:
        (a, sa), (b, info) = h5.get(iid), images(iid)
        if tuple(a.shape) != b.shape:
            raise InputError(h5.feats_dir, f"image_id {iid}: head {tuple(a.shape)} in the HDF5 file but {b.shape} "
                                           "from the image (another detector or resize?)")
        worst = max(worst, float(np.abs(a.numpy() - b).max()))
        scale_diff = max(scale_diff, abs(sa - float(info[2])))
    return {"images": len(ids), "max_abs_diff": worst, "max_scale_diff": scale_diff}
