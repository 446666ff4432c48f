"""Property tests of the pipeline's pieces: IoU, class-wise NMS, fusion, selection by conf, and
the round trips of the prepared files (refdb, ctxdb, candidates, vocab, head features, sentence
vectors, instances / data.json) that tests/test_properties.py does not cover.

Expected relations are written from the definitions (METHOD.md), never taken from the code under
test; the greedy-NMS and selection checks are brute-force restatements of the definitions.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sepnms.evaluation.metrics import box_iou, paired_iou, select_by_conf
from sepnms.models.fusion import RULES, classwise_nms, fuse_scores

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IO_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)

COORD = st.floats(-50, 600, allow_nan=False, width=32)
SIDE = st.floats(0, 300, allow_nan=False, width=32)


@st.composite
def boxes(draw, n_min=0, n_max=8, positive=False, inverted=True):
    """[N, 4] float32 xyxy boxes; zero-size and (with ``inverted``) x2 < x1 ones included."""
    n = draw(st.integers(n_min, n_max))
    out = []
    for _ in range(n):
        x, y = draw(COORD), draw(COORD)
        w = draw(st.floats(0.5, 300, width=32) if positive else SIDE)
        h = draw(st.floats(0.5, 300, width=32) if positive else SIDE)
        if inverted and not positive and draw(st.booleans()):
            w = -w
        out.append([x, y, x + w, y + h])
    return np.asarray(out, np.float32).reshape(-1, 4)


def area(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


# =======================================================================================
# IoU


@SETTINGS
@given(boxes(), boxes())
def test_iou_is_symmetric_and_in_0_1(a, b):
    ab, ba = box_iou(a, b), box_iou(b, a)
    assert ab.shape == (len(a), len(b))
    np.testing.assert_array_equal(ab, ba.T)
    assert np.isfinite(ab).all() and (ab >= 0).all() and (ab <= 1).all()


@SETTINGS
@given(boxes(n_min=1))
def test_iou_of_a_box_with_itself(a):
    d = np.diag(box_iou(a, a))
    pos = area(a) > 0
    np.testing.assert_allclose(d[pos], 1.0, rtol=0, atol=1e-12)
    assert (d[~pos] == 0).all()  # a box without area overlaps nothing, itself included


@SETTINGS
@given(boxes(n_min=1, positive=True), boxes(n_min=1, positive=True))
def test_iou_disjoint_and_paired(a, b):
    """IoU 0 for boxes moved apart; paired IoU is the diagonal of the pairwise IoU."""
    shifted = b.astype(np.float64) + np.array([2000.0, 0, 2000.0, 0])
    assert (box_iou(a, shifted) == 0).all()
    n = min(len(a), len(b))
    np.testing.assert_array_equal(paired_iou(a[:n], b[:n]), np.diag(box_iou(a[:n], b[:n])))


@SETTINGS
@given(boxes(positive=True), boxes(positive=True))
def test_torchvision_iou_of_the_ctxdb_agrees(a, b):
    from sepnms.data.ctxdb import box_iou_np

    t = box_iou_np(a, b)
    np.testing.assert_allclose(t, box_iou_np(b, a).T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t, box_iou(a, b), rtol=0, atol=1e-9)
    assert ((t >= 0) & (t <= 1)).all()


# =======================================================================================
# class-wise NMS

GRID_BOXES = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 30), st.integers(1, 30)), max_size=14,
).map(lambda rows: np.asarray([[x, y, x + w, y + h] for x, y, w, h in rows], np.float32).reshape(-1, 4))
SCORE = st.one_of(st.sampled_from([0.1, 0.5, 0.9]), st.floats(0, 1, width=32))


@SETTINGS
@given(GRID_BOXES, st.data(), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_keeps_a_subset_with_no_overlap_above_the_threshold(box, data, thr):
    m = len(box)
    score = np.asarray(data.draw(st.lists(SCORE, min_size=m, max_size=m)), np.float32)
    cls = np.asarray(data.draw(st.lists(st.integers(1, 3), min_size=m, max_size=m)), np.int64)
    keep = classwise_nms(box, score, cls, thr)
    # a subset, by descending score (ties: lower index first)
    assert keep.dtype == np.int64 and len(set(keep.tolist())) == len(keep)
    assert all(0 <= k < m for k in keep)
    assert [(-score[k], k) for k in keep] == sorted((-score[k], k) for k in keep)
    if m:
        assert len(keep) >= 1 and keep[0] == min(range(m), key=lambda i: (-score[i], i))
    iou = box_iou(box, box)
    eps = 1e-5  # torchvision's IoU is float32
    kept = set(keep.tolist())
    for i in keep:
        for j in keep:
            if i != j and cls[i] == cls[j]:
                assert iou[i, j] <= thr + eps
    # greedy: every dropped box overlaps a kept box of its class that ranks above it
    for i in set(range(m)) - kept:
        assert any(cls[j] == cls[i] and (-score[j], j) < (-score[i], i) and iou[i, j] > thr - eps for j in kept)


@SETTINGS
@given(GRID_BOXES, st.data())
def test_nms_of_different_classes_never_suppress_each_other(box, data):
    m = len(box)
    score = np.asarray(data.draw(st.lists(SCORE, min_size=m, max_size=m)), np.float32)
    keep = classwise_nms(box, score, np.arange(1, m + 1), 0.0)  # every box its own class
    assert sorted(keep.tolist()) == list(range(m))


# =======================================================================================
# fusion

UNIT = st.floats(0, 1, allow_nan=False)


@SETTINGS
@given(st.sampled_from(RULES), UNIT, UNIT, UNIT, UNIT, UNIT, st.floats(0, 10), st.floats(0, 0.5))
def test_every_fusion_rule_is_monotone_in_the_detector_score(rule, d1, d2, ref, ctx, clip, k, cut):
    lo, hi = min(d1, d2), max(d1, d2)
    s = fuse_scores(rule, [lo, hi], ref=[ref, ref], ctx=[ctx, ctx], clip=[clip, clip], k=k, ref_cut=cut)
    assert s.shape == (2,) and np.isfinite(s).all()
    assert s[0] <= s[1]
    assert s[0] >= 0
    if lo == 0:
        assert s[0] == 0  # no detector evidence, no score


@SETTINGS
@given(st.sampled_from(RULES), hnp.arrays(np.float64, st.integers(0, 6), elements=UNIT), st.data())
def test_fusion_is_elementwise(rule, det, data):
    """Each candidate's fused score depends on its own inputs only (order does not matter)."""
    m = len(det)
    cols = {n: np.asarray(data.draw(st.lists(UNIT, min_size=m, max_size=m))) for n in ("ref", "ctx", "clip")}
    perm = np.asarray(data.draw(st.permutations(range(m))), np.int64)
    a = fuse_scores(rule, det, **cols)
    b = fuse_scores(rule, det[perm], **{n: v[perm] for n, v in cols.items()})
    np.testing.assert_array_equal(a[perm], b)


# =======================================================================================
# selection by conf

SCORES = hnp.arrays(np.float64, st.integers(0, 12),
                    elements=st.one_of(st.sampled_from([0.0, 0.25, 0.5]), st.floats(0, 1)))


@SETTINGS
@given(SCORES, st.floats(-0.5, 1.5), st.floats(-0.5, 1.5))
def test_selection_keeps_the_top1_and_is_monotone_in_conf(scores, c1, c2):
    lo, hi = min(c1, c2), max(c1, c2)
    a, b = select_by_conf(scores, lo), select_by_conf(scores, hi)
    if len(scores) == 0:
        assert len(a) == len(b) == 0
        return
    top = min(range(len(scores)), key=lambda i: (-scores[i], i))
    assert a[0] == b[0] == top
    assert len(b) <= len(a) and set(b.tolist()) <= set(a.tolist())
    # the definition: the top-1, plus every other candidate with score > conf
    assert set(a.tolist()) == {top} | {i for i, s in enumerate(scores) if s > lo}


# =======================================================================================
# round trips of the prepared files

SPLITS = st.sampled_from(["train", "val", "testA", "testB", "test"])
F32 = st.floats(-1e4, 1e4, width=32)


@st.composite
def refdbs(draw):
    from sepnms.data.refdb import RefDB

    iids = draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=4, unique=True))
    images = {i: {"width": draw(st.integers(1, 5000)), "height": draw(st.integers(1, 5000)), "split": draw(SPLITS),
                  "file_name": draw(TEXT)} for i in iids}
    sids = draw(st.lists(st.integers(0, 2**40), max_size=6, unique=True))
    exprs = [{"sent_id": s, "ref_id": draw(st.integers(0, 2**31)), "ann_id": draw(st.integers(0, 2**40)),
              "image_id": draw(st.sampled_from(iids)), "split": draw(SPLITS), "category_id": draw(st.integers(1, 90)),
              "gt_box": draw(st.lists(st.floats(-1e5, 1e5), min_size=4, max_size=4)),
              "tokens": draw(st.lists(TEXT, max_size=5)), "sent": draw(TEXT)} for s in sids]
    return RefDB(draw(st.sampled_from(["refcoco_unc", "refcoco+_unc", "refcocog_umd"])), images, exprs)


@IO_SETTINGS
@given(refdbs())
def test_refdb_roundtrip(db):
    from sepnms.data.refdb import load_refdb, save_refdb

    with tempfile.TemporaryDirectory() as d:
        save_refdb(Path(d) / "refdb.json", db)
        back = load_refdb(Path(d) / "refdb.json")
    assert (back.dataset, back.images, back.expressions) == (db.dataset, db.images, db.expressions)
    assert set(back.by_sent) == {e["sent_id"] for e in db.expressions}


@st.composite
def ctxdbs(draw):
    from sepnms.data.ctxdb import CtxDB

    entries = {}
    for sid in draw(st.lists(st.integers(0, 2**40), max_size=5, unique=True)):
        n = draw(st.integers(0, 3))
        entries[sid] = {
            "ref_ann_ids": draw(st.lists(st.integers(0, 2**40), max_size=2)),
            "ctx_ann_ids": draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)),
            "ctx_boxes": [draw(st.lists(st.floats(-1e5, 1e5), min_size=4, max_size=4)) for _ in range(n)],
            "scores": {"glove_sim": draw(st.dictionaries(st.integers(0, 10**6).map(str), st.floats(-1, 1), max_size=3)),
                       "nouns": draw(st.lists(TEXT, max_size=3))},
        }
    params = {"sim_threshold": draw(st.floats(0, 1)), "referent_iou": draw(st.floats(0, 1))}
    return CtxDB(draw(st.sampled_from(["glove", "clip", "mentions"])), entries, params)


@IO_SETTINGS
@given(ctxdbs())
def test_ctxdb_roundtrip(db):
    from sepnms.data.ctxdb import load_ctxdb, save_ctxdb

    with tempfile.TemporaryDirectory() as d:
        save_ctxdb(Path(d) / "ctxdb_x.json", db)
        back = load_ctxdb(Path(d) / "ctxdb_x.json")
    assert (back.source, back.entries, back.params) == (db.source, db.entries, db.params)
    for sid, e in db.entries.items():
        np.testing.assert_array_equal(back.ctx_boxes(sid), np.asarray(e["ctx_boxes"], np.float32).reshape(-1, 4))


@st.composite
def pools(draw):
    from sepnms.data.candidates import Candidates

    out = {}
    for iid in draw(st.lists(st.integers(0, 2**40), max_size=4, unique=True)):
        m = draw(st.integers(0, 6))
        out[iid] = Candidates(iid, draw(hnp.arrays(np.float32, (m, 4), elements=F32)),
                              draw(hnp.arrays(np.int32, (m,), elements=st.integers(1, 80))),
                              draw(hnp.arrays(np.float32, (m,), elements=st.floats(0, 1, width=32))),
                              draw(st.floats(0, 1)))
    return out


@IO_SETTINGS
@given(pools())
def test_candidates_roundtrip(pools_):
    from sepnms.data.candidates import CandidateStore, save_candidates

    with tempfile.TemporaryDirectory() as d:
        save_candidates(Path(d) / "candidates.h5", pools_)
        store = CandidateStore(Path(d) / "candidates.h5")
        try:
            assert store.image_ids() == sorted(pools_)
            for iid, c in pools_.items():
                b = store.get(iid)
                assert b.image_id == iid and b.threshold == c.threshold
                np.testing.assert_array_equal(b.box.reshape(-1, 4), c.box)
                np.testing.assert_array_equal(b.cls_idx, c.cls_idx)
                np.testing.assert_array_equal(b.det_score, c.det_score)
                assert (b.box.dtype, b.cls_idx.dtype, b.det_score.dtype) == (np.float32, np.int32, np.float32)
        finally:
            store.close()


@IO_SETTINGS
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8), max_size=8, unique=True),
       st.integers(1, 5), st.data())
def test_vocab_roundtrip(words, dim, data):
    from sepnms.text.vocab import UNK, Vocab, load_vocab, save_vocab

    words = [UNK] + [w for w in words if w != UNK]
    matrix = data.draw(hnp.arrays(np.float32, (len(words), dim), elements=F32))
    with tempfile.TemporaryDirectory() as d:
        save_vocab(Path(d), Vocab(words), matrix)
        vocab, back = load_vocab(Path(d))
    assert vocab.words == words
    np.testing.assert_array_equal(back, matrix)
    assert vocab.encode(words + ["\x00never-a-word"]) == list(range(len(words))) + [0]


@IO_SETTINGS
@given(st.integers(0, 2**40), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.data())
def test_head_feats_roundtrip(iid, c, h, w, data):
    from sepnms.io.head_feats import check_head_layout, read_head, write_head

    head = data.draw(hnp.arrays(np.float32, (1, c, h, w), elements=F32))
    im_info = [data.draw(st.floats(1, 2000, width=32)), data.draw(st.floats(1, 2000, width=32)),
               data.draw(st.floats(0.015625, 10, width=32))]
    with tempfile.TemporaryDirectory() as d:
        write_head(d, iid, head, im_info)
        check_head_layout(d, iid, expect_channels=c)
        back, info = read_head(d, iid, expect_channels=c)
    np.testing.assert_array_equal(back, head)
    np.testing.assert_array_equal(info, np.asarray(im_info, np.float32))


@IO_SETTINGS
@given(st.lists(st.integers(0, 2**40), max_size=6, unique=True), st.integers(1, 8), st.data())
def test_sentence_vectors_roundtrip(sent_ids, dim, data):
    from sepnms.text.sentence_encoder import load_vectors, save_vectors

    vecs = data.draw(hnp.arrays(np.float32, (len(sent_ids), dim), elements=F32))
    with tempfile.TemporaryDirectory() as d:
        save_vectors(Path(d) / "v.h5", sent_ids, vecs, {"encoder": "x", "max_length": 10})
        back = load_vectors(Path(d) / "v.h5", expect_dim=dim if sent_ids else None)
    assert sorted(back) == sorted(sent_ids)
    for i, sid in enumerate(sent_ids):
        np.testing.assert_array_equal(back[sid], vecs[i])


@st.composite
def instances(draw):
    iids = draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=4, unique=True))
    images = [{"id": i, "file_name": draw(TEXT), "height": draw(st.integers(1, 5000)),
               "width": draw(st.integers(1, 5000))} for i in iids]
    anns = [{"id": a, "image_id": draw(st.sampled_from(iids)), "category_id": draw(st.integers(1, 90)),
             "bbox": draw(st.lists(st.floats(0, 1e4), min_size=4, max_size=4)), "area": draw(st.floats(0, 1e8)),
             "iscrowd": draw(st.integers(0, 1)), "segmentation": draw(st.lists(st.lists(st.floats(0, 1e4), max_size=6), max_size=2))}
            for a in draw(st.lists(st.integers(0, 2**40), max_size=5, unique=True))]
    cats = [{"id": c, "name": draw(TEXT), "supercategory": draw(TEXT)}
            for c in draw(st.lists(st.integers(1, 90), max_size=4, unique=True))]
    return {"images": images, "annotations": anns, "categories": cats}


@IO_SETTINGS
@given(instances())
def test_instances_and_data_json_roundtrip(inst):
    from sepnms.io.mattnet_data import image_sizes, load_data_json, write_data_json
    from sepnms.io.refer import load_instances, write_instances

    data = {"images": [{"image_id": i["id"], "file_name": i["file_name"], "width": i["width"], "height": i["height"]}
                       for i in inst["images"]], "refs": [], "word_to_ix": {"a": 1}}
    with tempfile.TemporaryDirectory() as d:
        write_instances(Path(d) / "instances.json", inst)
        write_data_json(Path(d) / "data.json", data)
        assert load_instances(Path(d) / "instances.json") == inst
        back = load_data_json(Path(d) / "data.json")
    assert back == data
    assert image_sizes(back) == {i["id"]: (i["width"], i["height"]) for i in inst["images"]}
