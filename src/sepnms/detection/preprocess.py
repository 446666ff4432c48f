"""MAttNet's test-time image preprocessing.

BGR pixels as float32, minus the BGR means (no std division), *then* resized with bilinear
interpolation so the short side is ``test_scale`` unless the long side would pass ``test_max_size``
(then the long side is that).  The resize follows ``cv2.resize(fx=s, fy=s, INTER_LINEAR)``: output
size ``round(side * s)``, source coordinate ``(dst + 0.5) / s - 0.5`` clamped at the borders (no
antialiasing), computed here by ``aten::upsample_bilinear2d`` given both the size and the scale.
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


def resize_bilinear(x: Tensor, scale: float, size: tuple[int, int]) -> Tensor:
    """x [B, C, H, W] float -> [B, C, size] sampled as ``cv2.resize(fx=fy=scale, INTER_LINEAR)``."""
    return torch.ops.aten.upsample_bilinear2d(x, list(size), False, float(scale), float(scale))


def preprocess(rgb: np.ndarray | Tensor, means: Sequence[float], short: int, max_size: int,
               device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """rgb uint8 [H, W, 3] (RGB, as PIL decodes) -> (blob [1, 3, H', W'] float32 BGR minus means,
    im_info [3] float32 = (H', W', scale))."""
    img = torch.as_tensor(np.require(rgb, np.uint8, ["C", "W"]) if isinstance(rgb, np.ndarray) else rgb, device=device)
    if img.dim() != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {tuple(img.shape)}")
    h, w = int(img.shape[0]), int(img.shape[1])
    bgr = img.flip(-1).to(torch.float32) - torch.tensor(means, dtype=torch.float32, device=img.device)
    scale = image_scale(h, w, short, max_size)
    size = resized_size(h, w, scale)
    blob = resize_bilinear(bgr.permute(2, 0, 1).unsqueeze(0).contiguous(), scale, size)
    return blob, torch.tensor([size[0], size[1], scale], dtype=torch.float32)
