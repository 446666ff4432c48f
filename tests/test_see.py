"""See it: one-image inference (Predictor, ``sepnms predict``), qualitative figures (``sepnms show``)
and the static gallery (``sepnms gallery``), on the session's trained tiny world."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY


@pytest.fixture(scope="module")
def evaluated(prepared, trained, tmp_path_factory):
    """The trained tiny workdir after propose (sepnms), fuse (det, sepnms) and evaluate.
    Returns (config, path of a config.yaml pointing at it)."""
    from sepnms.config import save_config
    from sepnms.engine.evaluate import STANDARD_METHODS, evaluate, fuse
    from sepnms.engine.propose import propose

    root = tmp_path_factory.mktemp("see")
    work = root / "work"
    shutil.copytree(trained, work)
    cfg = prepared.model_copy(update={"workdir": work}, deep=True)
    propose(cfg, "sepnms", progress=False)
    methods = [m for m in STANDARD_METHODS if m.name in ("det", "sepnms")]
    for m in methods:
        fuse(cfg, m)
    evaluate(cfg, [m.name for m in methods], progress=False)
    save_config(cfg, root / "config.yaml")
    return cfg, root / "config.yaml"


def _cli(capsys, *argv):
    from sepnms.cli import main

    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------
# Predictor


def test_predictor_scores_equal_the_proposal_table(evaluated):
    from sepnms import Predictor
    from sepnms.data.refdb import load_refdb
    from sepnms.io.proposals import proposals_path, read_proposals

    cfg, _ = evaluated
    table = read_proposals(proposals_path(cfg.workdir, "sepnms", "val")).by_sent_id()
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    pred = Predictor.from_config(cfg)
    checked = 0
    for e in refdb.split("val")[:4]:
        row = table[int(e["sent_id"])]
        got = pred.score(e["image_id"], e["sent"])
        assert np.array_equal(got.box, row.box) and np.array_equal(got.cls_idx, row.cls_idx)
        for col in ("ref_score", "ctx_score"):
            np.testing.assert_allclose(got.scores[col], row.scores[col], atol=1e-6, rtol=0)
        # the list of Proposals carries the same numbers, by descending fused score
        props = pred.predict(e["image_id"], e["sent"])
        assert len(props) == len(row)
        fused = [p.fused_score for p in props]
        assert fused == sorted(fused, reverse=True)
        by_box = {tuple(np.float32(v) for v in p.box) + (p.cls_idx,): p for p in props}
        for i in range(len(row)):
            p = by_box[tuple(row.box[i]) + (int(row.cls_idx[i]),)]
            assert abs(p.ctx_score - float(row.scores["ctx_score"][i])) <= 1e-6
            assert abs(p.ref_score - float(row.scores["ref_score"][i])) <= 1e-6
        assert props[0].kept and sum(p.kept for p in props) >= 1
        checked += 1
    assert checked == 4


def test_predictor_kept_matches_the_fused_table_at_the_chosen_conf(evaluated):
    """kept = class-wise NMS survivors selected at evaluate's conf: the same boxes the fused
    table keeps at that conf."""
    from sepnms import Predictor
    from sepnms.data.refdb import load_refdb
    from sepnms.engine.evaluate import fused_path
    from sepnms.evaluation.metrics import select_by_conf
    from sepnms.io.proposals import read_proposals

    cfg, _ = evaluated
    conf = json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())["sepnms"]["val"]["conf"]
    fused = read_proposals(fused_path(cfg, "sepnms", "val")).by_sent_id()
    pred = Predictor.from_config(cfg)
    assert pred.conf == conf
    for e in load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json").split("val")[:3]:
        row = fused[int(e["sent_id"])]
        want = {tuple(map(float, row.box[i])) for i in select_by_conf(row.scores["score"], conf)}
        got = {p.box for p in pred.predict(e["image_id"], e["sent"]) if p.kept}
        assert got == want


def test_predictor_unknown_words_still_get_proposals(evaluated):
    from sepnms import Predictor

    cfg, _ = evaluated
    pred = Predictor.from_config(cfg)
    iid = sorted(pred.ws.refdb.images)[0]
    assert pred.ws.vocab.encode(["zqxv", "blorf"]) == [0, 0]
    props = pred.predict(iid, "zqxv blorf!")
    assert len(props) == len(pred.ws.candidates.get(iid)) > 0
    assert all(np.isfinite(p.fused_score) for p in props) and any(p.kept for p in props)


def test_predictor_from_workdir_reads_the_checkpoint_config(evaluated):
    from sepnms import Predictor

    cfg, _ = evaluated
    pred = Predictor.from_workdir(cfg.workdir)
    assert Path(pred.cfg.workdir) == Path(cfg.workdir).resolve()
    iid = sorted(pred.ws.refdb.images)[1]
    assert pred.predict(iid, "the red ring")


def test_predict_cli_prints_kept_proposals_and_refuses_unknown_images(evaluated, capsys):
    cfg, config = evaluated
    iid = sorted(json.loads((Path(cfg.workdir) / "prepare" / "refdb.json").read_text())["images"], key=int)[0]
    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", iid, "--expr", "the ring on the left", "-q")
    assert rc == 0, err
    result = json.loads(out)
    assert result["image_id"] == int(iid) and result["proposals"]
    assert all(p["kept"] for p in result["proposals"])
    assert set(result["proposals"][0]) >= {"box", "category", "det_score", "ref_score", "ctx_score", "fused_score"}

    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", "987654321", "--expr", "the ring", "-q")
    assert rc == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "image id 987654321 is not in the dataset" in err

    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", str(config), "--expr", "the ring", "-q")
    assert rc == 2 and "detector" in err and len(err.strip().splitlines()) == 1
