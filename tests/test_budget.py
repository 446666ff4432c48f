"""Equal-budget comparison (issue 18, item 5): ``mattnet_dets`` as a first-stage row and every
method ``M`` also as ``M@mattnet_dets``, at MAttNet's number of candidates per expression."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

BUDGET_TOLERANCE = 0.1  # the "within 0.1"


@pytest.fixture(scope="module")
def evaluated(evaluated_workdir, tmp_path_factory):
    return evaluated_workdir(tmp_path_factory.mktemp("budget") / "work")


def _by_hand(cfg, split):
    """Per expression of ``split``: (number of MAttNet detections of its image, hit) - the rule and
    the pickles read directly, IoU by torchvision."""
    from sepnms.data.refdb import load_refdb
    from sepnms.detection.dets import mattnet_detections
    from sepnms.io.rpn import load_rpn

    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    rpn = load_rpn(cfg.paths.rpn_boxes, cfg.paths.rpn_box_scores)
    counts, hits = [], []
    for e in refdb.split(split):
        dets = mattnet_detections(*rpn.get(e["image_id"]))
        counts.append(len(dets))
        boxes = torch.tensor([d.box for d in dets], dtype=torch.float64).reshape(-1, 4)
        iou = box_iou(boxes, torch.tensor([e["gt_box"]], dtype=torch.float64))
        hits.append(float((iou > 0.5).any()))
    return np.array(counts), np.array(hits)


def test_mattnet_dets_row_and_equal_budget_rows(evaluated):
    from sepnms.workdir import fused_path
    from sepnms.evaluation.metrics import select_by_conf
    from sepnms.io.proposals import read_proposals

    metrics = json.loads((Path(evaluated.workdir) / "eval" / "metrics.json").read_text())
    assert {"mattnet_dets", "det@mattnet_dets", "sepnms@mattnet_dets"} <= set(metrics)
    for split in evaluated.evaluate.splits:
        counts, hits = _by_hand(evaluated, split)
        row = metrics["mattnet_dets"][split]
        assert row["n_expressions"] == len(counts)
        assert row["proposals_per_expression"] == pytest.approx(counts.mean())
        assert row["hit_rate"] == pytest.approx(hits.mean())
        assert row["conf"] is None
        lo, hi = row["hit_rate_ci"]
        assert lo <= row["hit_rate"] <= hi
        for m in ("det", "sepnms"):
            at = metrics[f"{m}@mattnet_dets"][split]
            assert abs(at["proposals_per_expression"] - counts.mean()) <= BUDGET_TOLERANCE, (m, split)
            # the recorded conf really keeps that many proposals of the fused table
            table = read_proposals(fused_path(evaluated, m, split))
            kept = [len(select_by_conf(e.scores["score"], at["conf"])) for e in table]
            assert np.mean(kept) == pytest.approx(at["proposals_per_expression"])
            assert at["hit_rate_ci"][0] <= at["hit_rate"] <= at["hit_rate_ci"][1]
            # the budgeted row is a different selection from the row at evaluate.target_proposals
            assert abs(metrics[m][split]["proposals_per_expression"] - evaluated.evaluate.target_proposals) < 1
            assert counts.mean() - evaluated.evaluate.target_proposals > 0.5
    pairs = json.loads((Path(evaluated.workdir) / "eval" / "paired_differences.json").read_text())
    assert set(pairs["sepnms@mattnet_dets - mattnet_dets"]) == set(evaluated.evaluate.splits)


def test_second_stage_candidates_are_the_first_stages(evaluated):
    """``ground eval``'s candidate sets of ``M@mattnet_dets`` and ``mattnet_dets`` hold as many
    candidates per sentence as evaluate's rows (one selection mechanism for both stages)."""
    from sepnms.evaluation.budget import Budgets
    from sepnms.engine.ground.candidates import candidate_sets
    from sepnms.grounding.data import GroundingData

    metrics = json.loads((Path(evaluated.workdir) / "eval" / "metrics.json").read_text())
    data = GroundingData.open(evaluated)
    budgets = Budgets(evaluated)
    for split in evaluated.evaluate.splits:
        for name in ("mattnet_dets", "sepnms@mattnet_dets", "sepnms"):
            sets = candidate_sets(budgets, data, name, split)
            assert len(sets) == metrics[name][split]["n_expressions"]
            mean = np.mean([len(s.boxes) for s in sets.values()])
            assert mean == pytest.approx(metrics[name][split]["proposals_per_expression"]), (name, split)


def test_default_ground_methods_include_the_equal_budget_rows(evaluated):
    from sepnms.engine.ground.evaluate import default_methods

    names = default_methods(evaluated)
    assert names == ["gt", "mattnet_dets", "det", "sepnms", "det@mattnet_dets", "sepnms@mattnet_dets"]
    off = evaluated.model_copy(deep=True)
    off.evaluate.mattnet_dets = False
    assert default_methods(off) == ["gt", "mattnet_dets", "det", "sepnms"]


def test_equal_budget_switched_off(evaluated, tmp_path):
    from sepnms.engine.evaluate import evaluate

    work = tmp_path / "work"
    shutil.copytree(evaluated.workdir, work)
    cfg = evaluated.model_copy(update={"workdir": work}, deep=True)
    cfg.evaluate.mattnet_dets = False
    assert set(evaluate(cfg, progress=False)) == {"det", "sepnms"}


def test_budgeted_name_is_refused_when_its_base_is_unsafe(evaluated):
    from sepnms.evaluation.budget import Budgets, split_method
    from sepnms.engine.ground.candidates import fused_sets
    from sepnms.errors import ConfigError

    assert split_method("sepnms@mattnet_dets") == ("sepnms", True)
    assert split_method("@mattnet_dets") == ("@mattnet_dets", False)
    with pytest.raises(ConfigError):
        fused_sets(Budgets(evaluated), "../x@mattnet_dets", "val")


def test_equal_budget_section_of_the_report(tmp_path):
    from sepnms.evaluation.report import write_report

    row = {"hit_rate": 0.5, "hit_rate_ci": [0.4, 0.6], "proposals_per_expression": 4.7, "top1_accuracy": 0.2,
           "ctx_recall": None, "conf": 0.25, "n_expressions": 10, "downstream_accuracy": 0.3,
           "downstream_accuracy_ci": [0.2, 0.4]}
    metrics = {"sepnms": {"val": {**row, "proposals_per_expression": 3.0}},
               "mattnet_dets": {"val": {**row, "conf": None, "hit_rate": 0.7}},
               "sepnms@mattnet_dets": {"val": row}}
    write_report(tmp_path / "r.md", metrics, ["val"], 3.0)
    text = (tmp_path / "r.md").read_text()
    first, budget = text.split("## Equal budget")
    assert "| sepnms@mattnet_dets |" not in first and "| mattnet_dets | 10 | 70.0 [40.0, 60.0] |" in first
    assert "| sepnms@mattnet_dets | 10 | 50.0 [40.0, 60.0] | 4.70 | 0.25 | 30.0 [20.0, 40.0] |" in budget
    assert "| mattnet_dets | 10 | 70.0 [40.0, 60.0] | 4.70 | - | 30.0 [20.0, 40.0] |" in budget
    assert "| sepnms |" not in budget
