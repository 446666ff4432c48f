"""``sepnms evaluate --dets``: first-stage metrics of MAttNet-style detection files (released files,
Ref-NMS's exporter output without scores, our export), and the export's naming."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from sepnms.errors import InputError
from sepnms.evaluation.released import evaluate_dets, group_by_expression
from sepnms.io.mattnet_dets import read_dets

SETS = sum((["--set", o] for o in TINY), [])


def _entry(sent_id, box, split="val", **extra):
    return {"det_id": 0, "h5_id": 0, "ref_id": 1, "sent_id": sent_id, "image_id": 5, "box": box,
            "category_id": 1, "category_name": "person", "split": split, **extra}


def test_refnms_exporter_output_without_scores_is_read(tmp_path, caplog):
    path = tmp_path / "matt_dets_att_vanilla_0101_refcoco_unc_0.json"
    path.write_text(json.dumps([_entry(1, [10, 20, 30, 40]), _entry(1, [0, 0, 5, 5]), _entry(2, [1, 1, 1, 1])]))
    with caplog.at_level(logging.INFO, logger="sepnms.io.mattnet_dets"):
        dets = read_dets(path)
    assert [d["box_xyxy"] for d in dets] == [[10, 20, 40, 60], [0, 0, 5, 5], [1, 1, 2, 2]]  # w = x2 - x1
    assert any(path.name in r.getMessage() and "Ref-NMS exporter" in r.getMessage() and "order written" in r.getMessage()
               for r in caplog.records)
    # ranked as written (no score to sort by)
    by_sent = group_by_expression(dets, path, {1: "val", 2: "val"})
    assert [d["box_xyxy"] for d in by_sent[1]] == [[10, 20, 40, 60], [0, 0, 5, 5]]


def test_scored_entries_are_ranked_by_score(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([_entry(1, [0, 0, 5, 5], fin_score=0.2), _entry(1, [10, 20, 30, 40], fin_score=0.9),
                                _entry(1, [3, 3, 1, 1], fin_score=0.2)]))
    by_sent = group_by_expression(read_dets(path), path, {1: "val"})
    assert [d["fin_score"] for d in by_sent[1]] == [0.9, 0.2, 0.2]
    assert by_sent[1][1]["box"] == [0, 0, 5, 5]  # ties keep the order written


def test_metrics_of_a_file_by_hand():
    # 3 expressions in the split; sent 3 is absent from the file (0 proposals, a miss)
    gt = {1: np.array([0, 0, 10, 10.0]), 2: np.array([50, 50, 60, 60.0]), 3: np.array([0, 0, 1, 1.0])}
    ctx = {1: np.array([[20, 20, 30, 30.0], [40, 40, 41, 41.0]]), 2: np.zeros((0, 4))}
    by_sent = {
        1: [{"box_xyxy": [20, 20, 30, 30]}, {"box_xyxy": [0, 0, 10, 9]}],           # top-1 misses, 2nd hits (IoU .9)
        2: [{"box_xyxy": [50, 50, 60, 60]}, {"box_xyxy": [0, 0, 1, 1]}, {"box_xyxy": [5, 5, 6, 6]}],  # top-1 hits
    }
    m = evaluate_dets(by_sent, gt, ctx)
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["top1_accuracy"] == pytest.approx(1 / 3)
    assert m["proposals_per_expression"] == pytest.approx(5 / 3)
    assert m["ctx_recall"] == pytest.approx(1 / 2)  # only sent 1 has context: 1 of its 2 boxes covered
    assert m["n_expressions"] == 3 and np.isnan(m["conf"])


@pytest.mark.parametrize("entry, problem", [
    (_entry(99, [0, 0, 1, 1]), "sent_id 99 is no expression of this dataset"),
    (_entry(1, [0, 0, 1, 1], split="testB"), "in split 'val' here, the file says 'testB'"),
    ({"image_id": 5, "box": [0, 0, 1, 1], "score": 0.9}, "no integer 'sent_id'"),
])
def test_a_file_of_another_dataset_is_refused(tmp_path, entry, problem):
    path = tmp_path / "other.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(InputError, match=problem) as info:
        group_by_expression(read_dets(path), path, {1: "val"})
    assert "other.json" in str(info.value)


# ---------------------------------------------------------------------------------------
# end to end on the tiny world: export, then evaluate --dets on that file


@pytest.fixture(scope="module")
def fused(evaluated_workdir, tmp_path_factory):
    return evaluated_workdir(tmp_path_factory.mktemp("dets") / "work")


def _cli(capsys, tiny_world, work, *argv):
    from sepnms.cli import main

    capsys.readouterr()
    rc = main([argv[0], "--config", str(tiny_world / "config.yaml"), "--set", f"workdir={work}", "--quiet", *SETS,
               *argv[1:]])
    out, err = capsys.readouterr()
    return rc, out, err


KEYS = ("hit_rate", "proposals_per_expression", "top1_accuracy", "ctx_recall", "n_expressions",
        "hit_rate_ci", "top1_accuracy_ci", "ctx_recall_ci")  # same outcomes, same order: same intervals


def test_export_then_evaluate_dets_gives_evaluates_numbers(fused, tiny_world, tmp_path, capsys, caplog):
    work = Path(fused.workdir)
    before = json.loads((work / "eval" / "metrics.json").read_text())
    rc, out, err = _cli(capsys, tiny_world, work, "export", "--method", "sepnms")
    assert rc == 0, err
    (path,) = map(Path, json.loads(out))
    assert path.name == f"matt_dets_sepnms_sepnms_{fused.dataset}_{fused.split_by}_0.json"  # conf-selected: _0
    # the same file as Ref-NMS's exporter writes it: no score field, ranked as written
    unscored = tmp_path / "matt_dets_refnms_style_0.json"
    unscored.write_text(json.dumps([{k: v for k, v in d.items() if k != "fin_score"} for d in json.loads(path.read_text())]))

    with caplog.at_level(logging.INFO, logger="sepnms"):
        rc, out, err = _cli(capsys, tiny_world, work, "evaluate", "--dets", str(path), "--dets", str(unscored))
    assert rc == 0, err
    said = [r.getMessage() for r in caplog.records if "Ref-NMS exporter" in r.getMessage()]
    assert len(said) == 1 and unscored.name in said[0]                 # the log line says how it was read
    after = json.loads((work / "eval" / "metrics.json").read_text())
    assert set(json.loads(out)) == set(after) == {"det", "sepnms", path.stem, unscored.stem, "mattnet_dets",
                                                  "det@mattnet_dets", "sepnms@mattnet_dets"}
    for split in fused.evaluate.splits:
        ours = before["sepnms"][split]
        assert ours["n_expressions"] > 0 and ours["proposals_per_expression"] > 1
        for name in (path.stem, unscored.stem):
            assert {k: after[name][split][k] for k in KEYS} == {k: ours[k] for k in KEYS}, (name, split)
            assert after[name][split]["conf"] is None
        assert after["sepnms"][split] == ours and after["det"][split] == before["det"][split]  # one table


def test_fixed_top_n_export_keeps_n(fused, tiny_world, capsys):
    from sepnms.data.refdb import load_refdb

    work = Path(fused.workdir)
    rc, out, err = _cli(capsys, tiny_world, work, "export", "--method", "sepnms", "--top-n", "3", "--splits", "val")
    assert rc == 0, err
    (path,) = map(Path, json.loads(out))
    assert path.name.endswith("_3.json")
    dets = json.loads(path.read_text())
    counts = {}
    for d in dets:
        counts[d["sent_id"]] = counts.get(d["sent_id"], 0) + 1
    n_val = len(load_refdb(work / "prepare" / "refdb.json").split("val"))
    assert len(counts) == n_val and max(counts.values()) == 3


def test_evaluate_bad_dets_file_is_one_line_exit_2(fused, tiny_world, tmp_path, capsys):
    from test_bad_inputs import assert_one_clear_error

    work = tmp_path / "work"
    shutil.copytree(fused.workdir, work)
    before = (work / "eval" / "metrics.json").read_bytes()
    bad = tmp_path / "released.json"
    bad.write_text(json.dumps([_entry(123456789, [0, 0, 5, 5])]))
    rc, out, err = _cli(capsys, tiny_world, work, "evaluate", "--dets", str(bad))
    assert_one_clear_error(rc, out, err, "evaluate", bad, "sent_id 123456789 is no expression of this dataset")
    assert (work / "eval" / "metrics.json").read_bytes() == before


def test_evaluate_dets_file_without_an_evaluated_split_is_refused(fused, tiny_world, tmp_path, capsys):
    from sepnms.data.refdb import load_refdb
    from test_bad_inputs import assert_one_clear_error

    work = tmp_path / "work"
    shutil.copytree(fused.workdir, work)
    train = load_refdb(work / "prepare" / "refdb.json").split("train")[0]
    path = tmp_path / "train_only.json"
    path.write_text(json.dumps([_entry(int(train["sent_id"]), [0, 0, 5, 5], split="train")]))
    rc, out, err = _cli(capsys, tiny_world, work, "evaluate", "--dets", str(path))
    assert_one_clear_error(rc, out, err, "evaluate", path, "holds no expression of evaluate.splits")

