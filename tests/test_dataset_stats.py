"""Dataset statistics (``sepnms stats``) on hand-made records."""
from __future__ import annotations

import numpy as np

from sepnms.evaluation.dataset_stats import dataset_statistics, is_relational


def test_relational_word_list():
    assert is_relational("the man to the left of the car".split())
    assert is_relational(["Dog", "NEXT", "to", "cat"])
    assert not is_relational("the red kite on the left".split())
    assert not is_relational(["left"])


def test_statistics_by_hand():
    anns = [{"id": 1, "image_id": 10, "category_id": 5}, {"id": 2, "image_id": 10, "category_id": 5},
            {"id": 3, "image_id": 10, "category_id": 7}, {"id": 4, "image_id": 20, "category_id": 7},
            {"id": 5, "image_id": 99, "category_id": 7}]  # image 99 has no refs: not counted
    refs = [
        {"image_id": 10, "ann_id": 1, "category_id": 5, "sentences": [
            {"sent_id": 0, "tokens": ["left", "dog"]}, {"sent_id": 1, "tokens": ["dog", "near", "cat"]}]},
        {"image_id": 10, "ann_id": 3, "category_id": 7, "sentences": [{"sent_id": 2, "tokens": ["cat"]}]},
        {"image_id": 20, "ann_id": 4, "category_id": 7, "sentences": [{"sent_id": 3, "tokens": ["a", "cat"]}]},
    ]
    scores = {10: np.array([[0.9, 0.06, 0.04] + [0.0] * 78, [0.0, 0.5, 0.5] + [0.0] * 78]),
              20: np.array([[0.95, 0.05, 0.0] + [0.0] * 78])}  # 0.05 is not above the filter
    s = dataset_statistics(refs, anns, scores, 0.05)
    assert s["images"] == 2 and s["objects_per_image"] == 2.0  # (3 + 1) / 2
    assert s["referents_per_image"] == 1.5 and s["expressions_per_referent"] == round(4 / 3, 2)
    assert s["same_category_distractors_per_referent"] == round(1 / 3, 2)  # only ann 1 has one (ann 2)
    assert s["relational_share"] == 0.25 and s["relational_source"] == "word list"
    assert s["candidates_per_image"] == 1.5  # (1 + 2) pairs in image 10, 0 in image 20
    m = {0: {"mentioned_ann_ids": []}, 1: {"mentioned_ann_ids": [3]}, 2: {"mentioned_ann_ids": [1]},
         3: {"mentioned_ann_ids": [3]}}
    assert dataset_statistics(refs, anns, scores, 0.05, m)["relational_share"] == 0.75
