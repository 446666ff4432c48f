"""Label assignment and the 4 / 21 / 32 RoI sampling quotas on hand-made cases."""
import numpy as np
import pytest

from sepnms.data.candidates import initial_filter
from sepnms.data.sampling import CONTEXT, NEGATIVE, REFERENT, assign_labels, sample_rois


def test_labels_referent_beats_context_and_iou_is_inclusive_at_half():
    ref = np.array([0, 0, 10, 10], np.float32)
    ctx = np.array([[20, 20, 30, 30]], np.float32)
    cands = np.array([
        [0, 0, 10, 10],    # IoU 1 with referent
        [0, 0, 10, 5],     # IoU exactly 0.5 with referent (>= 0.5 -> positive)
        [0, 0, 10, 4.9],   # IoU 0.49 -> negative
        [20, 20, 30, 30],  # context
        [0, 0, 30, 30],    # IoU 100/900 with referent and context -> negative
    ], np.float32)
    labels = assign_labels(cands, ref, ctx, 0.5)
    assert labels.tolist() == [REFERENT, REFERENT, NEGATIVE, CONTEXT, NEGATIVE]


def test_labels_overlap_with_both_is_referent():
    ref = np.array([0, 0, 10, 10], np.float32)
    ctx = np.array([[0, 0, 10, 10]], np.float32)  # same box listed as context
    assert assign_labels(ref[None], ref, ctx).tolist() == [REFERENT]


def _labels(n_ref, n_ctx, n_neg):
    return np.array([REFERENT] * n_ref + [CONTEXT] * n_ctx + [NEGATIVE] * n_neg, np.int8)


@pytest.mark.parametrize("n_ref,n_ctx,n_neg,exp", [
    (10, 30, 100, (4, 17, 11)),  # caps: 4 referent, 21 positives, rest negatives
    (2, 5, 100, (2, 5, 25)),     # few positives: all of them, rest negatives
    (10, 30, 3, (4 + 0, 17 + 8, 3)),  # negatives short: top up with context first
])
def test_quotas(n_ref, n_ctx, n_neg, exp):
    labels = _labels(n_ref, n_ctx, n_neg)
    idx = sample_rois(labels, np.random.default_rng(0), 32, 4, 21)
    got = labels[idx]
    assert len(idx) == 32
    assert ((got == REFERENT).sum(), (got == CONTEXT).sum(), (got == NEGATIVE).sum()) == exp
    assert len(set(idx.tolist())) == 32  # no repeats when the pool is large enough


def test_small_pool_tops_up_with_referent_then_repeats():
    labels = _labels(10, 2, 3)  # 15 candidates < 32
    idx = sample_rois(labels, np.random.default_rng(0), 32, 4, 21)
    assert len(idx) == 32
    first = labels[idx[:15]]
    # 4 ref + 2 ctx + 3 neg, then no context left, so the 6 remaining referents
    assert ((first == REFERENT).sum(), (first == CONTEXT).sum(), (first == NEGATIVE).sum()) == (10, 2, 3)
    assert len(set(idx[:15].tolist())) == 15  # every pool member once, then repeats


def test_sampling_is_deterministic_for_a_seed():
    labels = _labels(6, 30, 100)
    a = sample_rois(labels, np.random.default_rng(3))
    b = sample_rois(labels, np.random.default_rng(3))
    c = sample_rois(labels, np.random.default_rng(4))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_initial_filter_lowers_threshold_until_enough():
    n = 4
    boxes = np.tile(np.arange(4, dtype=np.float32), (n, 81, 1)) + 1
    boxes[..., 2:] += 10
    scores = np.zeros((n, 81), np.float32)
    scores[:, 0] = 1.0
    scores[0, 5] = 0.30   # above 0.05
    scores[1, 7] = 0.04   # needs threshold < 0.04
    scores[2, 7] = 0.032  # needs threshold < 0.032
    pool = initial_filter(boxes, scores, 0.05, 0.005, 1)
    assert len(pool) == 1 and pool.cls_idx.tolist() == [5] and pool.threshold == 0.05
    pool = initial_filter(boxes, scores, 0.05, 0.005, 3)
    # 0.05 -> 0.045 -> 0.040 (0.04 not > 0.04) -> 0.035 -> 0.030: three pairs
    assert len(pool) == 3 and abs(pool.threshold - 0.03) < 1e-9
    assert sorted(pool.det_score.tolist()) == pytest.approx([0.032, 0.04, 0.30])


def test_validation_images_keep_a_training_pool_and_a_test_pool(tmp_path):
    """Validation pools follow the released code: the val loss samples from the pool built with
    the training minimum; propose / evaluation see the test-time pool (a marked subset)."""
    from sepnms.data.candidates import CandidateStore, initial_filter, save_candidates

    n = 6
    boxes = np.tile(np.arange(4, dtype=np.float32) * [1, 1, 2, 2] + [0, 0, 5, 5], (n, 81, 1))
    scores = np.zeros((n, 81))
    scores[:, 3] = [0.5, 0.2, 0.04, 0.03, 0.02, 0.01]  # two above 0.05
    both = initial_filter(boxes, scores, 0.05, 0.005, min_count=4, test_min_count=1)
    assert len(both) == 4 and both.test_pool.tolist() == [True, True, False, False]
    assert len(both.for_test()) == 2 and both.for_test().threshold == 0.05 and both.threshold < 0.035
    single = initial_filter(boxes, scores, 0.05, 0.005, min_count=1)
    assert single.test_pool is None and len(single.for_test()) == 2
    np.testing.assert_array_equal(both.for_test().det_score, single.det_score)
    path = tmp_path / "candidates.h5"
    save_candidates(path, {1: both, 2: single})
    store = CandidateStore(path)
    assert len(store.get(1)) == 2 and len(store.get(1, training=True)) == 4
    assert len(store.get(2)) == len(store.get(2, training=True)) == 2
