"""Bootstrap intervals beside every rate, paired differences, and their place in the report."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sepnms.evaluation.intervals import differences_table, paired_differences, with_intervals
from sepnms.evaluation.metrics import evaluate_at_conf, expression_outcomes
from sepnms.evaluation.report import metrics_table
from sepnms.io.proposals import ExpressionCandidates, ProposalTable


def _outcomes(hit, top1, ctx, sent_ids=None):
    n = len(hit)
    return {"sent_id": np.asarray(sent_ids if sent_ids is not None else range(n), np.int64),
            "hit": np.asarray(hit, float), "top1": np.asarray(top1, float), "ctx_recall": np.asarray(ctx, float),
            "kept": np.ones(n)}


def test_intervals_bracket_the_rate_and_shrink_like_binomial():
    rng = np.random.default_rng(0)
    for n in (100, 400):
        hit = (rng.random(n) < 0.4).astype(float)
        entry = {"hit_rate": hit.mean(), "top1_accuracy": hit.mean(), "ctx_recall": float("nan")}
        out = with_intervals(entry, _outcomes(hit, hit, np.full(n, np.nan)), seed=0)
        low, high = out["hit_rate_ci"]
        assert low < hit.mean() < high
        p = hit.mean()
        normal_half = 1.96 * math.sqrt(p * (1 - p) / n)
        assert (high - low) / 2 == pytest.approx(normal_half, rel=0.2)
        assert out["ctx_recall_ci"] is None  # no expression has context
        assert with_intervals(entry, _outcomes(hit, hit, np.full(n, np.nan)), seed=0) == out  # fixed seed


def test_interval_of_a_constant_is_a_point_and_nan_context_is_excluded():
    out = with_intervals({}, _outcomes([1, 1, 1], [0, 0, 0], [np.nan, 0.5, 0.5]))
    assert out["hit_rate_ci"] == [1.0, 1.0] and out["top1_accuracy_ci"] == [0.0, 0.0]
    assert out["ctx_recall_ci"] == [0.5, 0.5]


def test_paired_differences_match_by_sent_id():
    a = _outcomes([1, 1, 0, 1], [1, 0, 0, 1], [1.0, np.nan, 0.0, 1.0], sent_ids=[10, 11, 12, 13])
    # the same values in another order: every difference is exactly 0
    order = [2, 0, 3, 1]
    b = {k: v[order] for k, v in a.items()}
    d = paired_differences(a, b)
    assert d["hit_rate"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    never = _outcomes([0, 0, 0, 0], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], sent_ids=[13, 12, 11, 10])
    d = paired_differences(a, never)
    assert d["hit_rate"]["diff"] == pytest.approx(0.75) and d["top1_accuracy"]["diff"] == pytest.approx(0.5)
    assert d["ctx_recall"]["diff"] == pytest.approx(2 / 3)  # sent 11 has no context in a
    with pytest.raises(ValueError, match="same expressions"):
        paired_differences(a, _outcomes([1], [1], [1.0], sent_ids=[99]))


def test_expression_outcomes_average_to_evaluate_at_conf():
    rng = np.random.default_rng(1)
    exprs, gt, ctx = [], {}, {}
    for sid in range(30):
        xy = rng.uniform(0, 40, (8, 2))
        box = np.concatenate([xy, xy + rng.uniform(5, 30, (8, 2))], 1).astype(np.float32)
        exprs.append(ExpressionCandidates(sid, sid, 1, box, np.ones(8, np.int32), np.ones(8, np.float32),
                                          {"score": rng.random(8).astype(np.float32)}))
        gt[sid] = box[rng.integers(8)] + rng.uniform(-3, 3, 4)
        if sid % 3:
            ctx[sid] = box[:2] + rng.uniform(-3, 3, (2, 4))
    table = ProposalTable("val", "fused", exprs)
    o = expression_outcomes(table, gt, ctx, 0.5, 0.5)
    m = evaluate_at_conf(table, gt, ctx, 0.5, 0.5)
    assert o["hit"].mean() == m["hit_rate"] and o["top1"].mean() == m["top1_accuracy"]
    assert np.nanmean(o["ctx_recall"]) == pytest.approx(m["ctx_recall"]) and np.isnan(o["ctx_recall"][0])
    assert 0 < m["hit_rate"] < 1


def test_report_tables_show_intervals():
    m = {"sepnms": {"val": {"hit_rate": 0.5, "hit_rate_ci": [0.4, 0.6], "top1_accuracy": 0.3,
                            "top1_accuracy_ci": [0.25, 0.35], "ctx_recall": float("nan"), "ctx_recall_ci": None,
                            "proposals_per_expression": 3.0, "conf": 0.1, "n_expressions": 400}}}
    table = metrics_table(m, "val")
    assert "| sepnms | 400 | 50.0 [40.0, 60.0] | 3.00 | 30.0 [25.0, 35.0] | - |" in table
    pairs = {"sepnms - refnms": {"val": {"hit_rate": {"diff": 0.05, "low": -0.01, "high": 0.11},
                                         "top1_accuracy": None, "ctx_recall": None}}}
    assert "| sepnms - refnms | +5.0 [-1.0, +11.0] | - | - |" in differences_table(pairs, "val")
