"""First-stage metrics of a MAttNet-style detection file (``sepnms evaluate --dets``).

Any such file: the authors' released ones, Ref-NMS's exporter output (no score field), or this
project's ``export``.  The file's entries are already the selection, so nothing is thresholded:
every entry of an expression is a kept proposal, and its top-1 is the highest ``fin_score`` /
``score`` (ties: the first written) or, without scores, the first entry written.  Expressions of
the split absent from the file keep no proposal (a miss), as in ``evaluate``.  The metrics are
those of :func:`sepnms.evaluation.metrics.evaluate_at_conf`, computed by the same functions, so a
conf-selected export of a fused table scores exactly what ``evaluate`` reported for that table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from sepnms.errors import InputError
from sepnms.evaluation.metrics import ctx_recall, hit_rate, top1_accuracy
from sepnms.io.mattnet_dets import UNSCORED, det_score, detect_convention


def group_by_expression(entries: list[dict], path: Path, split_of: Mapping[int, str]) -> dict[int, list[dict]]:
    """``{sent_id: its entries, ranked}`` (by descending score, stable; as written when unscored).

    ``split_of``: sent_id -> split of the dataset (the refdb).  An entry whose ``sent_id`` is not
    an expression of the dataset, or whose ``split`` disagrees with it, is an InputError naming
    the file: the file belongs to another dataset or split-by.
    """
    from sepnms.io.refer import split_matches

    scored = detect_convention(entries) != UNSCORED
    out: dict[int, list[dict]] = {}
    for i, d in enumerate(entries):
        try:
            sent_id = int(d["sent_id"])
        except (KeyError, TypeError, ValueError):
            raise InputError(path, f"entry {i} has no integer 'sent_id' (a per-expression detection file "
                                   f"is needed; MAttNet's per-image detections cannot be scored)") from None
        if sent_id not in split_of:
            raise InputError(path, f"entry {i}: sent_id {sent_id} is no expression of this dataset "
                                   f"(a file of another dataset or split-by?)")
        if "split" in d and not split_matches(split_of[sent_id], str(d["split"])):
            raise InputError(path, f"entry {i}: sent_id {sent_id} is in split {split_of[sent_id]!r} here, "
                                   f"the file says {d['split']!r}")
        if scored and not np.isfinite(det_score(d)):
            raise InputError(path, f"entry {i} has a non-finite score")
        out.setdefault(sent_id, []).append(d)
    if scored:
        for sent_id, group in out.items():
            order = np.argsort(-np.array([det_score(d) for d in group], dtype=np.float64), kind="stable")
            out[sent_id] = [group[j] for j in order]
    return out


def evaluate_dets(
    by_sent: Mapping[int, list[dict]],
    gt_by_sent: Mapping[int, np.ndarray],
    ctx_by_sent: Optional[Mapping[int, np.ndarray]],
    iou: float = 0.5,
) -> dict[str, Any]:
    """Metrics of the expressions of ``gt_by_sent`` (one split) given their ranked entries.

    Args:
        by_sent: sent_id -> ranked entries with ``box_xyxy`` (from :func:`group_by_expression`).
        gt_by_sent: sent_id -> [4] GT box xyxy: the split's expressions (all of them count).
        ctx_by_sent: sent_id -> [C, 4] context boxes.

    Returns:
        ``{conf: NaN (no threshold), hit_rate, proposals_per_expression, top1_accuracy,
        ctx_recall, n_expressions}``, the keys of ``evaluate_at_conf``.
    """
    kept, gts, ctxs, tops = [], [], [], []
    for sent_id, gt in gt_by_sent.items():
        boxes = np.asarray([d["box_xyxy"] for d in by_sent.get(int(sent_id), [])], dtype=np.float64).reshape(-1, 4)
        kept.append(boxes)
        gts.append(np.asarray(gt, dtype=np.float64).reshape(4))
        ctx = (ctx_by_sent or {}).get(int(sent_id))
        ctxs.append(np.zeros((0, 4)) if ctx is None else np.asarray(ctx, dtype=np.float64).reshape(-1, 4))
        tops.append(boxes[0] if len(boxes) else np.full(4, np.nan))
    gt_arr = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    return {
        "conf": float("nan"),
        "hit_rate": hit_rate(kept, gt_arr, iou),
        "proposals_per_expression": float(np.mean([len(k) for k in kept])) if kept else float("nan"),
        "top1_accuracy": top1_accuracy(np.asarray(tops, dtype=np.float64).reshape(-1, 4), gt_arr, iou),
        "ctx_recall": ctx_recall(kept, ctxs, iou),
        "n_expressions": len(gts),
    }
