"""Box geometry of MAttNet's location and relation modules (numpy, per image).

Boxes are COCO ``[x, y, w, h]`` in original-image pixels.  For box ``r`` with centre
``(rcx, rcy) = (x + w/2, y + h/2)`` and size ``(rw, rh)``, the offset of another box ``c`` is
``[(cx - rcx)/rw, (cy - rcy)/rh, (cx + cw - rcx)/rw, (cy + ch - rcy)/rh, cw*ch/(rw*rh)]``
(MAttNet's ``compute_dif_lfeats`` / ``fetch_cxt_feats``).  Neighbours are ordered by centre
distance, nearest first (ties: lower index first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def location_features(boxes_xywh: np.ndarray, width: float, height: float) -> np.ndarray:
    """[N, 4] -> [N, 5] = [x/W, y/H, (x+w-1)/W, (y+h-1)/H, wh/(WH)] (MAttNet's ``lfeats``)."""
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    x, y, w, h = b.T
    return np.stack([x / width, y / height, (x + w - 1) / width, (y + h - 1) / height,
                     w * h / (width * height)], axis=1).astype(np.float32)


def offset(ref_xywh: np.ndarray, other_xywh: np.ndarray) -> np.ndarray:
    """The 5-d offset of box ``other`` relative to box ``ref`` (see module doc)."""
    rx, ry, rw, rh = (float(v) for v in ref_xywh)
    cx, cy, cw, ch = (float(v) for v in other_xywh)
    rcx, rcy = rx + rw / 2, ry + rh / 2
    return np.array([(cx - rcx) / rw, (cy - rcy) / rh, (cx + cw - rcx) / rw, (cy + ch - rcy) / rh,
                     cw * ch / (rw * rh)], np.float32)


def neighbours(boxes_xywh: np.ndarray, categories: np.ndarray) -> list[tuple[list[int], list[int]]]:
    """For each box: (same-category neighbours, different-category neighbours), nearest first,
    the box itself excluded."""
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    cats = np.asarray(categories).reshape(-1)
    centres = b[:, :2] + b[:, 2:] / 2
    out = []
    for i in range(b.shape[0]):
        d = ((centres - centres[i]) ** 2).sum(1)
        order = [int(j) for j in np.argsort(d, kind="stable") if j != i]
        out.append(([j for j in order if cats[j] == cats[i]], [j for j in order if cats[j] != cats[i]]))
    return out


@dataclass
class ObjectGeometry:
    """The geometric inputs of a set of objects of one image (candidates or annotations).

    lfeats [N, 5]; dif_lfeats [N, 5K] (up to K same-category neighbours, zero-padded);
    cxt_idx [N, K] int64 (context objects: different category first, then same; -1 = none);
    cxt_lfeats [N, K, 5]; cxt_mask [N, K] bool.
    """

    lfeats: np.ndarray
    dif_lfeats: np.ndarray
    cxt_idx: np.ndarray
    cxt_lfeats: np.ndarray
    cxt_mask: np.ndarray


def object_geometry(boxes_xywh: np.ndarray, categories: np.ndarray, width: float, height: float,
                    topk: int = 5) -> ObjectGeometry:
    b = np.asarray(boxes_xywh, np.float32).reshape(-1, 4)
    n = b.shape[0]
    dif = np.zeros((n, 5 * topk), np.float32)
    cxt_idx = np.full((n, topk), -1, np.int64)
    cxt_l = np.zeros((n, topk, 5), np.float32)
    for i, (st, dt) in enumerate(neighbours(b, categories)):
        for j, c in enumerate(st[:topk]):
            dif[i, 5 * j:5 * j + 5] = offset(b[i], b[c])
        for j, c in enumerate((dt + st)[:topk]):
            cxt_idx[i, j] = c
            cxt_l[i, j] = offset(b[i], b[c])
    return ObjectGeometry(location_features(b, width, height), dif, cxt_idx, cxt_l, cxt_idx >= 0)


def xyxy_to_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """sepnms's exclusive ``[x1, y1, x2, y2]`` (x2 = x + w) -> ``[x, y, w, h]``."""
    b = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
