"""The pipeline on a tiny world: prepare outputs, training resume, shared vs reference propose,
fusion/evaluation files, and the whole demo end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from conftest import TINY


def _copy_workdir(cfg, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(cfg.workdir, dst)
    return cfg.model_copy(update={"workdir": dst})


def test_prepare_outputs(prepared):
    from sepnms.data.candidates import CandidateStore
    from sepnms.data.refdb import load_refdb

    work = Path(prepared.workdir) / "prepare"
    summary = json.loads((work / "summary.json").read_text())
    refdb = load_refdb(work / "refdb.json")
    assert summary["expressions"] == len(refdb.expressions) > 0
    assert set(summary["expressions_per_split"]) == {"train", "val", "testA", "testB"}
    store = CandidateStore(work / "candidates.h5")
    for iid, img in refdb.images.items():
        pool = store.get(iid)
        need = prepared.prepare.min_candidates_train if img["split"] == "train" else prepared.prepare.min_candidates_test
        assert len(pool) >= need
        assert (pool.det_score > 0).all() and pool.cls_idx.min() >= 1 and pool.cls_idx.max() <= 80


def test_glove_ctxdb_against_world_mentions(prepared, tiny_world):
    """The GloVe/spaCy rule recovers the mentioned objects (recall) and adds same-noun ones."""
    from sepnms.data.ctxdb import ctxdb_path, load_ctxdb, mention_precision_recall
    from sepnms.world import load_mentions

    q = mention_precision_recall(load_ctxdb(ctxdb_path(prepared.workdir, "glove")), load_mentions(tiny_world / "mentions.json"))
    print(f"GloVe ctxdb vs mentions: precision {q['precision']:.3f} recall {q['recall']:.3f}")
    assert q["tp"] > 0
    assert q["recall"] > 0.8


def test_training_resumes_to_the_same_result(prepared, tmp_path):
    from sepnms.engine.checkpoint import load_checkpoint
    from sepnms.engine.train import train
    from sepnms.workdir import model_dir

    a = _copy_workdir(prepared, tmp_path, "a")
    b = _copy_workdir(prepared, tmp_path, "b")
    full = train(a, "sepnms", resume=False, progress=False)
    part = train(b, "sepnms", resume=False, progress=False, stop_after_steps=4)
    assert part["interrupted"] and part["step"] == 4
    resumed = train(b, "sepnms", resume=True, progress=False)
    assert resumed["steps"] == full["steps"] > 4
    assert resumed["best_val_loss"] == full["best_val_loss"]
    sa = load_checkpoint(model_dir(a, "sepnms") / "last.pt")["model"]
    sb = load_checkpoint(model_dir(b, "sepnms") / "last.pt")["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_shared_propose_equals_per_expression_reference(prepared, tmp_path):
    from sepnms.engine.propose import propose
    from sepnms.engine.train import train
    from sepnms.io.proposals import read_proposals

    cfg = _copy_workdir(prepared, tmp_path, "p")
    train(cfg, "sepnms", resume=False, progress=False)
    shared = read_proposals(propose(cfg, "sepnms", ["val"], progress=False)["val"])
    ref = read_proposals(propose(cfg, "sepnms", ["val"], progress=False, reference=True)["val"])
    assert [e.sent_id for e in shared] == [e.sent_id for e in ref] and len(shared) > 0
    worst = 0.0
    for a, b in zip(shared, ref):
        assert np.array_equal(a.box, b.box)
        for col in ("ref_score", "ctx_score"):
            worst = max(worst, float(np.abs(a.scores[col] - b.scores[col]).max()))
    assert worst <= 1e-5


def test_demo_end_to_end(tmp_path):
    """The demo command's whole pipeline at a tiny size: files, schema, report."""
    from sepnms.cli import main

    rc = main(["demo", "--workdir", str(tmp_path / "demo"), "--quiet", *sum((["--set", o] for o in TINY), [])])
    assert rc == 0
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    first = {"det", "refnms", "sepnms", "sepnms_clipctx", "sepnms_clipctx_clipfuse"}
    methods = first | {f"{m}@mattnet_dets" for m in first} | {"mattnet_dets"}
    second = {"downstream_accuracy", "downstream_accuracy_ci", "downstream_n"}
    assert set(metrics) == methods | {"gt"}
    assert set(metrics["gt"]) == {"val", "testA", "testB"}
    assert all(set(m) == second for m in metrics["gt"].values())
    for name in methods | {"gt"}:
        for m in metrics[name].values():
            lo, hi = m["downstream_accuracy_ci"]
            assert 0.0 <= lo <= m["downstream_accuracy"] <= hi <= 1.0 and m["downstream_n"] > 0
    for name in methods:
        assert set(metrics[name]) == {"val", "testA", "testB"}
        for split, m in metrics[name].items():
            assert set(m) == {"hit_rate", "proposals_per_expression", "top1_accuracy", "ctx_recall", "conf",
                              "hit_rate_ci", "top1_accuracy_ci", "ctx_recall_ci", "n_expressions"} | second
            for rate in ("hit_rate", "top1_accuracy"):
                low, high = m[f"{rate}_ci"]
                assert low <= m[rate] <= high
            assert 0.0 <= m["hit_rate"] <= 1.0 and 0.0 <= m["top1_accuracy"] <= m["hit_rate"] + 1e-9
            assert m["proposals_per_expression"] >= 1.0
    for split, m in metrics["mattnet_dets"].items():  # every first stage at MAttNet's number of candidates
        for name in first:
            assert abs(metrics[f"{name}@mattnet_dets"][split]["proposals_per_expression"]
                       - m["proposals_per_expression"]) <= 0.1
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "## Equal budget" in report and "| sepnms@mattnet_dets - mattnet_dets |" in report
    assert "## Training: validation curves" in report and (tmp_path / "demo" / "validation_curves.png").is_file()
    assert "Ablation" in report and "sepnms_clipctx_clipfuse" in report and "Two-stage results" in report
    assert "## Paired differences" in report and "| sepnms - refnms |" in report and "| sepnms - det |" in report
    assert (tmp_path / "demo" / "hit_rate_vs_proposals.png").is_file()
    dets = list((tmp_path / "demo" / "work" / "export").glob("matt_dets_sepnms_*.json"))
    assert len(dets) == 1
    entries = json.loads(dets[0].read_text())
    assert entries and set(entries[0]) == {"det_id", "h5_id", "ref_id", "sent_id", "image_id", "box",
                                           "category_id", "category_name", "split", "fin_score"}

    # <demo>/config.yaml points at the demo's world and workdir: later commands need nothing else
    from sepnms.config import load_config

    demo = tmp_path / "demo"
    cfg = load_config(demo / "config.yaml")
    assert cfg.workdir == (demo / "work").resolve() and cfg.paths.refer_root == (demo / "world" / "refer").resolve()
    assert "work/gallery/index.html" in report and (demo / "work" / "gallery" / "index.html").is_file()
    # the demo's `show --select disagree` figures, linked from the report and from their gallery cards
    figures = sorted((demo / "work" / "show").rglob("*.png"))
    assert 0 < len(figures) <= cfg.show.demo_n * len(cfg.evaluate.splits)
    assert all(str(f.relative_to(demo)) in report for f in figures)
    from _gallery import read_page

    data = read_page((demo / "work" / "gallery" / "index.html").read_text())["data"]
    linked = {(data["splits"][c["p"]], c["s"]) for c in data["cards"] if "f" in c}
    assert linked == {(f.parent.name, int(f.stem)) for f in figures}
    # every method evaluate scored is in the gallery (the ablation rows too), with the second stage's outcome
    names = [m["name"] for m in data["methods"]]
    # mattnet_dets has no fused table: a row of the gallery's metrics table, not cards
    assert methods - {"mattnet_dets"} <= set(names) and any(n.startswith("ablation_") for n in names)
    assert all(m["second_stage"] for m in data["methods"] if m["name"] in methods)
    moved = tmp_path / "moved"
    shutil.move(demo, moved)  # relative paths: the folder can move
    sid = int(entries[0]["sent_id"])
    assert main(["show", "-c", str(moved / "config.yaml"), "--ids", str(sid), "-q"]) == 0
    assert any((moved / "work" / "show").rglob(f"{sid}.png"))
    assert main(["predict", "-c", str(moved / "config.yaml"), "--image", str(entries[0]["image_id"]),
                 "--expr", "the ring", "-q"]) == 0
