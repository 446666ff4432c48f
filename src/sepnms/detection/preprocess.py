"""MAttNet's test-time image preprocessing.

BGR pixels (``cv2.imread``) as float32, minus the BGR means (no std division; float32 minus the
float64 means, cast back to float32, as numpy's in-place ``im -= cfg.PIXEL_MEANS``), *then* resized
with ``cv2.resize(fx=s, fy=s, interpolation=INTER_LINEAR)`` itself so the short side is
``test_scale`` unless the long side would pass ``test_max_size`` (then the long side is that):
output size ``round(side * s)``, source coordinate ``(dst + 0.5) / s - 0.5`` in double precision,
clamped at the borders.  (``aten::upsample_bilinear2d`` computes the source coordinates in float32:
up to 0.015 grey levels away from OpenCV, enough to reorder near-tied proposals.)
``im_info = [H', W', scale]``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def image_scale(height: int, width: int, short: int, max_size: int) -> float:
    """The resize factor: ``short / min(h, w)``, or ``max_size / max(h, w)`` when
    ``round(factor * max(h, w)) > max_size``."""
    lo, hi = min(height, width), max(height, width)
    scale = float(short) / float(lo)
    if np.round(scale * hi) > max_size:
        scale = float(max_size) / float(hi)
    return scale


def resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``cv2.resize(fx=scale, fy=scale)``'s output size ``(round(h * s), round(w * s))``."""
    return int(round(height * scale)), int(round(width * scale))


def preprocess(bgr: np.ndarray, means: Sequence[float], short: int, max_size: int,
               device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """bgr uint8 [H, W, 3] (BGR, as ``cv2.imread`` decodes: ``io.images.read_bgr``) -> (blob
    [1, 3, H', W'] float32 BGR minus means on ``device``, im_info [3] float32 = (H', W', scale))."""
    import cv2

    img = np.asarray(bgr)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {tuple(img.shape)}")
    h, w = int(img.shape[0]), int(img.shape[1])
    im = img.astype(np.float32, copy=True)
    im -= np.asarray(means, dtype=np.float64).reshape(1, 1, 3)
    scale = image_scale(h, w, short, max_size)
    resized = cv2.resize(im, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    if resized.shape[:2] != resized_size(h, w, scale):  # OpenCV's own rounding of the output size
        raise ValueError(f"cv2.resize gave {resized.shape[:2]}, expected {resized_size(h, w, scale)}")
    blob = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None].to(device)
    return blob, torch.tensor([resized.shape[0], resized.shape[1], scale], dtype=torch.float32)
