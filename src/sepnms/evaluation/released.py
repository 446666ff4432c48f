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
from sepnms.evaluation.metrics import kept_outcome, outcome_means
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


def dets_outcomes(
    by_sent: Mapping[int, list[dict]],
    gt_by_sent: Mapping[int, np.ndarray],
    ctx_by_sent: Optional[Mapping[int, np.ndarray]],
    iou: float = 0.5,
) -> dict[str, np.ndarray]:
    """Per-expression outcomes, as :func:`sepnms.evaluation.metrics.expression_outcomes` gives them
    for a fused table: ``{sent_id, hit, top1, kept, ctx_recall (NaN without context)}`` [E], over
    the expressions of ``gt_by_sent`` (one split, all of them count) in its order.

    Args:
        by_sent: sent_id -> ranked entries with ``box_xyxy`` (from :func:`group_by_expression`);
            every entry is a kept proposal, the first is the top-1.
        gt_by_sent: sent_id -> [4] GT box xyxy.
        ctx_by_sent: sent_id -> [C, 4] context boxes.
    """
    n = len(gt_by_sent)
    out = {"sent_id": np.zeros(n, np.int64), "hit": np.zeros(n), "top1": np.zeros(n), "kept": np.zeros(n),
           "ctx_recall": np.full(n, np.nan)}
    for i, (sent_id, gt) in enumerate(gt_by_sent.items()):
        kept = np.asarray([d["box_xyxy"] for d in by_sent.get(int(sent_id), [])], dtype=np.float64).reshape(-1, 4)
        gt = np.asarray(gt, dtype=np.float64).reshape(4)
        ctx = (ctx_by_sent or {}).get(int(sent_id))
        ctx = np.zeros((0, 4)) if ctx is None else np.asarray(ctx, dtype=np.float64).reshape(-1, 4)
        out["sent_id"][i] = int(sent_id)
        out["kept"][i] = len(kept)
        out["hit"][i], out["top1"][i], out["ctx_recall"][i] = kept_outcome(kept, gt, ctx, iou)
    return out


def evaluate_dets(
    by_sent: Mapping[int, list[dict]],
    gt_by_sent: Mapping[int, np.ndarray],
    ctx_by_sent: Optional[Mapping[int, np.ndarray]],
    iou: float = 0.5,
) -> dict[str, Any]:
    """The metrics of :func:`dets_outcomes`, with the keys (and the arithmetic) of
    ``evaluate_at_conf``: ``{conf: NaN (no threshold), hit_rate, proposals_per_expression,
    top1_accuracy, ctx_recall, n_expressions}``."""
    return outcome_means(dets_outcomes(by_sent, gt_by_sent, ctx_by_sent, iou), float("nan"))
