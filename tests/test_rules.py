"""Every threshold rule at its boundary, through the public functions that apply it.

Each case puts a value exactly on the threshold (IoU 0.5 from boxes whose areas make it exact in
float64, a score equal to conf, a ref term equal to the cut, ...) and one just past it, so
flipping any comparison (``>`` <-> ``>=``, ``<`` <-> ``<=``) in sepnms.rules - or re-implementing
a rule with the other strictness in a caller - fails a test here.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sepnms import rules
from sepnms.clip.labeller import critical_ann_ids
from sepnms.data.candidates import initial_filter
from sepnms.data.ctxdb import glove_ctxdb, split_critical
from sepnms.data.sampling import CONTEXT, NEGATIVE, REFERENT, assign_labels
from sepnms.models.fusion import fuse_scores
from sepnms.evaluation.downstream import downstream_accuracy
from sepnms.evaluation.metrics import (box_iou, conf_sweep, ctx_recall, evaluate_at_conf, hit_rate, select_by_conf,
                                       top1_accuracy)
from sepnms.io.proposals import ExpressionCandidates, ProposalTable

GT = np.array([0.0, 0.0, 10.0, 10.0])
AT_HALF = np.array([0.0, 0.0, 10.0, 5.0])    # IoU with GT exactly 0.5 (50 / 100)
ABOVE_HALF = np.array([0.0, 0.0, 10.0, 6.0])  # 0.6
FAR = np.array([50.0, 50.0, 60.0, 60.0])      # 0


def test_boundary_boxes_are_exact():
    assert box_iou(AT_HALF[None], GT[None])[0, 0] == 0.5
    assert box_iou(np.array([[0.0, 0.0, 10.0, 9.0]]), GT[None])[0, 0] == 0.9


# --------------------------------------------------------------------------------- hit (IoU > 0.5)


def test_hit_is_strict():
    assert not rules.is_hit(0.5, 0.5) and rules.is_hit(0.5000001, 0.5)
    assert hit_rate([AT_HALF[None]], GT[None], 0.5) == 0.0
    assert hit_rate([ABOVE_HALF[None]], GT[None], 0.5) == 1.0


# ---------------------------------------------------------------------- context match (IoU > 0.5)


def test_context_match_is_strict():
    assert not rules.is_context_match(0.5, 0.5) and rules.is_context_match(0.51, 0.5)
    assert ctx_recall([AT_HALF[None]], [GT[None]], 0.5) == 0.0
    assert ctx_recall([ABOVE_HALF[None]], [GT[None]], 0.5) == 1.0


# ----------------------------------------------------------------------------- top-1 (IoU >= 0.5)


def test_top1_is_inclusive():
    assert rules.is_top1_correct(0.5, 0.5) and not rules.is_top1_correct(0.4999999, 0.5)
    assert not rules.is_top1_correct(np.nan, 0.5)
    assert top1_accuracy(AT_HALF[None], GT[None], 0.5) == 1.0
    assert top1_accuracy(np.array([[0.0, 0.0, 10.0, 4.9]]), GT[None], 0.5) == 0.0


def test_downstream_top1_is_inclusive():
    # MAttNet's inclusive-pixel IoU: xywh [0,0,10,5] vs [0,0,10,10] -> 50 / 100 exactly
    assert downstream_accuracy({1: [0, 0, 10, 5]}, {1: [0, 0, 10, 10]}, 1) == 1.0
    assert downstream_accuracy({1: [0, 0, 10, 4]}, {1: [0, 0, 10, 10]}, 1) == 0.0


# ------------------------------------------------------------------------- conf selection (> conf)


def _table(boxes, scores):
    e = ExpressionCandidates(sent_id=1, ref_id=1, image_id=1, box=np.asarray(boxes, np.float32),
                             cls_idx=np.ones(len(boxes), np.int32), det_score=np.ones(len(boxes), np.float32),
                             scores={"score": np.asarray(scores, np.float32)})
    return ProposalTable("val", "fused", [e])


def test_conf_selection_is_strict():
    assert not rules.kept_by_conf(0.5, 0.5) and rules.kept_by_conf(0.5, 0.4999)
    assert select_by_conf(np.array([0.9, 0.5]), 0.5).tolist() == [0]
    assert select_by_conf(np.array([0.9, 0.5]), 0.4999).tolist() == [0, 1]
    t = np.array([0.25, 0.5, 0.75])
    assert rules.n_kept_by_conf(t, np.array([0.5])).tolist() == [2]  # 0.5 is not > 0.5


@pytest.mark.parametrize("conf,kept,hit,ctx", [(0.5, 1.0, 0.0, 0.0), (0.4999, 2.0, 1.0, 1.0)])
def test_conf_sweep_and_single_conf_agree_at_the_boundary(conf, kept, hit, ctx):
    """The sweep computes hits, kept counts and context matches vectorised; at a score equal to
    conf and at a box of IoU exactly 0.5 it must give what the per-conf evaluation gives."""
    # top-1: FAR (score 0.9); second: ABOVE_HALF at score 0.5 (kept only when conf < 0.5);
    # third: AT_HALF at 0.5 too (never a hit: IoU 0.5 is not > 0.5)
    table = _table([FAR, ABOVE_HALF, AT_HALF], [0.9, 0.5, 0.5])
    gt = {1: GT}
    ctx_boxes = {1: GT[None]}
    single = evaluate_at_conf(table, gt, ctx_boxes, conf, 0.5)
    swept = conf_sweep(table, gt, ctx_boxes, [conf], 0.5)[0]
    # AT_HALF is kept alongside when conf < 0.5 but must not count
    assert single["proposals_per_expression"] == swept["proposals_per_expression"] == (1.0 if kept == 1.0 else 3.0)
    assert single["hit_rate"] == swept["hit_rate"] == hit
    assert single["ctx_recall"] == swept["ctx_recall"] == ctx
    assert single["top1_accuracy"] == swept["top1_accuracy"] == 0.0


def test_sweep_hit_at_iou_exactly_half_is_no_hit():
    table = _table([AT_HALF, FAR], [0.9, 0.1])
    for m in (evaluate_at_conf(table, {1: GT}, None, 0.0, 0.5), conf_sweep(table, {1: GT}, None, [0.0], 0.5)[0]):
        assert m["hit_rate"] == 0.0 and m["top1_accuracy"] == 1.0


# ----------------------------------------------------------------------- ref cut (dropped if < cut)


def test_ref_cut_keeps_a_term_equal_to_the_cut():
    np.testing.assert_array_equal(rules.ref_term_after_cut([0.03, 0.0299999, 0.5], 0.03), [0.03, 0.0, 0.5])
    det = np.array([1.0, 1.0])
    fused = fuse_scores("sep", det, ref=np.array([0.03, 0.0299]), ctx=np.array([0.2, 0.2]), k=2.0, ref_cut=0.03)
    np.testing.assert_allclose(fused, [0.2 + 2 * 0.03, 0.2], rtol=1e-6)


# ------------------------------------------------------------ candidate filter (prob > threshold)


def test_candidate_filter_is_strict():
    assert not rules.passes_candidate_filter(0.05, 0.05) and rules.passes_candidate_filter(0.0500001, 0.05)
    boxes = np.tile(np.array([0.0, 0.0, 10.0, 10.0], np.float32), (2, 81, 1))
    scores = np.zeros((2, 81), np.float64)
    scores[0, 1] = 0.05   # exactly the threshold: out
    scores[1, 2] = 0.5    # in
    c = initial_filter(boxes, scores, threshold=0.05, step=0.005, min_count=1)
    assert c.cls_idx.tolist() == [2]
    assert c.threshold == 0.05


# --------------------------------------------------------------- training labels (IoU >= pos_iou)


def test_training_labels_are_inclusive():
    assert rules.is_positive_label(0.5, 0.5) and not rules.is_positive_label(0.4999, 0.5)
    ctx = np.array([[20.0, 0.0, 30.0, 10.0]])
    cands = np.array([AT_HALF, [20.0, 0.0, 30.0, 5.0], [0.0, 0.0, 10.0, 4.9], FAR])
    assert assign_labels(cands, GT, ctx, 0.5).tolist() == [REFERENT, CONTEXT, NEGATIVE, NEGATIVE]


# -------------------------------------------------------------------------------- context labels


def _fake_refer():
    anns = {1: {"id": 1, "bbox": [0, 0, 10, 10], "category_id": 1, "image_id": 7},
            2: {"id": 2, "bbox": [0, 0, 10, 9], "category_id": 2, "image_id": 7},    # IoU 0.9 with 1
            3: {"id": 3, "bbox": [0, 0, 10, 9.5], "category_id": 3, "image_id": 7}}  # IoU 0.95 with 1
    ref = {"ref_id": 1, "ann_id": 1, "image_id": 7, "sentences": [{"sent_id": 5}]}
    return SimpleNamespace(ann_by_id=anns, ref_box=lambda r: [0.0, 0.0, 10.0, 10.0], refs=[ref],
                           anns_by_image={7: list(anns.values())}, cat_name={1: "cat", 2: "dog", 3: "bird"}), ref


def test_referent_itself_is_strict():
    assert not rules.is_referent_itself(0.9, 0.9) and rules.is_referent_itself(0.95, 0.9)
    refer, ref = _fake_refer()
    ref_ids, ctx_ids, _ = split_critical(refer, ref, [2, 3], 0.9)
    assert ref_ids == [3] and ctx_ids == [2]


def test_glove_critical_is_strict():
    assert not rules.is_critical_glove(0.6, 0.6) and rules.is_critical_glove(0.61, 0.6)
    refer, _ = _fake_refer()
    e = np.eye(3)
    # cos(noun, cat) = 1, cos(noun, dog) = 3/5 = 0.6 exactly, cos(noun, bird) = 0
    glove = {"cat": e[0], "dog": np.array([3.0, 4.0, 0.0]), "bird": e[2], "pet": e[0]}
    db = glove_ctxdb(refer, {5: ["pet"]}, glove, sim_threshold=0.6, referent_iou=0.99)
    entry = db.entries[5]
    assert entry["ref_ann_ids"] == [1] and entry["ctx_ann_ids"] == []  # dog at exactly 0.6 is out
    db = glove_ctxdb(refer, {5: ["pet"]}, glove, sim_threshold=0.59, referent_iou=0.99)
    assert db.entries[5]["ctx_ann_ids"] == [2]


def test_clip_critical_is_inclusive():
    assert rules.is_critical_clip(0.25, 0.25) and not rules.is_critical_clip(0.2499, 0.25)
    assert critical_ann_ids([1, 2, 3], [0.25, 0.2499, 0.5], 0.25) == [1, 3]
