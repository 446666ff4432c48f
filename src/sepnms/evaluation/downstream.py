"""Downstream (second-stage) accuracy in the MAttNet convention.

A second stage (MAttNet, CM-A-E, ...) picks one box per expression.  Accuracy = the fraction of
the split's expressions whose predicted box has IoU >= 0.5 with the GT box, IoU computed exactly
as MAttNet's ``computeIoU`` on ``[x, y, w, h]`` boxes with inclusive pixels::

    inter_x1 = max(x1a, x1b);              inter_x2 = min(xa + wa - 1, xb + wb - 1)   (same for y)
    inter    = (inter_x2 - inter_x1 + 1) * (inter_y2 - inter_y1 + 1)
               if inter_x1 < inter_x2 and inter_y1 < inter_y2 else 0
    union    = wa * ha + wb * hb - inter

(MAttNet's test is strict, so an overlap one pixel wide counts as 0.)  The denominator is the
number of expressions in the split: missing predictions count as wrong.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from sepnms.errors import InputError
from sepnms.rules import is_top1_correct

BOX_KEYS = ("box", "pred_box")


def compute_iou_inclusive(box1: Sequence[float], box2: Sequence[float]) -> float:
    """MAttNet's ``computeIoU``.  Boxes are ``[x, y, w, h]`` with x2 = x + w - 1."""
    inter_x1 = max(box1[0], box2[0])
    inter_y1 = max(box1[1], box2[1])
    inter_x2 = min(box1[0] + box1[2] - 1, box2[0] + box2[2] - 1)
    inter_y2 = min(box1[1] + box1[3] - 1, box2[1] + box2[3] - 1)
    if inter_x1 < inter_x2 and inter_y1 < inter_y2:
        inter = (inter_x2 - inter_x1 + 1) * (inter_y2 - inter_y1 + 1)
    else:
        inter = 0.0
    union = box1[2] * box1[3] + box2[2] * box2[3] - inter
    return float(inter) / union if union > 0 else 0.0


def _box4(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return box if all(math.isfinite(v) for v in box) else None


def load_predictions(path: str | Path) -> dict[int, list[float]]:
    """Read a second stage's predictions.

    Accepts a JSON list of ``{sent_id, box: [x, y, w, h]}`` (``pred_box`` also accepted), or an
    object with such a list under ``predictions`` (MAttNet's ``eval_dets`` output).

    Returns:
        sent_id -> box_xywh (4 floats).

    Raises:
        InputError naming the file: missing, not JSON, wrong layout, bad box, duplicate sent_id.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "predictions file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON file: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("predictions"), list):
        data = data["predictions"]
    if not isinstance(data, list):
        raise InputError(path, "expected a JSON list of {sent_id, box} (or {'predictions': [...]})")
    preds: dict[int, list[float]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "sent_id" not in entry:
            raise InputError(path, f"entry {i} is not an object with a sent_id")
        key = next((k for k in BOX_KEYS if k in entry), None)
        if key is None:
            raise InputError(path, f"entry {i} (sent_id {entry['sent_id']}) has no 'box' or 'pred_box'")
        box = _box4(entry[key])
        if box is None:
            raise InputError(path, f"entry {i}: {key} must be 4 finite numbers [x, y, w, h], got {entry[key]!r}")
        try:
            sent_id = int(entry["sent_id"])
        except (TypeError, ValueError):
            raise InputError(path, f"entry {i}: sent_id {entry['sent_id']!r} is not an integer") from None
        if sent_id in preds:
            raise InputError(path, f"sent_id {sent_id} is predicted twice")
        preds[sent_id] = box
    return preds


def check_prediction_ids(preds: Mapping[int, Sequence[float]], gt_by_sent: Mapping[int, Any],
                         path: str | Path, split: str) -> None:
    """InputError when predictions name sent_ids that are not expressions of ``split`` (another
    split's or another dataset's predictions would otherwise score as silently wrong misses)."""
    unknown = sorted(set(preds) - set(gt_by_sent))
    if unknown:
        raise InputError(path, f"{len(unknown)} of {len(preds)} predictions name sent_ids that are not expressions "
                               f"of split {split!r} (e.g. {unknown[:3]}): predictions of another split or dataset?")


def downstream_accuracy(
    preds: Mapping[int, Sequence[float]],
    gt_by_sent: Mapping[int, Sequence[float]],
    n_expressions: int,
    iou: float = 0.5,
) -> float:
    """MAttNet-convention accuracy.

    Args:
        preds: sent_id -> predicted box_xywh.
        gt_by_sent: sent_id -> GT box_xywh (COCO ``bbox``) for the split's expressions.
        n_expressions: number of expressions in the split (the denominator).
        iou: correct when IoU >= iou (inclusive-pixel arithmetic).

    Returns:
        correct / n_expressions.  Predictions for sent_ids without GT are ignored.
    """
    if n_expressions <= 0:
        raise ValueError(f"n_expressions must be positive, got {n_expressions}")
    if len(gt_by_sent) > n_expressions:
        raise ValueError(f"{len(gt_by_sent)} GT boxes but only {n_expressions} expressions")
    correct = 0
    for sent_id, gt in gt_by_sent.items():
        pred = preds.get(sent_id)
        if pred is not None and is_top1_correct(compute_iou_inclusive(list(pred), list(gt)), iou):
            correct += 1
    return correct / n_expressions
