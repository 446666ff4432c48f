"""MAttNet-style detection export and reading both box conventions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sepnms.errors import InputError
from sepnms.evaluation.export import to_matt_dets
from sepnms.io.mattnet_dets import (
    det_score,
    matt_dets_filename,
    read_dets,
    write_matt_dets,
)
from sepnms.io.proposals import ExpressionCandidates, ProposalTable

# COCO's 80 category ids in detector class order (1..80)
COCO_IDS = (
    list(range(1, 12)) + list(range(13, 26)) + [27, 28] + list(range(31, 45)) + list(range(46, 66))
    + [67, 70] + list(range(72, 83)) + list(range(84, 91))
)
CAT_NAMES = {cid: f"cat{cid}" for cid in COCO_IDS}
CAT_NAMES.update({1: "person", 2: "bicycle", 3: "car", 90: "toothbrush"})

KEYS = {"det_id", "h5_id", "ref_id", "sent_id", "image_id", "box", "category_id", "category_name",
        "split", "fin_score"}


def _expr(sent_id, boxes, cls, scores):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    return ExpressionCandidates(
        sent_id, sent_id * 10, sent_id * 100, boxes, np.asarray(cls, np.int32).reshape(n),
        np.full(n, 0.5, np.float32), {"score": np.asarray(scores, np.float32).reshape(n)},
    )


def _table():
    return ProposalTable(
        "testA",
        "fused",
        [
            _expr(1, [[0, 0, 5, 5], [10, 20, 50, 80], [1, 1, 4, 4]], [3, 1, 2], [0.2, 0.9, 0.6]),
            _expr(2, [], [], []),
            _expr(3, [[2.5, 3.5, 12.0, 7.5]], [80], [0.1]),
        ],
    )


def test_coco_ids_are_80():
    assert len(COCO_IDS) == 80 and COCO_IDS[-1] == 90


def test_export_keys_boxes_and_selection():
    dets = to_matt_dets(_table(), None, COCO_IDS, CAT_NAMES, top_n=None, conf=0.5, start_det_id=7)
    # expr 1 keeps 0.9 and 0.6 (0.2 is not > 0.5); expr 2 nothing; expr 3 its top-1 (0.1)
    assert len(dets) == 3
    assert all(set(d) == KEYS for d in dets)
    assert [d["det_id"] for d in dets] == [7, 8, 9]
    assert [d["h5_id"] for d in dets] == [7, 8, 9]
    first = dets[0]
    assert first["box"] == [10.0, 20.0, 40.0, 60.0]  # w = x2 - x1, h = y2 - y1
    assert (first["category_id"], first["category_name"]) == (1, "person")
    assert (first["sent_id"], first["ref_id"], first["image_id"]) == (1, 10, 100)
    assert first["split"] == "testA"
    assert first["fin_score"] == pytest.approx(0.9, abs=1e-6)
    assert dets[1]["box"] == [1.0, 1.0, 3.0, 3.0] and dets[1]["category_id"] == 2
    assert dets[2]["box"] == [2.5, 3.5, 9.5, 4.0]
    assert (dets[2]["category_id"], dets[2]["category_name"]) == (90, "toothbrush")
    json.dumps(dets)  # plain JSON types only


def test_export_top_n_and_refer_info():
    info = {1: {"ref_id": 555, "image_id": 666}, 2: (1, 2), 3: {"ref_id": 7, "image_id": 8}}
    dets = to_matt_dets(_table(), info, COCO_IDS, CAT_NAMES, split="val", top_n=2, conf=None)
    # no conf: every candidate by score, at most 2 per expression
    assert [(d["sent_id"], round(d["fin_score"], 3)) for d in dets] == [(1, 0.9), (1, 0.6), (3, 0.1)]
    assert (dets[0]["ref_id"], dets[0]["image_id"]) == (555, 666)
    assert dets[0]["split"] == "val" and dets[0]["det_id"] == 0
    dets = to_matt_dets(_table(), lambda s: (s + 1, s + 2), COCO_IDS, CAT_NAMES, top_n=1)
    assert [(d["ref_id"], d["image_id"]) for d in dets] == [(2, 3), (4, 5)]
    assert [d["category_id"] for d in dets] == [1, 90]


def test_export_rejects_bad_category_map():
    with pytest.raises(ValueError, match="80"):
        to_matt_dets(_table(), None, COCO_IDS[:79], CAT_NAMES)


def test_filename():
    assert matt_dets_filename("sepnms", "sep", "refcoco", "unc", 10) == "matt_dets_sepnms_sep_refcoco_unc_10.json"


def test_roundtrip_ours(tmp_path):
    dets = to_matt_dets(_table(), None, COCO_IDS, CAT_NAMES, conf=0.5)
    path = tmp_path / "matt_dets.json"
    write_matt_dets(path, dets)
    back = read_dets(path)
    assert back[0]["box_xyxy"] == [10.0, 20.0, 50.0, 80.0]
    assert back[2]["box_xyxy"] == [2.5, 3.5, 12.0, 7.5]
    assert back[0]["box"] == [10.0, 20.0, 40.0, 60.0]
    assert det_score(back[0]) == pytest.approx(0.9, abs=1e-6)


def _mattnet_own(path):
    # MAttNet's detections: w = x2 - x1 + 1, key "score", per image (no sent_id)
    path.write_text(json.dumps([
        {"det_id": 0, "h5_id": 0, "image_id": 100, "category_id": 1, "category_name": "person",
         "box": [10, 20, 41, 61], "score": 0.8},
        {"det_id": 1, "h5_id": 1, "image_id": 100, "category_id": 3, "category_name": "car",
         "box": [0, 0, 1, 1], "score": 0.3},
    ]))


def test_read_mattnet_own_inclusive(tmp_path):
    path = tmp_path / "res101_coco_minus_refer_notime_dets.json"
    _mattnet_own(path)
    dets = read_dets(path)  # detected: inclusive
    assert dets[0]["box_xyxy"] == [10.0, 20.0, 50.0, 80.0]
    assert dets[1]["box_xyxy"] == [0.0, 0.0, 0.0, 0.0]  # a single pixel
    assert det_score(dets[0]) == 0.8
    forced = read_dets(path, inclusive=False)
    assert forced[0]["box_xyxy"] == [10.0, 20.0, 51.0, 81.0]


def test_read_mixed_convention_refused(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([{"box": [0, 0, 1, 1], "score": 1}, {"box": [0, 0, 1, 1], "fin_score": 1}]))
    with pytest.raises(InputError, match="convention") as info:
        read_dets(path)
    assert "mixed.json" in str(info.value)
    assert read_dets(path, inclusive=True)[1]["box_xyxy"] == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("[{", "JSON"),
        (json.dumps({"box": [1, 2, 3, 4]}), "list"),
        (json.dumps([{"fin_score": 1}]), "box"),
        (json.dumps([{"box": [1, 2, "x", 4], "fin_score": 1}]), "box"),
        (json.dumps([3]), "not an object"),
    ],
)
def test_read_malformed(tmp_path, content, problem):
    path = tmp_path / "bad_dets.json"
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as info:
        read_dets(path)
    assert "bad_dets.json" in str(info.value)


def test_read_missing(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_dets(tmp_path / "none.json")
