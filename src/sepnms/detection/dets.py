"""MAttNet's per-image detections from class-specific detector output (the "det" setting).

MAttNet keeps, per class, the boxes that survive NMS at 0.3 with a score >= 0.65; an image where
nothing survives gets its threshold lowered by 0.1 until something does (or the threshold reaches 0).
"""
from __future__ import annotations

from dataclasses import dataclass

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
                       lower_step: float = 0.1) -> list[Detection]:
    """MAttNet's detection rule on one image.

    boxes: [N, C, 4] class-specific xyxy boxes (column 0 = background); scores: [N, C] class
    probabilities.  Per foreground class: keep rows with score >= threshold, NMS at ``nms_iou``
    (legacy ``+1`` areas, as MAttNet's NMS).  If no class keeps anything, lower the threshold by ``lower_step`` and retry.
    Returns detections sorted by score, highest first.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2]:
        raise ValueError(f"boxes [N, C, 4] and scores [N, C] expected, got {boxes.shape} and {scores.shape}")
    thresh = float(score_thresh)
    while True:
        out: list[Detection] = []
        for c in range(1, boxes.shape[1]):
            rows = np.nonzero(scores[:, c] >= thresh)[0]
            if rows.size == 0:
                continue
            keep = nms_plus_one(torch.from_numpy(boxes[rows, c]), torch.from_numpy(scores[rows, c]), nms_iou).numpy()
            out += [Detection(tuple(float(v) for v in boxes[r, c]), float(scores[r, c]), c) for r in rows[keep]]
        if out or thresh <= 0 or boxes.shape[0] == 0:
            return sorted(out, key=lambda d: -d.score)
        thresh = max(0.0, thresh - lower_step)
