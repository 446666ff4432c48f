"""First-stage metrics, conf selection, sweeps, plots and the downstream (MAttNet) evaluator."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from sepnms.errors import InputError
from sepnms.evaluation.downstream import compute_iou_inclusive, downstream_accuracy, load_predictions
from sepnms.evaluation.metrics import (
    box_iou,
    choose_conf,
    conf_sweep,
    ctx_recall,
    evaluate_at_conf,
    hit_rate,
    mean_kept,
    select_by_conf,
    sweep_confs,
    top1_accuracy,
)
from sepnms.evaluation.plots import plot_many, plot_sweeps
from sepnms.io.proposals import ExpressionCandidates, ProposalTable

GT = [0.0, 0.0, 10.0, 10.0]


# ------------------------------------------------------------------------------- boxes


def test_box_iou_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 5]])
    # inter 100/union 100; 50/150; 0; 50/100
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 1 / 3, 0.0, 0.5]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, size=(30, 2))
    a = np.concatenate([xy, xy + rng.uniform(1, 30, size=(30, 2))], axis=1)
    xy = rng.uniform(0, 50, size=(20, 2))
    b = np.concatenate([xy, xy + rng.uniform(1, 30, size=(20, 2))], axis=1)
    want = tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou(a, b), want, rtol=1e-9)


# --------------------------------------------------------------------------- selection


def test_select_by_conf_strict_and_top1():
    s = np.array([0.2, 0.9, 0.5, 0.5, 0.1])
    assert select_by_conf(s, 0.5).tolist() == [1]  # 0.5 is not > 0.5
    assert select_by_conf(s, 0.49).tolist() == [1, 2, 3]
    assert select_by_conf(s, 0.95).tolist() == [1]  # top-1 kept though below conf
    assert select_by_conf(s, 0.15).tolist() == [1, 2, 3, 0]
    assert select_by_conf(np.zeros(0), 0.1).tolist() == []


# ------------------------------------------------------------------------ per-call metrics


def test_hit_rate_hand():
    kept = [
        np.array([[0, 0, 10, 10]]),  # IoU 1 -> hit
        np.array([[5, 0, 15, 10], [20, 20, 30, 30]]),  # 1/3, 0 -> miss
        np.zeros((0, 4)),  # no proposal -> miss
        np.array([[0, 0, 10, 5]]),  # IoU exactly 0.5 -> miss (strict)
    ]
    assert hit_rate(kept, np.array([GT] * 4)) == pytest.approx(0.25)
    assert hit_rate(kept, np.array([GT] * 4), iou=0.3) == pytest.approx(0.75)  # 1/3 > 0.3, 0.5 > 0.3


def test_ctx_recall_hand():
    kept = [
        np.array([[0, 0, 10, 10]]),
        np.array([[0, 0, 10, 10]]),
        np.array([[20, 20, 30, 30], [40, 40, 50, 50]]),
        np.zeros((0, 4)),
    ]
    ctx = [
        np.array([[0, 0, 10, 10], [100, 100, 110, 110]]),  # 1 of 2 matched -> 0.5
        np.zeros((0, 4)),  # no context: not counted
        np.array([[20, 20, 30, 30]]),  # 1 of 1 -> 1.0
        np.array([[0, 0, 10, 10]]),  # no proposal -> 0.0
    ]
    assert ctx_recall(kept, ctx) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert math.isnan(ctx_recall(kept[:2], [np.zeros((0, 4))] * 2))


def test_top1_accuracy_hand():
    top = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [5, 0, 15, 10], [np.nan] * 4])
    # IoU 1 (ok), 0.5 (ok: >=), 1/3 (wrong), no candidate (wrong)
    assert top1_accuracy(top, np.array([GT] * 4)) == pytest.approx(0.5)


# ------------------------------------------------------------------------ table metrics


def _expr(sent_id, boxes, scores):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    return ExpressionCandidates(
        sent_id, sent_id * 10, sent_id * 100, boxes, np.ones(n, np.int32), np.ones(n, np.float32),
        {"score": np.asarray(scores, np.float32)},
    )


def _hand_table():
    return ProposalTable(
        "val",
        "fused",
        [
            # GT [0,0,10,10]; the hit (IoU 1) has the 2nd score
            _expr(1, [[20, 20, 30, 30], [0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.6, 0.3]),
            # top-1 hits
            _expr(2, [[0, 0, 10, 10], [60, 60, 70, 70]], [0.8, 0.7]),
            # no candidates
            _expr(3, [], []),
        ],
    )


GT_BY_SENT = {1: GT, 2: GT, 3: GT}
CTX_BY_SENT = {1: [[40, 40, 50, 50]], 2: [[60, 60, 70, 70], [0, 0, 5, 5]], 3: [[1, 1, 2, 2]]}


def test_evaluate_at_conf_hand():
    table = _hand_table()
    # conf 0.65: expr1 keeps [0.9] (miss), expr2 keeps [0.8, 0.7] (hit), expr3 keeps nothing
    r = evaluate_at_conf(table, GT_BY_SENT, CTX_BY_SENT, 0.65)
    assert r["hit_rate"] == pytest.approx(1 / 3)
    assert r["proposals_per_expression"] == pytest.approx((1 + 2 + 0) / 3)
    assert r["top1_accuracy"] == pytest.approx(1 / 3)  # only expr 2's top-1 hits
    # ctx: expr1 0/1, expr2 1/2, expr3 0/1
    assert r["ctx_recall"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert r["conf"] == 0.65
    # conf 0.2: expr1 keeps all 3 (hit; ctx 1/1), expr2 keeps 2
    r = evaluate_at_conf(table, GT_BY_SENT, CTX_BY_SENT, 0.2)
    assert r["hit_rate"] == pytest.approx(2 / 3)
    assert r["proposals_per_expression"] == pytest.approx(5 / 3)
    assert r["ctx_recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert r["top1_accuracy"] == pytest.approx(1 / 3)


def test_evaluate_missing_gt_and_unfused():
    with pytest.raises(ValueError, match="sent_id 3"):
        evaluate_at_conf(_hand_table(), {1: GT, 2: GT}, {}, 0.5)
    unfused = ProposalTable("val", "scored", [ExpressionCandidates(
        1, 1, 1, np.zeros((1, 4), np.float32), np.ones(1, np.int32), np.ones(1, np.float32), {})])
    with pytest.raises(ValueError, match="fuse it first"):
        evaluate_at_conf(unfused, {1: GT}, {}, 0.5)


def _choose_table():
    return ProposalTable(
        "val",
        "fused",
        [
            _expr(1, [[0, 0, 1, 1]] * 4, [0.9, 0.8, 0.7, 0.6]),
            _expr(2, [[0, 0, 1, 1]] * 2, [0.5, 0.4]),
        ],
    )


def test_choose_conf_hits_target():
    table = _choose_table()
    f32 = lambda v: float(np.float32(v))  # noqa: E731 - the table stores float32
    # mean kept: conf<0.4 -> (4+2)/2=3; 0.4 -> (4+1)/2=2.5; 0.5 -> 2.5; 0.6 -> (3+1)/2=2;
    # 0.7 -> 1.5; 0.8 -> 1; 0.9 -> 1
    assert choose_conf(table, 2.0) == f32(0.6)
    assert choose_conf(table, 1.5) == f32(0.7)
    assert choose_conf(table, 2.5) == f32(0.5)  # tie 0.4 / 0.5 -> the larger
    assert choose_conf(table, 1.0) == f32(0.9)  # tie 0.8 / 0.9 -> the larger
    assert choose_conf(table, 2.2) == f32(0.6)  # |2 - 2.2| < |2.5 - 2.2|
    low = choose_conf(table, 10.0)  # keep everything
    assert low < f32(0.4)
    assert evaluate_at_conf(table, {1: GT, 2: GT}, {}, low)["proposals_per_expression"] == 3.0
    np.testing.assert_allclose(mean_kept(table, [f32(0.6), f32(0.7), low]), [2.0, 1.5, 3.0])


def test_choose_conf_empty_table():
    assert choose_conf(ProposalTable("val", "fused", [_expr(1, [], [])]), 9.0) == 0.0


# ---------------------------------------------------------------- slow reference vs sweep


def _iou_py(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(exprs, gts, ctxs, conf, thr=0.5):
    """Plain loops.  exprs: list of (boxes, scores) python lists."""
    hits, counts, top1, ctx_fracs = 0, 0, 0, []
    for (boxes, scores), gt, ctx in zip(exprs, gts, ctxs):
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        kept = order[:1] + [i for i in order[1:] if scores[i] > conf]
        counts += len(kept)
        if any(_iou_py(boxes[i], gt) > thr for i in kept):
            hits += 1
        if order and _iou_py(boxes[order[0]], gt) >= thr:
            top1 += 1
        if ctx:
            matched = sum(1 for c in ctx if any(_iou_py(boxes[i], c) > thr for i in kept))
            ctx_fracs.append(matched / len(ctx))
    n = len(exprs)
    return {
        "hit_rate": hits / n,
        "proposals_per_expression": counts / n,
        "top1_accuracy": top1 / n,
        "ctx_recall": sum(ctx_fracs) / len(ctx_fracs) if ctx_fracs else float("nan"),
    }


def _random_world(seed=0, n_expr=80):
    rng = np.random.default_rng(seed)
    exprs, table_exprs, gts, ctxs = [], [], {}, {}
    for sent in range(n_expr):
        gt = np.array([20.0, 20.0, 60.0, 60.0]) + rng.integers(-5, 5, 4)
        m = int(rng.integers(0, 14)) if sent % 7 else 0  # some expressions without candidates
        jitter = rng.uniform(-15, 15, size=(m, 4))
        boxes = (gt[None] + jitter).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = np.round(rng.uniform(0, 1, m), 2).astype(np.float32)  # rounded: ties happen
        n_ctx = int(rng.integers(0, 3))
        ctx = (gt[None] + rng.uniform(-15, 15, size=(n_ctx, 4)))
        ctx[:, 2:] = np.maximum(ctx[:, 2:], ctx[:, :2] + 1)
        table_exprs.append(_expr(sent, boxes, scores))
        gts[sent] = gt
        ctxs[sent] = ctx
        exprs.append(([list(map(float, b)) for b in boxes], [float(s) for s in scores]))
    table = ProposalTable("val", "fused", table_exprs)
    return table, exprs, gts, ctxs


def test_conf_sweep_matches_slow_reference():
    table, exprs, gts, ctxs = _random_world()
    all_scores = np.unique(np.concatenate([e.scores["score"] for e in table.expressions]))
    confs = np.concatenate([[-1.0, 0.0, 0.333, 0.5, 0.999, 2.0, np.inf], all_scores[::3].astype(np.float64)])
    sweep = conf_sweep(table, gts, ctxs, confs)
    assert len(sweep) == len(confs)
    gt_list = [list(gts[i]) for i in range(len(exprs))]
    ctx_list = [[list(c) for c in ctxs[i]] for i in range(len(exprs))]
    for conf, got in zip(confs, sweep):
        want = _reference(exprs, gt_list, ctx_list, float(conf))
        assert got["conf"] == float(conf)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (conf, key)
        direct = evaluate_at_conf(table, gts, ctxs, float(conf))
        for key, value in want.items():
            assert direct[key] == pytest.approx(value, abs=1e-12), (conf, key)


def test_sweep_confs_spans_all_to_top1():
    table, _, gts, ctxs = _random_world(seed=1)
    confs = sweep_confs(table, grid_size=50)
    assert np.all(np.diff(confs) > 0) and len(confs) <= 51
    kept = mean_kept(table, confs)
    n_cand = sum(len(e) for e in table.expressions)
    n_nonempty = sum(1 for e in table.expressions if len(e))
    assert kept[0] == pytest.approx(n_cand / len(table))  # below min: everything
    assert kept[-1] == pytest.approx(n_nonempty / len(table))  # at max: top-1 only
    assert np.all(np.diff(kept) <= 0)


# ------------------------------------------------------------------------------- plots


def test_plots_write_png(tmp_path):
    table, _, gts, ctxs = _random_world(seed=2, n_expr=20)
    sweep = conf_sweep(table, gts, ctxs, sweep_confs(table, 20))
    p = plot_sweeps({"sep": sweep, "det": sweep[::2]}, tmp_path / "figs" / "val.png", "val",
                    marks={"sep": sweep[3]})
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    q = plot_many({"val": {"sep": sweep}, "testA": {"sep": sweep}}, tmp_path / "all.png", "all")
    assert q.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.rglob("*.tmp"))


# -------------------------------------------------------------------------- downstream


def test_mattnet_iou_inclusive_pixels():
    # a 1-pixel-wide box on itself: MAttNet's strict overlap test gives 0 (exclusive would say 1)
    assert compute_iou_inclusive([0, 0, 1, 10], [0, 0, 1, 10]) == 0.0
    # [10,10,20,20] vs [12,10,20,20]: inter x 12..29 (18) * y 10..29 (20) = 360; union 800-360
    assert compute_iou_inclusive([10, 10, 20, 20], [12, 10, 20, 20]) == pytest.approx(360 / 440)
    # half overlap: inter 10*5 = 50; union 100 + 50 - 50
    assert compute_iou_inclusive([0, 0, 10, 10], [0, 0, 10, 5]) == pytest.approx(0.5)


def test_downstream_accuracy_hand():
    gt = {1: [0, 0, 1, 10], 2: [10, 10, 20, 20], 3: [0, 0, 10, 10], 4: [5, 5, 5, 5]}
    preds = {
        1: [0, 0, 1, 10],  # exclusive IoU 1, MAttNet IoU 0 -> wrong
        2: [12, 10, 20, 20],  # 0.818 -> right
        3: [0, 0, 10, 5],  # exactly 0.5 -> right (>=)
        # 4 missing -> wrong
        99: [0, 0, 1, 1],  # not in the split: ignored
    }
    assert downstream_accuracy(preds, gt, n_expressions=4) == pytest.approx(2 / 4)
    # the denominator is the split's expression count, not the number of predictions
    assert downstream_accuracy(preds, gt, n_expressions=5) == pytest.approx(2 / 5)


def test_load_predictions_variants(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"sent_id": 1, "box": [1, 2, 3, 4]}, {"sent_id": "2", "box": [0, 0, 1, 1]}]))
    assert load_predictions(a) == {1: [1.0, 2.0, 3.0, 4.0], 2: [0.0, 0.0, 1.0, 1.0]}
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"predictions": [{"sent_id": 5, "pred_box": [1, 1, 2, 2], "sent": "x"}]}))
    assert load_predictions(b) == {5: [1.0, 1.0, 2.0, 2.0]}


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "JSON"),
        (json.dumps({"sent_id": 1}), "list"),
        (json.dumps([{"box": [1, 2, 3, 4]}]), "sent_id"),
        (json.dumps([{"sent_id": 1}]), "no 'box'"),
        (json.dumps([{"sent_id": 1, "box": [1, 2, 3]}]), "4 finite numbers"),
        (json.dumps([{"sent_id": 1, "box": [1, 2, 3, 4]}, {"sent_id": 1, "box": [1, 2, 3, 4]}]), "twice"),
    ],
)
def test_load_predictions_malformed(tmp_path, content, problem):
    p = tmp_path / "bad_preds.json"
    p.write_text(content)
    with pytest.raises(InputError, match=problem) as info:
        load_predictions(p)
    assert "bad_preds.json" in str(info.value)


def test_load_predictions_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_predictions(tmp_path / "nope.json")
