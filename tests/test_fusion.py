"""Fusion rules, class-wise NMS, and fusion of candidate tables (hand-computed expectations)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sepnms.config import FusionConfig
from sepnms.models.fusion import classwise_nms, fuse_expression, fuse_scores, fuse_table
from sepnms.io.proposals import ExpressionCandidates, ProposalTable, read_proposals, write_proposals

DET = np.array([0.5, 0.8, 0.1])
REF = np.array([0.9, 0.02, 0.5])
CTX = np.array([0.4, 0.6, 0.2])
CLIP = np.array([0.1, 0.3, 0.7])


def test_rule_det():
    np.testing.assert_allclose(fuse_scores("det", DET), [0.5, 0.8, 0.1], rtol=1e-6)


def test_rule_refnms():
    # x * S_det
    np.testing.assert_allclose(fuse_scores("refnms", DET, ctx=CTX), [0.2, 0.48, 0.02], rtol=1e-6)


def test_rule_sep_drops_small_ref_term():
    # r * S_det = [0.45, 0.016, 0.05]; 0.016 < 0.03 -> dropped for candidate 1
    # S = x*S_det + 2 * r*S_det = [0.2 + 0.9, 0.48 + 0, 0.02 + 0.1]
    got = fuse_scores("sep", DET, ref=REF, ctx=CTX, k=2.0, ref_cut=0.03)
    np.testing.assert_allclose(got, [1.1, 0.48, 0.12], rtol=1e-6)


def test_rule_sep_without_cut_keeps_ref_term():
    # same as above with no cut: candidate 1 gets 0.48 + 2 * 0.016 = 0.512
    got = fuse_scores("sep", DET, ref=REF, ctx=CTX, k=2.0, ref_cut=0.0)
    np.testing.assert_allclose(got, [1.1, 0.512, 0.12], rtol=1e-6)


def test_rule_sep_k_weight():
    # k = 1: [0.2 + 0.45, 0.48, 0.02 + 0.05]
    got = fuse_scores("sep", DET, ref=REF, ctx=CTX, k=1.0, ref_cut=0.03)
    np.testing.assert_allclose(got, [0.65, 0.48, 0.07], rtol=1e-6)


def test_rule_sep_clip():
    # (x + r + clip) * S_det = [1.4*0.5, 0.92*0.8, 1.4*0.1]
    got = fuse_scores("sep+clip", DET, ref=REF, ctx=CTX, clip=CLIP)
    np.testing.assert_allclose(got, [0.7, 0.736, 0.14], rtol=1e-6)


@pytest.mark.parametrize(
    "rule, kwargs, missing",
    [
        ("refnms", {}, "ctx"),
        ("sep", {"ctx": CTX}, "ref"),
        ("sep", {"ref": REF}, "ctx"),
        ("sep+clip", {"ctx": CTX, "ref": REF}, "clip"),
    ],
)
def test_missing_input_is_named(rule, kwargs, missing):
    with pytest.raises(ValueError, match=rf"\({missing}, column '{missing}_score'\)"):
        fuse_scores(rule, DET, **kwargs)


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown fusion rule"):
        fuse_scores("max", DET)


def test_classwise_nms_suppresses_same_class_only():
    box = np.array(
        [
            [0, 0, 10, 10],  # 0: cls 1, 0.9
            [1, 1, 11, 11],  # 1: cls 1, 0.8, IoU with 0 = 81/119 = 0.68 > 0.3 -> suppressed
            [1, 1, 11, 11],  # 2: cls 2, 0.7, other class -> kept
            [50, 50, 60, 60],  # 3: cls 1, 0.95, far away -> kept
            [6, 0, 16, 10],  # 4: cls 1, 0.5, IoU with 0 = 40/160 = 0.25 <= 0.3 -> kept
        ],
        dtype=np.float32,
    )
    score = np.array([0.9, 0.8, 0.7, 0.95, 0.5], dtype=np.float32)
    cls = np.array([1, 1, 2, 1, 1], dtype=np.int32)
    keep = classwise_nms(box, score, cls, 0.3)
    assert keep.tolist() == [3, 0, 2, 4]
    # a looser threshold (0.7) keeps box 1 too (0.68 <= 0.7)
    assert classwise_nms(box, score, cls, 0.7).tolist() == [3, 0, 1, 2, 4]


def test_classwise_nms_empty():
    assert classwise_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int32), 0.3).tolist() == []


def _cand(sent_id=7, with_clip=False):
    box = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    scores = {
        "ref_score": REF.astype(np.float32),
        "ctx_score": CTX.astype(np.float32),
    }
    if with_clip:
        scores["clip_score"] = CLIP.astype(np.float32)
    return ExpressionCandidates(
        sent_id, 70, 700, box, np.array([1, 1, 5], np.int32), DET.astype(np.float32), scores
    )


def test_fuse_expression_nms_and_order():
    # sep scores [1.1, 0.48, 0.12]; boxes 0 and 1 overlap (IoU 0.68, same class) -> 1 dropped
    out = fuse_expression(_cand(), "sep", k=2.0, ref_cut=0.03, nms_iou=0.3)
    assert len(out) == 2
    np.testing.assert_allclose(out.scores["score"], [1.1, 0.12], rtol=1e-6)
    np.testing.assert_array_equal(out.box, [[0, 0, 10, 10], [20, 20, 30, 30]])
    np.testing.assert_array_equal(out.cls_idx, [1, 5])
    np.testing.assert_allclose(out.det_score, [0.5, 0.1], rtol=1e-6)
    np.testing.assert_allclose(out.scores["ref_score"], [0.9, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.scores["ctx_score"], [0.4, 0.2], rtol=1e-6)
    assert (out.sent_id, out.ref_id, out.image_id) == (7, 70, 700)
    assert out.scores["score"].dtype == np.float32


def test_fuse_expression_order_follows_fused_score():
    # det rule: [0.5, 0.8, 0.1]; box 1 (0.8) now suppresses box 0 (0.5)
    out = fuse_expression(_cand(), "det", nms_iou=0.3)
    np.testing.assert_allclose(out.scores["score"], [0.8, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(out.box[0], [1, 1, 11, 11])


def test_fuse_table_attrs_and_roundtrip(tmp_path):
    empty = ExpressionCandidates(
        8, 80, 800, np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32),
        {"ref_score": np.zeros(0, np.float32), "ctx_score": np.zeros(0, np.float32)},
    )
    table = ProposalTable("val", "scored", [_cand(), empty], {"config": "abc"})
    fused = fuse_table(table, FusionConfig(rule="refnms", k=3.0, ref_cut=0.05, nms_iou=0.3))
    assert fused.stage == "fused" and fused.split == "val"
    assert fused.attrs["fusion_rule"] == "refnms"
    assert float(fused.attrs["fusion_k"]) == 3.0
    assert float(fused.attrs["fusion_ref_cut"]) == 0.05
    assert float(fused.attrs["fusion_nms_iou"]) == 0.3
    assert fused.attrs["config"] == "abc"
    # refnms scores [0.2, 0.48, 0.02]: box 1 suppresses box 0
    np.testing.assert_allclose(fused.expressions[0].scores["score"], [0.48, 0.02], rtol=1e-6)
    assert len(fused.expressions[1]) == 0
    path = tmp_path / "val.h5"
    write_proposals(path, fused)
    back = read_proposals(path)
    assert back.stage == "fused" and back.attrs["fusion_rule"] == "refnms"
    np.testing.assert_allclose(back.expressions[0].scores["score"], [0.48, 0.02], rtol=1e-6)


def test_fuse_table_missing_clip_column():
    table = ProposalTable("val", "scored", [_cand()])
    with pytest.raises(ValueError, match="clip_score"):
        fuse_table(table, FusionConfig(rule="sep+clip"))
    fused = fuse_table(ProposalTable("val", "scored", [_cand(with_clip=True)]), FusionConfig(rule="sep+clip"))
    # (x + r + clip) * det = [0.7, 0.736, 0.14]; box 1 (0.736) suppresses box 0 (0.7)
    np.testing.assert_allclose(fused.expressions[0].scores["score"], [0.736, 0.14], rtol=1e-6)


def test_object_clip_term_is_a_softmax_over_unique_confident_detections():
    from sepnms.clip.proposals import object_clip_term

    a, b, c = [0, 0, 10, 10], [20, 0, 30, 10], [22, 0, 34, 10]
    box = np.array([a, a, b, c], np.float32)      # region A twice (two classes), B, C overlapping B
    det = np.array([0.9, 0.5, 0.8, 0.1])           # C is not confident: not an object
    cos = np.array([0.5, 0.4, 0.2, 0.9])
    got = object_clip_term(box, det, cos, scale=10.0, min_det=0.3, nms_iou=0.5)
    za, zb = math.exp(5.0), math.exp(2.0)          # objects A (its top crop's cosine) and B
    np.testing.assert_allclose(got, [za / (za + zb), za / (za + zb), zb / (za + zb), zb / (za + zb)], rtol=1e-9)
    # no candidate reaches min_det: the top one is the only object
    np.testing.assert_allclose(object_clip_term(box, det, cos, min_det=0.95), [1, 1, 1, 1])
    assert object_clip_term(np.zeros((0, 4)), [], []).shape == (0,)


def test_sep_clip_uses_the_configured_clip_term():
    from sepnms.config import FusionConfig
    from sepnms.models.fusion import clip_input

    box = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    cand = ExpressionCandidates(1, 1, 1, box, np.array([1, 2], np.int32), np.array([0.9, 0.8], np.float32),
                                {"clip_score": np.array([0.5, 0.5], np.float32), "clip_cos": np.array([0.3, 0.1], np.float32)})
    np.testing.assert_array_equal(clip_input(cand, FusionConfig(clip_term="candidates")), [0.5, 0.5])
    objects = clip_input(cand, FusionConfig(clip_term="objects"))
    np.testing.assert_allclose(objects, [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(2.0))], rtol=1e-6)
