"""C4 maps from image files (``features.source: images``): the detector trunk instead of HDF5.

MAttNet's head features are ~7.8 MB per image in float32 (~150 GB for RefCOCO) and were never
published; with ``features.source: images`` train, propose and the benchmarks compute the same
map (``head`` [1, C, H'/16, W'/16], ``im_info`` = (H', W', scale)) from the image with the
detector of ``paths.detector_checkpoint``, keeping a bounded LRU of recent maps
(``features.cache_images``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import numpy as np
import torch

from sepnms.config import Config
from sepnms.detection.checkpoint import load_detector
from sepnms.detection.detector import MaskRCNNC4
from sepnms.detection.preprocess import preprocess
from sepnms.errors import ConfigError, InputError
from sepnms.io.images import read_rgb

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


def autocast(device: str, amp: str):
    """bf16 / fp16 autocast on CUDA when asked, else a no-op context."""
    import contextlib

    if amp == "none" or not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def c4_from_rgb(model: MaskRCNNC4, rgb: np.ndarray, device: str = "cpu", amp: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB [H, W, 3] -> (head float32 [1, C, Hf, Wf], im_info float32 [3]) as MAttNet's files."""
    dc = model.dc
    blob, info = preprocess(rgb, dc.pixel_means, dc.test_scale, dc.test_max_size, device=device)
    with autocast(device, amp):
        c4 = model.c4(blob)
    return c4.float().cpu().numpy(), info.numpy()


class ImageFeatures:
    """image_id -> (head, im_info) computed from the image file; the detector loads on first use
    (in a DataLoader worker it runs on the CPU)."""

    def __init__(self, cfg: Config, images: ImageFiles, device: Optional[str] = None):
        check_channels(cfg)
        self.cfg, self.images = cfg, images
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
        return c4_from_rgb(model, read_rgb(self.path(image_id)), self._device, self.cfg.detector.amp)


def check_image_inputs(cfg: Config, refdb) -> None:
    """``features.source: images`` inputs, cheaply: channel widths agree, the detector checkpoint
    exists, and every image file of ``refdb`` exists (the first one is decoded)."""
    from sepnms.engine.inputs import refdb_image_files

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
        read_rgb(files[min(files)])
