"""The first-stage metrics at one conf: referent hit rate, context recall and top-1 accuracy, over
lists of kept boxes (:func:`hit_rate`, :func:`ctx_recall`, :func:`top1_accuracy`) and over a fused
proposal table (per expression: :func:`expression_outcomes`; their means: :func:`evaluate_at_conf`).
The table readers (:func:`fused_scores`, :func:`gt_box_of`, :func:`context_boxes_of`) are shared with
the conf sweep (:mod:`sepnms.evaluation.metrics.sweep`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sepnms.evaluation.metrics.iou import box_iou, paired_iou
from sepnms.evaluation.metrics.selection import select_by_conf
from sepnms.io.proposals import ProposalTable
from sepnms.rules import is_context_match, is_hit, is_top1_correct

SCORE_COLUMN = "score"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def hit_rate(kept_boxes: Sequence[np.ndarray], gt_boxes: np.ndarray, iou: float = 0.5) -> float:
    """Referent hit rate.

    Args:
        kept_boxes: E arrays [K_e, 4] of kept proposals (K_e may be 0).
        gt_boxes: [E, 4] GT referent boxes.
        iou: a proposal hits when IoU > iou (strict).

    Returns:
        fraction of the E expressions with a hit (NaN when E = 0).
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if len(kept_boxes) != gt.shape[0]:
        raise ValueError(f"{len(kept_boxes)} kept-box lists but {gt.shape[0]} GT boxes")
    hits = [bool(is_hit(box_iou(k, g[None]), iou).any()) for k, g in zip(kept_boxes, gt)]
    return _mean(hits)


def ctx_recall(
    kept_boxes: Sequence[np.ndarray], ctx_boxes: Sequence[np.ndarray], iou: float = 0.5
) -> float:
    """Context recall.

    Args:
        kept_boxes: E arrays [K_e, 4].
        ctx_boxes: E arrays [C_e, 4] of context ("critical object") boxes; C_e may be 0.
        iou: a context box is matched when a kept proposal has IoU > iou (strict).

    Returns:
        mean, over expressions with C_e >= 1, of the fraction of their context boxes matched;
        NaN when no expression has a context box.
    """
    if len(kept_boxes) != len(ctx_boxes):
        raise ValueError(f"{len(kept_boxes)} kept-box lists but {len(ctx_boxes)} context lists")
    fractions = []
    for k, c in zip(kept_boxes, ctx_boxes):
        c = np.asarray(c, dtype=np.float64).reshape(-1, 4)
        if c.shape[0] == 0:
            continue
        matched = is_context_match(box_iou(k, c), iou).any(axis=0)
        fractions.append(float(matched.mean()))
    return _mean(fractions)


def top1_accuracy(top_boxes: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.5) -> float:
    """Top-1 accuracy of the first stage.

    Args:
        top_boxes: [E, 4] the highest-scoring proposal of each expression; a row of NaN marks an
            expression without candidates (a miss).
        gt_boxes: [E, 4].
        iou: correct when IoU >= iou.

    Returns:
        fraction correct (NaN when E = 0).
    """
    ious = paired_iou(top_boxes, gt_boxes)
    if ious.size == 0:
        return float("nan")
    return float(np.mean(is_top1_correct(ious, iou)))


# ---------------------------------------------------------------------------------------
# table-level evaluation


def fused_scores(table: ProposalTable, score_key: str) -> list[np.ndarray]:
    """Per expression of ``table``, its ``score_key`` column as float64 [M_e] (ValueError when unfused)."""
    out = []
    for e in table.expressions:
        if score_key not in e.scores:
            raise ValueError(
                f"{table.split} table (stage {table.stage!r}) has no {score_key!r} column for "
                f"sent_id {e.sent_id}; fuse it first"
            )
        out.append(np.asarray(e.scores[score_key], dtype=np.float64).reshape(-1))
    return out


def gt_box_of(gt_by_sent: Mapping[int, np.ndarray], sent_id: int, split: str) -> np.ndarray:
    """The GT referent box [4] xyxy float64 of ``sent_id`` (ValueError when there is none)."""
    try:
        return np.asarray(gt_by_sent[sent_id], dtype=np.float64).reshape(4)
    except KeyError:
        raise ValueError(f"no GT box for sent_id {sent_id} of split {split}") from None


def context_boxes_of(ctx_by_sent: Mapping[int, np.ndarray] | None, sent_id: int) -> np.ndarray:
    """The context boxes [C, 4] xyxy float64 of ``sent_id``; [0, 4] when it has none."""
    if not ctx_by_sent or sent_id not in ctx_by_sent:
        return np.zeros((0, 4))
    return np.asarray(ctx_by_sent[sent_id], dtype=np.float64).reshape(-1, 4)


def expression_outcomes(
    table: ProposalTable,
    gt_by_sent: Mapping[int, np.ndarray],
    ctx_by_sent: Mapping[int, np.ndarray] | None,
    conf: float,
    iou: float = 0.5,
    score_key: str = SCORE_COLUMN,
) -> dict[str, np.ndarray]:
    """Per-expression outcomes of a fused table at one conf (what every rate averages).

    Returns ``{sent_id [E] int64, hit [E], top1 [E] (0/1 float64), kept [E] (number kept),
    ctx_recall [E] (fraction of the expression's context boxes matched; NaN when it has none)}``,
    in table order.  :func:`evaluate_at_conf` is their means; the bootstrap intervals
    (:mod:`sepnms.evaluation.intervals`) resample them.
    """
    scores = fused_scores(table, score_key)
    n = len(table)
    out = {"sent_id": np.zeros(n, np.int64), "hit": np.zeros(n), "top1": np.zeros(n), "kept": np.zeros(n),
           "ctx_recall": np.full(n, np.nan)}
    for i, (e, s) in enumerate(zip(table.expressions, scores)):
        idx = select_by_conf(s, conf)
        box = np.asarray(e.box, dtype=np.float64).reshape(-1, 4)
        kept = box[idx]
        gt = gt_box_of(gt_by_sent, e.sent_id, table.split)
        ctx = context_boxes_of(ctx_by_sent, e.sent_id)
        out["sent_id"][i] = int(e.sent_id)
        out["kept"][i] = len(idx)
        out["hit"][i], out["top1"][i], out["ctx_recall"][i] = kept_outcome(kept, gt, ctx, iou)
    return out


def kept_outcome(kept: np.ndarray, gt: np.ndarray, ctx: np.ndarray, iou: float = 0.5) -> tuple[float, float, float]:
    """One expression's outcome from its kept proposals ``kept`` [K, 4] xyxy, ranked (the first is
    the top-1), its GT box ``gt`` [4] and context boxes ``ctx`` [C, 4]: ``(hit, top1, ctx_recall)``,
    hit and top1 as 0/1, ctx_recall NaN when C = 0."""
    hit = float(is_hit(box_iou(kept, gt[None]), iou).any())
    top = kept[0] if len(kept) else np.full(4, np.nan)
    top1 = float(is_top1_correct(paired_iou(top[None], gt[None]), iou)[0])
    ctx_recall = float(is_context_match(box_iou(kept, ctx), iou).any(axis=0).mean()) if ctx.shape[0] else float("nan")
    return hit, top1, ctx_recall


def _nanmean(values: np.ndarray) -> float:
    v = values[~np.isnan(values)]
    return float(v.mean()) if v.size else float("nan")


def evaluate_at_conf(
    table: ProposalTable,
    gt_by_sent: Mapping[int, np.ndarray],
    ctx_by_sent: Mapping[int, np.ndarray] | None,
    conf: float,
    iou: float = 0.5,
    score_key: str = SCORE_COLUMN,
) -> dict:
    """All first-stage metrics of a fused table at one conf.

    Args:
        table: fused table (``scores['score']``), E expressions.
        gt_by_sent: sent_id -> [4] GT referent box, xyxy.
        ctx_by_sent: sent_id -> [C, 4] context boxes, xyxy (absent sent_id = no context).
        conf: selection threshold (see :func:`select_by_conf`).
        iou: IoU threshold of hit rate / ctx recall (strict >) and top-1 (>=).

    Returns:
        ``{conf, hit_rate, proposals_per_expression, top1_accuracy, ctx_recall, n_expressions}``:
        the means of :func:`expression_outcomes` (ctx recall over expressions with context).
    """
    return outcome_means(expression_outcomes(table, gt_by_sent, ctx_by_sent, conf, iou, score_key), conf)


def outcome_means(o: Mapping[str, np.ndarray], conf: float) -> dict:
    """The rates of per-expression outcomes (``expression_outcomes``, or a detection file's):
    ``{conf, hit_rate, proposals_per_expression, top1_accuracy, ctx_recall, n_expressions}``."""
    return {
        "conf": float(conf),
        "hit_rate": _mean(o["hit"].tolist()),
        "proposals_per_expression": _mean(o["kept"].tolist()),
        "top1_accuracy": _mean(o["top1"].tolist()),
        "ctx_recall": _nanmean(o["ctx_recall"]),
        "n_expressions": len(o["sent_id"]),
    }
