"""Box overlap for the first-stage metrics: pairwise and row-paired IoU of xyxy float boxes, without
the +1 pixel (a pair whose union is empty has IoU 0; a row of NaN, no box, has IoU NaN)."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (no +1 pixel).

    Args:
        a: [N, 4]; b: [M, 4].

    Returns:
        [N, M] float64.  A pair whose union is empty (two degenerate boxes) has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(min=0) * (a[:, 3] - a[:, 1]).clip(min=0)
    area_b = (b[:, 2] - b[:, 0]).clip(min=0) * (b[:, 3] - b[:, 1]).clip(min=0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clip(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row i of ``a`` with row i of ``b``.

    Args:
        a, b: [E, 4] xyxy.  A row of NaN (no box) gives IoU NaN, which fails every threshold.

    Returns:
        [E] float64.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if a.shape != b.shape:
        raise ValueError(f"paired_iou needs equal shapes, got {a.shape} and {b.shape}")
    area_a = (a[:, 2] - a[:, 0]).clip(min=0) * (a[:, 3] - a[:, 1]).clip(min=0)
    area_b = (b[:, 2] - b[:, 0]).clip(min=0) * (b[:, 3] - b[:, 1]).clip(min=0)
    wh = (np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2])).clip(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    nan_row = np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1)
    iou[nan_row] = np.nan
    return iou
