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
