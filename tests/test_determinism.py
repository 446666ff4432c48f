"""Determinism: the same seed and config give the same metrics.json, byte for byte.

The whole demo pipeline (world, prepare, encode-text, CLIP-dagger fine-tuning and labels, three
trainings, propose, fuse, evaluate, export) runs twice in this process at the tiny size of
tests/conftest.py, shortened further (a few training steps) to stay well inside the CI budget.
Both runs use one CPU thread: floating-point sums depend on how work is split over threads, so
the thread count is part of "the same config" (on a 2-core machine one thread is also faster).
"""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY

OVERRIDES = TINY + ["train.max_steps=4", "clip.max_steps=2"]
FIRST = {"det", "refnms", "sepnms", "sepnms_clipctx", "sepnms_clipctx_clipfuse"}
# every method also at the budget of MAttNet's detections, which have first-stage rates too
METHODS = FIRST | {f"{m}@mattnet_dets" for m in FIRST} | {"mattnet_dets"}
SECOND_STAGE_ONLY = {"gt"}  # candidate sets of the second stage only: accuracy, no hit rate


@pytest.mark.slow
def test_same_seed_and_config_give_the_same_metrics_json(tmp_path):
    from sepnms.engine.demo import run_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_demo(tmp_path / "one", 0, OVERRIDES, progress=False)
        run_demo(tmp_path / "two", 0, OVERRIDES, progress=False)
        run_demo(tmp_path / "seed1", 1, OVERRIDES, progress=False)
    finally:
        torch.set_num_threads(threads)
    one = (tmp_path / "one" / "metrics.json").read_bytes()
    two = (tmp_path / "two" / "metrics.json").read_bytes()
    assert one == two
    # a real metrics file, not an empty or constant one: every method and split, numbers ...
    metrics = json.loads(one)
    assert set(metrics) == METHODS | SECOND_STAGE_ONLY
    for name, by_split in metrics.items():
        assert set(by_split) == {"val", "testA", "testB"}
        for m in by_split.values():
            assert 0 <= m["downstream_accuracy"] <= 1
            if name in METHODS:
                assert 0 <= m["hit_rate"] <= 1 and m["proposals_per_expression"] >= 1
    # ... that depends on the seed
    assert (tmp_path / "seed1" / "metrics.json").read_bytes() != one
    # the exported detections (the file a second stage reads) agree as well
    (dets_one,) = (tmp_path / "one" / "work" / "export").glob("matt_dets_*.json")
    (dets_two,) = (tmp_path / "two" / "work" / "export").glob("matt_dets_*.json")
    assert dets_one.name == dets_two.name and dets_one.read_bytes() == dets_two.read_bytes()
