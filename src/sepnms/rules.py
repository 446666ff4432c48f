"""Every threshold rule of the method, each implemented once (METHOD.md).

Each function is the single place where its comparison is written; every stage that applies the
rule (evaluation, the vectorised conf sweep, ``sepnms show``, fusion, candidate filtering,
training labels, context labels) calls it, so a rule cannot drift between two copies.  The
strictness (``>`` vs ``>=``) follows the method and the released code; tests/test_rules.py pins
each one at its boundary.  A leaf module (numpy only), importable from every layer.

All functions are elementwise over array-likes and return bool arrays (or the transformed values).
"""
from __future__ import annotations

import numpy as np


def is_hit(iou, threshold):
    """Referent hit: a kept proposal hits the referent when IoU > threshold (strict; 0.5)."""
    return np.asarray(iou) > threshold


def is_context_match(iou, threshold):
    """Context recall: a context box is matched when a kept proposal has IoU > threshold (strict)."""
    return np.asarray(iou) > threshold


def is_top1_correct(iou, threshold):
    """Top-1 accuracy (first stage and MAttNet's downstream): correct when IoU >= threshold.
    A NaN IoU (no box) is never correct."""
    with np.errstate(invalid="ignore"):
        return np.asarray(iou) >= threshold


def kept_by_conf(score, conf):
    """Selection by confidence: besides the top-1 (always kept), a candidate is kept when its
    fused score > conf (strict)."""
    return np.asarray(score) > conf


def n_kept_by_conf(sorted_thresholds, confs):
    """The vectorised form of :func:`kept_by_conf` used by the conf sweep.

    Args:
        sorted_thresholds: [B] ascending.
        confs: [K].
    Returns:
        [K] int: index of the first threshold t with ``t > conf`` (so ``B - index`` thresholds
        are kept at each conf).
    """
    return np.searchsorted(sorted_thresholds, confs, side="right")


def ref_term_after_cut(ref_term, cut):
    """``sep`` fusion: the ref term ``r * S_det`` is dropped (set to 0) where it is < cut (0.03);
    a term equal to the cut is kept."""
    ref_term = np.asarray(ref_term, dtype=np.float64)
    return np.where(ref_term < cut, 0.0, ref_term)


def passes_candidate_filter(prob, threshold):
    """Initial filtering: a (box, class) pair enters the candidate pool when its class
    probability > threshold (strict; 0.05, lowered in steps until enough pass)."""
    return np.asarray(prob) > threshold


def is_positive_label(iou, pos_iou):
    """Training labels: a candidate is a referent (or context) positive when its IoU with the
    referent (or a context box) is >= pos_iou (0.5)."""
    return np.asarray(iou) >= pos_iou


def is_referent_itself(iou, threshold):
    """Context labels: a critical object with IoU > threshold (0.9) to the referent is the
    referent itself, not context."""
    return np.asarray(iou) > threshold


def is_critical_glove(similarity, threshold):
    """GloVe context labels: an object is critical when its GloVe similarity > threshold."""
    return np.asarray(similarity) > threshold


def is_critical_clip(prob, threshold):
    """CLIP context labels: an object is critical when its CLIP-dagger probability >= threshold."""
    return np.asarray(prob) >= threshold
