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


# ---------------------------------------------------------------------------------------
# figures and `sepnms show`

GREEN = np.array([0, 255, 0])


def _panel_px(width, height, panel_px=384):
    """The documented layout, recomputed here: panel size of a width x height image."""
    s = panel_px / max(width, height)
    return round(width * s), round(height * s)


def _outline_fraction(png, width, height, box, panel, panel_px=384, title_px=48):
    """Fraction of the positions along the four sides of ``box`` (image pixels) where the figure
    has an exactly green pixel within 2 pixels of the side, in panel ``panel``."""
    from PIL import Image

    arr = np.asarray(Image.open(png).convert("RGB")).astype(int)
    pw, ph = _panel_px(width, height, panel_px)
    left = panel * (pw + 8)
    x0, x1 = left + box[0] * pw / width, left + box[2] * pw / width
    y0, y1 = title_px + box[1] * ph / height, title_px + box[3] * ph / height

    def green(ys, xs):
        return bool((arr[ys, xs] == GREEN).all(-1).any())

    hits = []
    for x in range(int(x0) + 4, int(x1) - 3):
        for y in (y0, y1):
            hits.append(green(slice(max(int(y) - 2, 0), int(y) + 3), x))
    for y in range(int(y0) + 4, int(y1) - 3):
        for x in (x0, x1):
            hits.append(green(y, slice(max(int(x) - 2, 0), int(x) + 3)))
    inside = arr[int(y0) + 6:int(y1) - 6, int(x0) + 6:int(x1) - 6]
    return float(np.mean(hits)), int((inside == GREEN).all(-1).sum())


def test_figure_size_and_dashed_gt_outline(tmp_path):
    from PIL import Image

    from sepnms.evaluation.figures import Panel, draw_expression

    img = np.full((150, 250, 3), 90, np.uint8)
    gt = [40.0, 30.0, 140.0, 110.0]
    props = np.array([[45, 35, 150, 115], [0, 0, 60, 50], [120, 60, 240, 140]], float)
    panels = [Panel("det", props, ["cat", "dog", "cat"], np.array([0.9, 0.5, 0.2]), False),
              Panel("sepnms", props[:1], ["cat"], np.array([0.8]), True)]
    out = draw_expression(img, "the cat on the left", gt, np.array([[120, 60, 240, 140.]]), panels, tmp_path / "f.png")
    pw, ph = _panel_px(250, 150)
    assert Image.open(out).size == (2 * pw + 8, 48 + ph + 22)
    for panel in (0, 1):
        on, inside = _outline_fraction(out, 250, 150, gt, panel)
        assert on > 0.4, on  # dashed: a good share of the outline is exactly the GT colour
        assert inside == 0   # and the inside is not painted
    # an empty drawing fails the same check
    blank = draw_expression(img, "x", None, np.zeros((0, 4)), [Panel("det", np.zeros((0, 4)), [], np.zeros(0))],
                            tmp_path / "blank.png")
    assert _outline_fraction(blank, 250, 150, gt, 0)[0] == 0.0


def _independent_hits(cfg, method, split):
    """sent_id -> hit, computed here from the fused table and metrics.json (IoU by hand)."""
    from sepnms.data.refdb import load_refdb
    from sepnms.engine.evaluate import fused_path
    from sepnms.io.proposals import read_proposals

    conf = json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())[method][split]["conf"]
    gt = {int(e["sent_id"]): e["gt_box"] for e in load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json").split(split)}
    out = {}
    for e in read_proposals(fused_path(cfg, method, split)):
        s = e.scores["score"].astype(np.float64)
        order = np.argsort(-s, kind="stable")
        keep = order[:max(1, int((s > conf).sum()))] if len(s) else order
        g = gt[e.sent_id]
        hit = False
        for b in e.box[keep]:
            iw = max(0.0, min(b[2], g[2]) - max(b[0], g[0]))
            ih = max(0.0, min(b[3], g[3]) - max(b[1], g[1]))
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            hit |= union > 0 and inter / union > 0.5
        out[e.sent_id] = bool(hit)
    return out


def test_show_cli_writes_one_figure_per_expression(evaluated, capsys):
    from PIL import Image

    from sepnms.data.refdb import load_refdb

    cfg, config = evaluated
    rc, out, err = _cli(capsys, "show", "-c", str(config), "--methods", "det", "sepnms", "--n", "3", "-q")
    assert rc == 0, err
    figs = sorted((Path(cfg.workdir) / "show" / "val").glob("*.png"))
    assert len(figs) == 3
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    for f in figs:
        e = refdb.by_sent[int(f.stem)]
        w, h = refdb.image_size(e["image_id"])
        pw, ph = _panel_px(w, h)
        assert Image.open(f).size == (2 * pw + 8, 48 + ph + 22)
        for panel in (0, 1):
            assert _outline_fraction(f, w, h, e["gt_box"], panel)[0] > 0.3


def test_show_disagree_selects_expressions_whose_outcomes_differ(evaluated, tmp_path):
    from sepnms.engine.show import show

    cfg, _ = evaluated
    det, sep = _independent_hits(cfg, "det", "val"), _independent_hits(cfg, "sepnms", "val")
    differ = [s for s in det if det[s] != sep[s]]
    paths = show(cfg, ["det", "sepnms"], "val", n=1000, select_how="disagree", out_dir=tmp_path, progress=False)
    assert sorted(int(p.stem) for p in paths) == sorted(differ)
    assert len(det) > 0
    misses = show(cfg, ["det", "sepnms"], "val", n=1000, select_how="misses", out_dir=tmp_path / "m", progress=False)
    assert sorted(int(p.stem) for p in misses) == sorted(s for s in sep if not sep[s])


def test_show_refuses_a_method_without_fused_table(evaluated, capsys):
    cfg, config = evaluated
    rc, out, err = _cli(capsys, "show", "-c", str(config), "--methods", "det", "nosuch", "-q")
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no fused table of method 'nosuch'" in err


def test_predict_figure(evaluated, tmp_path, capsys):
    from PIL import Image

    cfg, config = evaluated
    iid = sorted(json.loads((Path(cfg.workdir) / "prepare" / "refdb.json").read_text())["images"], key=int)[0]
    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", iid, "--expr", "the ring",
                        "--figure", str(tmp_path / "p.png"), "-q")
    assert rc == 0, err
    assert json.loads(out)["figure"] == str(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").size[0] > 100
