"""The first-stage metrics as functions of conf: every conf of a grid at once (:func:`conf_sweep`,
:func:`mean_kept`), the grid (:func:`sweep_confs`) and the conf whose mean kept count is closest to a
target (:func:`choose_conf`).  Each metric is a step function of conf, evaluated with one
``searchsorted``; :func:`conf_sweep` equals :func:`~sepnms.evaluation.metrics.at_conf.evaluate_at_conf`
at every conf."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from sepnms.evaluation.metrics.at_conf import SCORE_COLUMN, context_boxes_of, fused_scores, gt_box_of
from sepnms.evaluation.metrics.iou import box_iou
from sepnms.evaluation.metrics.selection import rank_order
from sepnms.io.proposals import ProposalTable
from sepnms.rules import is_context_match, is_hit, is_top1_correct, n_kept_by_conf


def _step_sum(thresholds: np.ndarray, weights: np.ndarray, confs: np.ndarray) -> np.ndarray:
    """``sum_b weights[b] * [thresholds[b] > conf]`` for every conf.

    Args:
        thresholds: [B] (may hold +inf for "always", -inf for "never"); weights: [B]; confs: [K].

    Returns:
        [K] float64.
    """
    # conf = +inf must still keep the "always" events (threshold +inf), as select_by_conf does
    confs = np.minimum(np.asarray(confs, dtype=np.float64), np.finfo(np.float64).max)
    order = np.argsort(thresholds, kind="stable")
    t = thresholds[order]
    suffix = np.concatenate([np.cumsum(weights[order][::-1])[::-1], [0.0]])
    first_above = n_kept_by_conf(t, confs)  # first index with t > conf
    return suffix[first_above]


class _SweepIndex:
    """Per-expression quantities from which every conf's metrics follow in O(log N).

    With candidates of expression e sorted by descending score (stable), the proposal at rank j
    is kept at conf c iff j == 0 or s_e[j] > c.  So each "event" (a kept proposal, the first hit
    of the GT, the first match of a context box) has a threshold t: it happens iff t > c, with
    t = +inf at rank 0 and t = -inf when it never happens.
    """

    def __init__(self, table, gt_by_sent, ctx_by_sent, iou, score_key):
        scores = fused_scores(table, score_key)
        n_expr = len(table)
        count_t: list[np.ndarray] = []  # one threshold per candidate (top-1: +inf)
        hit_t = np.full(n_expr, -np.inf)
        top1 = np.zeros(n_expr, dtype=bool)
        ctx_t: list[np.ndarray] = []
        ctx_w: list[np.ndarray] = []
        n_ctx_expr = 0
        for i, (e, s) in enumerate(zip(table.expressions, scores)):
            gt = gt_box_of(gt_by_sent, e.sent_id, table.split)
            ctx = context_boxes_of(ctx_by_sent, e.sent_id)
            if ctx.shape[0]:
                n_ctx_expr += 1
            if s.size == 0:
                if ctx.shape[0]:
                    ctx_t.append(np.full(ctx.shape[0], -np.inf))
                    ctx_w.append(np.full(ctx.shape[0], 1.0 / ctx.shape[0]))
                continue
            order = rank_order(s)
            s_sorted = s[order]
            box = np.asarray(e.box, dtype=np.float64).reshape(-1, 4)[order]
            t = s_sorted.copy()
            t[0] = np.inf
            count_t.append(t)
            ious = box_iou(box, gt[None])[:, 0]
            hits = np.flatnonzero(is_hit(ious, iou))
            if hits.size:
                hit_t[i] = t[hits[0]]
            top1[i] = bool(is_top1_correct(ious[0], iou))
            if ctx.shape[0]:
                matched = is_context_match(box_iou(box, ctx), iou)  # [M_e, C_e]
                any_m = matched.any(axis=0)
                first = matched.argmax(axis=0)
                ctx_t.append(np.where(any_m, t[first], -np.inf))
                ctx_w.append(np.full(ctx.shape[0], 1.0 / ctx.shape[0]))
        self.n_expr = n_expr
        self.n_ctx_expr = n_ctx_expr
        self.count_t = np.concatenate(count_t) if count_t else np.zeros(0)
        self.hit_t = hit_t
        self.top1 = float(top1.mean()) if n_expr else float("nan")
        self.ctx_t = np.concatenate(ctx_t) if ctx_t else np.zeros(0)
        self.ctx_w = np.concatenate(ctx_w) if ctx_w else np.zeros(0)

    def mean_kept(self, confs: np.ndarray) -> np.ndarray:
        """[K] mean number of kept proposals per expression at each conf."""
        if self.n_expr == 0:
            return np.full(confs.shape, np.nan)
        return _step_sum(self.count_t, np.ones_like(self.count_t), confs) / self.n_expr

    def sweep(self, confs: np.ndarray) -> list[dict]:
        n = self.n_expr
        kept = self.mean_kept(confs)
        if n:
            hits = _step_sum(self.hit_t, np.ones(n), confs) / n
        else:
            hits = np.full(confs.shape, np.nan)
        if self.n_ctx_expr:
            ctx = _step_sum(self.ctx_t, self.ctx_w, confs) / self.n_ctx_expr
        else:
            ctx = np.full(confs.shape, np.nan)
        return [
            {
                "conf": float(c),
                "hit_rate": float(h),
                "proposals_per_expression": float(k),
                "top1_accuracy": self.top1,
                "ctx_recall": float(x),
                "n_expressions": n,
            }
            for c, h, k, x in zip(confs, hits, kept, ctx)
        ]


def conf_sweep(
    table: ProposalTable,
    gt_by_sent: Mapping[int, np.ndarray],
    ctx_by_sent: Mapping[int, np.ndarray] | None,
    confs,
    iou: float = 0.5,
    score_key: str = SCORE_COLUMN,
) -> list[dict]:
    """:func:`evaluate_at_conf` at every conf of ``confs`` ([K]), vectorised.

    One pass over the expressions (IoUs computed once), then each metric is a step function of
    conf evaluated for all K confs with one ``searchsorted``.  Returns K dicts in the order of
    ``confs``; equal to ``[evaluate_at_conf(..., c) for c in confs]``.
    """
    confs = np.asarray(confs, dtype=np.float64).reshape(-1)
    return _SweepIndex(table, gt_by_sent, ctx_by_sent, iou, score_key).sweep(confs)


def _count_thresholds(table: ProposalTable, score_key: str) -> np.ndarray:
    parts = []
    for s in fused_scores(table, score_key):
        if s.size:
            t = s.copy()
            t[int(rank_order(s)[0])] = np.inf
            parts.append(t)
    return np.concatenate(parts) if parts else np.zeros(0)


def mean_kept(table: ProposalTable, confs, score_key: str = SCORE_COLUMN) -> np.ndarray:
    """[K] mean number of proposals kept per expression at each conf (no GT needed)."""
    confs = np.asarray(confs, dtype=np.float64).reshape(-1)
    if len(table) == 0:
        return np.full(confs.shape, np.nan)
    t = _count_thresholds(table, score_key)
    return _step_sum(t, np.ones_like(t), confs) / len(table)


def _below(value: float) -> float:
    """A conf just below ``value`` that stays below it even when rounded to float32."""
    value = float(value)
    return value - 1e-6 * max(1.0, abs(value))


def choose_conf(
    table: ProposalTable,
    target_proposals: float,
    grid_size: int = 200,
    score_key: str = SCORE_COLUMN,
) -> float:
    """The conf whose mean number of kept proposals per expression is closest to the target.

    Rule (exact and deterministic): the mean kept count only changes at the distinct fused score
    values, so the candidates are every distinct score value v (conf = v keeps scores > v) plus
    one value just below the smallest score (keeps everything).  The candidate with the smallest
    ``|mean_kept(conf) - target|`` wins; ties go to the larger conf.  ``grid_size`` is not needed
    by this exact search and is accepted for call compatibility (see :func:`sweep_confs` for a
    grid).  A table without candidates gives 0.0.
    """
    t = _count_thresholds(table, score_key)
    all_scores = np.unique(np.concatenate(fused_scores(table, score_key) or [np.zeros(0)]))
    if all_scores.size == 0:
        return 0.0
    candidates = np.concatenate([[_below(all_scores[0])], all_scores])
    n = len(table)
    counts = _step_sum(t, np.ones_like(t), candidates) / n
    dist = np.abs(counts - float(target_proposals))
    best = np.flatnonzero(dist == dist.min())
    return float(candidates[best[-1]])  # candidates ascend: the last tie is the larger conf


def sweep_confs(table: ProposalTable, grid_size: int = 200, score_key: str = SCORE_COLUMN) -> np.ndarray:
    """A deterministic conf grid for a sweep: ``grid_size`` quantiles of the fused scores,
    ascending, plus a value below the minimum (keep everything).  Returns [<= grid_size + 1]."""
    s = np.concatenate(fused_scores(table, score_key) or [np.zeros(0)])
    if s.size == 0:
        return np.zeros(1)
    q = np.quantile(s, np.linspace(0.0, 1.0, max(2, int(grid_size))))
    return np.unique(np.concatenate([[_below(s.min())], q]))
