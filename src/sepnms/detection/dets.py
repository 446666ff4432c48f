"""MAttNet's per-image detections from class-specific detector output (the "det" setting).

MAttNet (``tools/run_detect.py``) keeps, per class, the boxes that survive NMS at 0.3 with a score
>= 0.65; an image where nothing survives gets its threshold lowered by 0.1 until something does
(or the threshold reaches 0).  The detections come class by class (``cls_to_dets.items()``), each
class's boxes in NMS order (decreasing score); ``class_order`` says the order of the classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from sepnms.detection.boxes import nms_plus_one


@dataclass(frozen=True)
class Detection:
    """One detection: xyxy box in original-image pixels, its class probability and class index (1..80)."""

    box: tuple[float, float, float, float]
    score: float
    class_index: int


def mattnet_detections(boxes: np.ndarray, scores: np.ndarray, nms_iou: float = 0.3, score_thresh: float = 0.65,
                       lower_step: float = 0.1, class_order: Optional[Sequence[int]] = None) -> list[Detection]:
    """MAttNet's detection rule on one image.

    boxes: [N, C, 4] class-specific xyxy boxes (column 0 = background); scores: [N, C] class
    probabilities.  Per foreground class: keep rows with score >= threshold, NMS at ``nms_iou``
    (legacy ``+1`` areas, as MAttNet's NMS; thresholding first keeps the same boxes as MAttNet's
    NMS-then-threshold, since a box is only suppressed by higher-scoring ones).  If no class keeps
    anything, lower the threshold by ``lower_step`` and retry.
    Returns the detections class by class in ``class_order`` (default 1, 2, ..., C - 1; MAttNet's
    released files: ``py2_order``), each class's in NMS order (decreasing score).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2]:
        raise ValueError(f"boxes [N, C, 4] and scores [N, C] expected, got {boxes.shape} and {scores.shape}")
    classes = list(range(1, boxes.shape[1])) if class_order is None else [int(c) for c in class_order]
    if sorted(classes) != list(range(1, boxes.shape[1])):
        raise ValueError(f"class_order must list the classes 1..{boxes.shape[1] - 1} once each")
    thresh = float(score_thresh)
    while True:
        out: list[Detection] = []
        for c in classes:
            rows = np.nonzero(scores[:, c] >= thresh)[0]
            if rows.size == 0:
                continue
            keep = nms_plus_one(torch.from_numpy(boxes[rows, c]), torch.from_numpy(scores[rows, c]), nms_iou).numpy()
            out += [Detection(tuple(float(v) for v in boxes[r, c]), float(scores[r, c]), c) for r in rows[keep]]
        if out or thresh <= 0 or boxes.shape[0] == 0:
            return out
        thresh = max(0.0, thresh - lower_step)
