"""The shared bootstrap intervals (evaluation.stats) and MAttNet's per-image detection rule (detection.dets)."""
import numpy as np
import pytest

from sepnms.detection.dets import mattnet_detections
from sepnms.evaluation.stats import bootstrap_ci, paired_difference_ci


def test_bootstrap_ci_brackets_mean_and_matches_binomial_width():
    rng = np.random.default_rng(1)
    hits = (rng.random(400) < 0.35).astype(float)
    low, high = bootstrap_ci(hits, seed=0)
    assert low < hits.mean() < high
    half = 1.96 * np.sqrt(hits.mean() * (1 - hits.mean()) / hits.size)  # normal approximation
    assert abs((high - low) / 2 - half) < 0.01
    assert bootstrap_ci(hits, seed=0) == (low, high)  # fixed seed -> same interval
    assert bootstrap_ci([]) is None


def test_paired_difference_uses_pairing():
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.5).astype(float)
    b = a.copy()
    b[:15] = 1 - b[:15]  # differ on 15 items only
    d = paired_difference_ci(a, b, seed=0)
    assert d["low"] <= d["diff"] <= d["high"]
    assert d["high"] - d["low"] < 0.1  # an unpaired interval would be about 0.16 wide
    assert paired_difference_ci(a, a)["low"] == 0.0 == paired_difference_ci(a, a)["high"]
    with pytest.raises(ValueError):
        paired_difference_ci(a, b[:-1])


def _scene():
    boxes = np.zeros((4, 3, 4), np.float32)
    scores = np.zeros((4, 3), np.float32)
    boxes[0, 1] = [0, 0, 10, 10]; scores[0, 1] = 0.9
    boxes[1, 1] = [1, 1, 10, 10]; scores[1, 1] = 0.8      # IoU 0.81 with row 0: suppressed
    boxes[2, 1] = [20, 20, 30, 30]; scores[2, 1] = 0.65   # exactly at the threshold: kept
    boxes[3, 2] = [0, 0, 10, 10]; scores[3, 2] = 0.649    # just below: dropped
    return boxes, scores


def test_mattnet_detections_threshold_and_nms():
    dets = mattnet_detections(*_scene())
    assert [(d.class_index, d.score) for d in dets] == [(1, pytest.approx(0.9)), (1, pytest.approx(0.65))]


def test_mattnet_detections_lowers_threshold_until_one_survives():
    boxes, scores = _scene()
    scores[:, 1] = 0.0
    dets = mattnet_detections(boxes, scores)
    assert [d.class_index for d in dets] == [2]  # 0.649 >= 0.55 after one step down


def test_mattnet_detections_come_class_by_class_not_by_score():
    """run_detect.py lists cls_to_dets class by class, each class's boxes in NMS order: a higher
    score in class 2 does not move it before class 1."""
    boxes, scores = _scene()
    boxes[3, 2] = [40, 40, 50, 50]
    scores[3, 2] = 0.95
    dets = mattnet_detections(boxes, scores)
    assert [(d.class_index, round(d.score, 3)) for d in dets] == [(1, 0.9), (1, 0.65), (2, 0.95)]
    dets = mattnet_detections(boxes, scores, class_order=[2, 1])
    assert [(d.class_index, round(d.score, 3)) for d in dets] == [(2, 0.95), (1, 0.9), (1, 0.65)]
    with pytest.raises(ValueError, match="class_order"):
        mattnet_detections(boxes, scores, class_order=[1, 1])


def test_py2_dict_order_is_cpython_27s():
    """Expected orders printed by CPython 2.7.18 (64-bit): ``d = {}; for k in keys: d[k] = 1;
    print d.keys()`` over the 80 COCO class names (ascending category id, as json.load gives them:
    unicode) and over 20 COCO-like image ids."""
    from sepnms.detection.py2_order import py2_dict_order, py2_hash
    from sepnms.world.content import COCO_CATEGORIES

    names = [n for _, n, _ in sorted(COCO_CATEGORIES)]
    want = ["toilet", "teddy bear", "cup", "bicycle", "kite", "carrot", "stop sign", "tennis racket", "donut",
            "snowboard", "sandwich", "motorcycle", "oven", "keyboard", "scissors", "airplane", "couch", "mouse",
            "fire hydrant", "boat", "apple", "sheep", "horse", "banana", "baseball glove", "tv", "traffic light",
            "chair", "bowl", "microwave", "bench", "book", "elephant", "orange", "tie", "clock", "bird", "knife",
            "pizza", "fork", "hair drier", "frisbee", "umbrella", "bottle", "bus", "bear", "vase", "toothbrush",
            "spoon", "train", "sink", "potted plant", "handbag", "cell phone", "toaster", "broccoli", "refrigerator",
            "laptop", "remote", "surfboard", "cow", "dining table", "hot dog", "car", "sports ball", "skateboard",
            "dog", "bed", "cat", "person", "skis", "giraffe", "truck", "parking meter", "suitcase", "cake",
            "wine glass", "baseball bat", "backpack", "zebra"]
    assert py2_dict_order(names) == want
    ids = [9, 25, 30, 34, 36, 42, 49, 61, 64, 71, 72, 73, 74, 77, 78, 81, 86, 89, 92, 94]
    assert py2_dict_order(ids) == [64, 34, 36, 81, 71, 72, 9, 42, 77, 78, 89, 49, 74, 94, 86, 73, 25, 92, 61, 30]
    assert py2_hash(-1) == -2 and py2_hash("") == 0
    assert py2_hash("person") == -3284273795594775055 and py2_hash("a") == 12416037344  # CPython 2.7's hash()
