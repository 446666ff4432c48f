"""Ref-NMS detector dumps: ``rpn_boxes.pkl`` and ``rpn_box_scores.pkl``.

``rpn_boxes.pkl``: ``{image_id: float array reshapeable to [N, 81, 4]}`` (class-specific xyxy boxes
in original-image pixels, column 0 = background).  ``rpn_box_scores.pkl``: ``{image_id: [N, 81]}``
per-class softmax probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sepnms.errors import InputError
from sepnms.io import safe_pickle

NUM_CLASSES = 81  # 80 COCO classes + background


@dataclass
class RpnDetections:
    """Per-image detector output.  ``boxes[iid]``: [N, 81, 4]; ``scores[iid]``: [N, 81]."""

    boxes: dict[int, np.ndarray]
    scores: dict[int, np.ndarray]
    boxes_path: Path | None = None
    scores_path: Path | None = None

    def get(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        iid = int(image_id)
        if iid not in self.boxes:
            raise InputError(self.boxes_path, f"image_id {iid} is absent from the rpn boxes pickle")
        if iid not in self.scores:
            raise InputError(self.scores_path, f"image_id {iid} is absent from the rpn scores pickle")
        return self.boxes[iid], self.scores[iid]

    def check_covers(self, image_ids) -> None:
        """Raise InputError naming the first image_id that has no detections."""
        for iid in image_ids:
            self.get(iid)


def _array(path: Path, iid, arr) -> np.ndarray:
    if isinstance(iid, bool) or not isinstance(iid, (int, np.integer)):
        raise InputError(path, f"key {iid!r} is not an integer image_id")
    try:
        return np.asarray(arr, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(path, f"image_id {iid}: value is not a numeric array") from None


def _validate(boxes_path: Path, scores_path: Path, boxes: dict, scores: dict) -> RpnDetections:
    if not isinstance(boxes, dict):
        raise InputError(boxes_path, "expected a dict {image_id: array}")
    if not isinstance(scores, dict):
        raise InputError(scores_path, "expected a dict {image_id: array}")
    out_b, out_s = {}, {}
    for iid, arr in boxes.items():
        a = _array(boxes_path, iid, arr)
        if a.size % (NUM_CLASSES * 4) != 0:
            raise InputError(boxes_path, f"image_id {iid}: array of shape {a.shape} is not reshapeable to [N, 81, 4]")
        out_b[int(iid)] = a.reshape(-1, NUM_CLASSES, 4)
    for iid, arr in scores.items():
        a = _array(scores_path, iid, arr)
        if a.ndim != 2 or a.shape[1] != NUM_CLASSES:
            raise InputError(scores_path, f"image_id {iid}: scores of shape {a.shape}, expected [N, 81]")
        out_s[int(iid)] = a
        if int(iid) in out_b and out_b[int(iid)].shape[0] != a.shape[0]:
            raise InputError(
                scores_path,
                f"image_id {iid}: {a.shape[0]} score rows but {out_b[int(iid)].shape[0]} boxes in {boxes_path}",
            )
    return RpnDetections(out_b, out_s, boxes_path, scores_path)


def load_rpn(boxes_path: str | Path, scores_path: str | Path) -> RpnDetections:
    boxes_path, scores_path = Path(boxes_path), Path(scores_path)
    return _validate(boxes_path, scores_path, safe_pickle.load(boxes_path), safe_pickle.load(scores_path))


def write_rpn(boxes_path: str | Path, scores_path: str | Path, boxes: dict, scores: dict) -> None:
    safe_pickle.dump(boxes_path, {int(k): np.asarray(v, np.float32) for k, v in boxes.items()})
    safe_pickle.dump(scores_path, {int(k): np.asarray(v, np.float32) for k, v in scores.items()})
