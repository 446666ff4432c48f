"""First-stage metrics (METHOD.md, "Proposal selection and metrics").

- Selection by confidence: sort by fused score, always keep the top-1, then keep while
  score > conf (strict).
- Referent hit rate: fraction of expressions with at least one kept proposal of IoU > 0.5
  (strict) with the GT box, reported with the mean number of kept proposals per expression.
- Context recall: over expressions with at least one context box, the mean fraction of their
  context boxes matched (IoU > 0.5) by a kept proposal.
- Top-1 accuracy: fraction of expressions whose highest-scoring proposal has IoU >= 0.5 with GT.

Boxes are xyxy float, IoU without the +1 pixel.  An expression with no candidate is a miss for
the hit rate and top-1, keeps 0 proposals, and matches none of its context boxes.

Scores are compared in float64 everywhere (the float32 table columns are widened first), so
:func:`evaluate_at_conf` and the vectorised :func:`conf_sweep` agree exactly.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sepnms.io.proposals import ProposalTable
from sepnms.rules import is_context_match, is_hit, is_top1_correct, kept_by_conf, n_kept_by_conf

SCORE_COLUMN = "score"


# ---------------------------------------------------------------------------------------
# boxes


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


# ---------------------------------------------------------------------------------------
# selection and per-call metrics


def _order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep the lower index first (stable)."""
    return np.argsort(-scores, kind="stable")


def select_by_conf(scores: np.ndarray, conf: float) -> np.ndarray:
    """Selection by confidence.

    Args:
        scores: [M] fused scores, in any order.
        conf: threshold; kept scores are strictly greater.

    Returns:
        [K] int64 indices into ``scores`` by descending score: the top-1 always (when M > 0),
        then every other candidate with score > conf.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = _order(s)
    n = max(1, int(np.count_nonzero(kept_by_conf(s, float(conf)))))
    return order[:n].astype(np.int64)


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


def _fused_scores(table: ProposalTable, score_key: str) -> list[np.ndarray]:
    out = []
    for e in table.expressions:
        if score_key not in e.scores:
            raise ValueError(
                f"{table.split} table (stage {table.stage!r}) has no {score_key!r} column for "
                f"sent_id {e.sent_id}; fuse it first"
            )
        out.append(np.asarray(e.scores[score_key], dtype=np.float64).reshape(-1))
    return out


def _gt_of(gt_by_sent: Mapping[int, np.ndarray], sent_id: int, split: str) -> np.ndarray:
    try:
        return np.asarray(gt_by_sent[sent_id], dtype=np.float64).reshape(4)
    except KeyError:
        raise ValueError(f"no GT box for sent_id {sent_id} of split {split}") from None


def _ctx_of(ctx_by_sent: Mapping[int, np.ndarray] | None, sent_id: int) -> np.ndarray:
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
    scores = _fused_scores(table, score_key)
    n = len(table)
    out = {"sent_id": np.zeros(n, np.int64), "hit": np.zeros(n), "top1": np.zeros(n), "kept": np.zeros(n),
           "ctx_recall": np.full(n, np.nan)}
    for i, (e, s) in enumerate(zip(table.expressions, scores)):
        idx = select_by_conf(s, conf)
        box = np.asarray(e.box, dtype=np.float64).reshape(-1, 4)
        kept = box[idx]
        gt = _gt_of(gt_by_sent, e.sent_id, table.split)
        ctx = _ctx_of(ctx_by_sent, e.sent_id)
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
        scores = _fused_scores(table, score_key)
        n_expr = len(table)
        count_t: list[np.ndarray] = []  # one threshold per candidate (top-1: +inf)
        hit_t = np.full(n_expr, -np.inf)
        top1 = np.zeros(n_expr, dtype=bool)
        ctx_t: list[np.ndarray] = []
        ctx_w: list[np.ndarray] = []
        n_ctx_expr = 0
        for i, (e, s) in enumerate(zip(table.expressions, scores)):
            gt = _gt_of(gt_by_sent, e.sent_id, table.split)
            ctx = _ctx_of(ctx_by_sent, e.sent_id)
            if ctx.shape[0]:
                n_ctx_expr += 1
            if s.size == 0:
                if ctx.shape[0]:
                    ctx_t.append(np.full(ctx.shape[0], -np.inf))
                    ctx_w.append(np.full(ctx.shape[0], 1.0 / ctx.shape[0]))
                continue
            order = _order(s)
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
    for s in _fused_scores(table, score_key):
        if s.size:
            t = s.copy()
            t[int(_order(s)[0])] = np.inf
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
    all_scores = np.unique(np.concatenate(_fused_scores(table, score_key) or [np.zeros(0)]))
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
    s = np.concatenate(_fused_scores(table, score_key) or [np.zeros(0)])
    if s.size == 0:
        return np.zeros(1)
    q = np.quantile(s, np.linspace(0.0, 1.0, max(2, int(grid_size))))
    return np.unique(np.concatenate([[_below(s.min())], q]))
