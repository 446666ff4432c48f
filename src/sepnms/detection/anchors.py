"""The legacy py-faster-rcnn anchor generator (MAttNet's Mask R-CNN uses it unchanged).

A base window ``[0, 0, base - 1, base - 1]`` (centre ``(base - 1) / 2``) is first reshaped to each
aspect ratio ``r = h / w`` at constant area (``ws = round(sqrt(area / r))``, ``hs = round(ws * r)``,
numpy's round-half-to-even), then each of those is scaled; boxes are ``centre +- (size - 1) / 2``.
Ratios are the outer loop, scales the inner one.  torchvision's ``AnchorGenerator`` centres and
rounds differently, hence this file.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def _boxes(ws: np.ndarray, hs: np.ndarray, x_ctr: float, y_ctr: float) -> np.ndarray:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def generate_anchors(base_size: int = 16, ratios: Sequence[float] = (0.5, 1, 2),
                     scales: Sequence[float] = (8, 16, 32)) -> np.ndarray:
    """[len(ratios) * len(scales), 4] float xyxy anchors of one feature-map cell at the origin."""
    size = float(base_size)
    ctr = 0.5 * (size - 1)
    area = size * size
    ratios = np.asarray(ratios, dtype=np.float64)
    ws = np.round(np.sqrt(area / ratios))
    hs = np.round(ws * ratios)
    scales = np.asarray(scales, dtype=np.float64)
    out = [_boxes(w * scales, h * scales, ctr, ctr) for w, h in zip(ws, hs)]
    return np.vstack(out)


def shifted_anchors(cell_anchors: Tensor, height: int, width: int, stride: int) -> Tensor:
    """cell_anchors [A, 4] -> [height * width * A, 4], ordered (h, w, a) like the RPN outputs.

    The anchors of cell (y, x) are the cell anchors shifted by ``(x * stride, y * stride)``.
    """
    ys = torch.arange(height, device=cell_anchors.device, dtype=cell_anchors.dtype) * stride
    xs = torch.arange(width, device=cell_anchors.device, dtype=cell_anchors.dtype) * stride
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(-1, 1, 4)  # [H*W, 1, 4]
    return (shifts + cell_anchors.reshape(1, -1, 4)).reshape(-1, 4)
