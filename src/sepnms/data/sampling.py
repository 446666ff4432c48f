"""Training labels and RoI sampling (METHOD.md "Training").

Labels per candidate (IoU without +1): IoU >= ``pos_iou`` with the referent -> referent positive
(2); else IoU >= ``pos_iou`` with any context box -> context positive (1); else negative (0).

Sampling: ``n`` RoIs per expression, at most ``max_ref`` referent positives and at most
``max_pos`` positives in total, the rest negatives; when negatives run short, top up with the
remaining context positives, then referent positives; if the pool is still smaller than ``n``,
repeat pool members (sampling with replacement).
"""
from __future__ import annotations

import numpy as np

from sepnms.data.ctxdb import box_iou_np
from sepnms.rules import is_positive_label

NEGATIVE, CONTEXT, REFERENT = 0, 1, 2


def assign_labels(cand_boxes: np.ndarray, ref_box: np.ndarray, ctx_boxes: np.ndarray, pos_iou: float = 0.5) -> np.ndarray:
    """Labels [M] int8 for candidate boxes [M, 4], referent box [4], context boxes [C, 4]."""
    m = cand_boxes.shape[0]
    labels = np.zeros(m, dtype=np.int8)
    if m == 0:
        return labels
    if len(ctx_boxes):
        ctx_iou = box_iou_np(cand_boxes, ctx_boxes).max(axis=1)
        labels[is_positive_label(ctx_iou, pos_iou)] = CONTEXT
    ref_iou = box_iou_np(cand_boxes, np.asarray(ref_box).reshape(1, 4))[:, 0]
    labels[is_positive_label(ref_iou, pos_iou)] = REFERENT
    return labels


def sample_rois(labels: np.ndarray, rng: np.random.Generator, n: int = 32, max_ref: int = 4, max_pos: int = 21) -> np.ndarray:
    """Indices [n] into ``labels`` following the quotas above."""
    ref = rng.permutation(np.flatnonzero(labels == REFERENT))
    ctx = rng.permutation(np.flatnonzero(labels == CONTEXT))
    neg = rng.permutation(np.flatnonzero(labels == NEGATIVE))
    n_ref = min(len(ref), max_ref)
    n_ctx = min(len(ctx), max_pos - n_ref)
    n_neg = min(len(neg), n - n_ref - n_ctx)
    chosen = [ref[:n_ref], ctx[:n_ctx], neg[:n_neg]]
    short = n - n_ref - n_ctx - n_neg
    if short > 0:  # negatives ran short: context positives first, then referent positives
        extra_ctx = ctx[n_ctx:n_ctx + short]
        short -= len(extra_ctx)
        extra_ref = ref[n_ref:n_ref + short]
        short -= len(extra_ref)
        chosen += [extra_ctx, extra_ref]
    idx = np.concatenate(chosen).astype(np.int64)
    if short > 0 and len(labels):  # pool smaller than n: repeat members
        idx = np.concatenate([idx, rng.choice(len(labels), size=short, replace=True)])
    return idx
