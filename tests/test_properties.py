"""Property tests: what our writers write (and what Python 2 wrote), our readers read back."""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import _py2pickle as py2
from sepnms.io.glove import load_glove, write_glove_text
from sepnms.io.proposals import ExpressionCandidates, ProposalTable, read_proposals, write_proposals
from sepnms.io.refer import load_refs, write_refs
from sepnms.io.rpn import load_rpn, write_rpn

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text without surrogates (not encodable) or NUL (HDF5 strings are NUL-terminated)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


# ---------------------------------------------------------------------------------------
# rpn dicts

IMAGE_IDS = st.integers(min_value=0, max_value=2**40)
# N = 0 included: a zero-row array pickles its data as __builtin__.bytes at protocol 2
ROWS = st.integers(min_value=0, max_value=4)


@st.composite
def rpn_dicts(draw):
    ids = draw(st.lists(IMAGE_IDS, min_size=1, max_size=4, unique=True))
    boxes, scores = {}, {}
    for iid in ids:
        n = draw(ROWS)
        flat = draw(st.booleans())
        shape = (n, 324) if flat else (n, 81, 4)
        boxes[iid] = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32)))
        scores[iid] = draw(hnp.arrays(np.float32, (n, 81), elements=st.floats(0, 1, width=32)))
    return boxes, scores


@SETTINGS
@given(rpn_dicts(), st.sampled_from(["ours", "plain-pickle-2", "python2"]))
def test_rpn_roundtrip(data, writer):
    boxes, scores = data
    with tempfile.TemporaryDirectory() as d:
        bp, sp = Path(d) / "rpn_boxes.pkl", Path(d) / "rpn_box_scores.pkl"
        if writer == "ours":
            write_rpn(bp, sp, boxes, scores)
        elif writer == "plain-pickle-2":
            bp.write_bytes(pickle.dumps(boxes, protocol=2))
            sp.write_bytes(pickle.dumps(scores, protocol=2))
        else:
            bp.write_bytes(py2.dumps(boxes, protocol=2))
            sp.write_bytes(py2.dumps(scores, protocol=0))
        det = load_rpn(bp, sp)
    assert sorted(det.boxes) == sorted(boxes) == sorted(det.scores)
    for iid in boxes:
        b, s = det.get(iid)
        n = scores[iid].shape[0]
        assert b.shape == (n, 81, 4) and s.shape == (n, 81)
        np.testing.assert_array_equal(b.reshape(n, 81 * 4), boxes[iid].reshape(n, 81 * 4))
        np.testing.assert_array_equal(s, scores[iid])


# ---------------------------------------------------------------------------------------
# proposals tables

COLUMNS = st.lists(st.sampled_from(["ref_score", "ctx_score", "clip_score", "score"]), unique=True, max_size=4)


@st.composite
def proposal_tables(draw):
    cols = draw(COLUMNS)
    n_expr = draw(st.integers(0, 4))
    sent_ids = draw(st.lists(st.integers(0, 2**40), min_size=n_expr, max_size=n_expr, unique=True))
    exprs = []
    for sid in sent_ids:
        m = draw(st.integers(0, 5))
        f32 = st.floats(-1e4, 1e4, width=32)
        exprs.append(
            ExpressionCandidates(
                sent_id=sid,
                ref_id=draw(st.integers(0, 2**40)),
                image_id=draw(st.integers(0, 2**40)),
                box=draw(hnp.arrays(np.float32, (m, 4), elements=f32)),
                cls_idx=draw(hnp.arrays(np.int32, (m,), elements=st.integers(1, 80))),
                det_score=draw(hnp.arrays(np.float32, (m,), elements=st.floats(0, 1, width=32))),
                scores={c: draw(hnp.arrays(np.float32, (m,), elements=f32)) for c in cols},
            )
        )
    attrs = draw(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), TEXT, max_size=3))
    split = draw(st.sampled_from(["train", "val", "testA", "testB", "test"]))
    return ProposalTable(split, draw(st.sampled_from(["scored", "fused"])), exprs, attrs)


@SETTINGS
@given(proposal_tables())
def test_proposals_roundtrip(table):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.h5"
        write_proposals(path, table)
        back = read_proposals(path)
    assert (back.split, back.stage, back.attrs) == (table.split, table.stage, table.attrs)
    assert len(back) == len(table)
    for a, b in zip(table, back):
        assert (a.sent_id, a.ref_id, a.image_id) == (b.sent_id, b.ref_id, b.image_id)
        np.testing.assert_array_equal(a.box.reshape(-1, 4), b.box)
        np.testing.assert_array_equal(a.cls_idx, b.cls_idx)
        np.testing.assert_array_equal(a.det_score, b.det_score)
        assert sorted(a.scores) == sorted(b.scores)
        for c in a.scores:
            np.testing.assert_array_equal(a.scores[c], b.scores[c])


# ---------------------------------------------------------------------------------------
# refs lists


@st.composite
def refs_lists(draw, text=TEXT):
    n = draw(st.integers(1, 4))
    sent_ids = iter(draw(st.lists(st.integers(0, 2**31 - 1), min_size=3 * n, max_size=3 * n, unique=True)))
    refs = []
    for i in range(n):
        sents = []
        for _ in range(draw(st.integers(1, 3))):  # refer's refs hold >= 1 sentence (schema-checked)
            tokens = draw(st.lists(text, max_size=4))
            sents.append({"tokens": tokens, "raw": draw(text), "sent": " ".join(tokens), "sent_id": next(sent_ids)})
        refs.append({
            "ref_id": i, "ann_id": draw(st.integers(0, 2**40)), "category_id": draw(st.integers(1, 90)),
            "image_id": draw(st.integers(0, 2**31 - 1)), "file_name": draw(text),
            "split": draw(st.sampled_from(["train", "val", "testA", "testB", "test"])),
            "sent_ids": [s["sent_id"] for s in sents], "sentences": sents,
        })
    return refs


@SETTINGS
@given(refs_lists())
def test_refs_roundtrip_unicode(refs):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "refs(unc).p"
        write_refs(path, refs)
        assert load_refs(path) == refs


LATIN1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=12)


@SETTINGS
@given(refs_lists(text=LATIN1), st.sampled_from([0, 2]))
def test_refs_python2_str_roundtrip(refs, protocol):
    """Refs whose strings are Python 2 ``str`` (latin1 bytes) decode to the same Python 3 text."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "refs(unc).p"
        path.write_bytes(py2.dumps(refs, protocol=protocol))
        assert load_refs(path) == refs


# ---------------------------------------------------------------------------------------
# GloVe text

# words as in GloVe files: no line breaks or control characters; may contain spaces
WORD = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=10)


@SETTINGS
@given(
    st.dictionaries(WORD, st.lists(st.floats(-100, 100), min_size=3, max_size=3), max_size=6),
)
def test_glove_text_roundtrip(vectors):
    # a plain first word (numeric first words are covered by test_io.test_glove_numeric_first_word)
    vectors = {"the": [0.5, -0.5, 0.0], **{w: v for w, v in vectors.items() if w != "the"}}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "glove.txt"
        write_glove_text(path, {w: np.asarray(v) for w, v in vectors.items()})
        back = load_glove(path)
    assert list(back) == list(vectors)
    for w, v in vectors.items():
        np.testing.assert_allclose(back[w], v, rtol=1e-6, atol=1e-6)
