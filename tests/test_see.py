"""See it: one-image inference (Predictor, ``sepnms predict``), qualitative figures (``sepnms show``)
and the static gallery (``sepnms gallery``), on the session's trained tiny world."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np


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
    table keeps at that conf.  evaluate's conf is itself one of the fused scores, so a candidate
    sits exactly on it; the Predictor's scores equal the table's to ~1e-7 only (batching), so a
    candidate within 1e-5 of the conf may fall on either side and is left out of the comparison."""
    from sepnms import Predictor
    from sepnms.data.refdb import load_refdb
    from sepnms.workdir import fused_path
    from sepnms.evaluation.metrics import select_by_conf
    from sepnms.io.proposals import read_proposals

    cfg, _ = evaluated
    conf = json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())["sepnms"]["val"]["conf"]
    fused = read_proposals(fused_path(cfg, "sepnms", "val")).by_sent_id()
    pred = Predictor.from_config(cfg)
    assert pred.conf == conf
    for e in load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json").split("val")[:3]:
        row = fused[int(e["sent_id"])]
        props = pred.predict(e["image_id"], e["sent"])
        edge = {p.box for p in props if abs(p.fused_score - conf) <= 1e-5}
        want = {tuple(map(float, row.box[i])) for i in select_by_conf(row.scores["score"], conf)} - edge
        got = {p.box for p in props if p.kept} - edge
        assert got == want and len(got) >= 1


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

    # a file that is no image, and an image file without a detector checkpoint configured
    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", str(config), "--expr", "the ring", "-q")
    assert rc == 2 and f"{config}: not an image file" in err and len(err.strip().splitlines()) == 1
    image = next(Path(cfg.images_dir()).iterdir())
    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", str(image), "--expr", "the ring", "-q",
                        "--set", "paths.detector_checkpoint=null", "--set", "paths.maskrcnn_checkpoint=null")
    assert rc == 2 and "paths.detector_checkpoint" in err and len(err.strip().splitlines()) == 1


def test_predict_an_image_file_of_the_world_with_its_detector(evaluated, capsys):
    """The world ships a detector checkpoint: an image file works with the world's config as is."""
    from sepnms.data.refdb import load_refdb

    cfg, config = evaluated
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    e = refdb.split("val")[0]
    image = Path(cfg.images_dir()) / refdb.images[int(e["image_id"])]["file_name"]
    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", str(image), "--expr", e["sent"], "-q")
    assert rc == 0, err
    result = json.loads(out)
    w, h = refdb.image_size(e["image_id"])
    boxes = np.array([p["box"] for p in result["proposals"]]).reshape(-1, 4)
    assert result["image_id"] is None and len(boxes) >= 1
    assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def test_predict_an_image_file_with_the_detector(evaluated, tmp_path, capsys):
    """An image file: the detector (a tiny random one here) proposes the candidates and gives the
    C4 map; the scores go through the same model."""
    import torch
    from PIL import Image

    from sepnms.detection.checkpoint import expected_keys, save_detector
    from sepnms.detection.detector import MaskRCNNC4

    cfg, config = evaluated
    det = {"width": 4, "blocks": "[1,1,1,2]", "rpn_channels": 8, "test_scale": 96, "test_max_size": 160}
    sets = sum((["--set", f"detector.{k}={v}"] for k, v in det.items()), [])
    dcfg = cfg.model_copy(deep=True)
    for k, v in det.items():
        setattr(dcfg.detector, k, [1, 1, 1, 2] if k == "blocks" else v)
    torch.manual_seed(0)
    model = MaskRCNNC4(dcfg.detector)
    ckpt = save_detector(model, tmp_path / "det.pth",
                         {k: torch.randn(s) * 0.01 for k, s in expected_keys(model).items() if k.startswith("mask_")})
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(img)
    rc, out, err = _cli(capsys, "predict", "-c", str(config), "--image", str(img), "--expr", "the red ring",
                        "--set", f"paths.detector_checkpoint={ckpt}", *sets, "--all", "--figure", str(tmp_path / "f.png"),
                        "-q")
    assert rc == 0, err
    result = json.loads(out)
    assert result["image_id"] is None and len(result["proposals"]) >= cfg.prepare.min_candidates_test
    boxes = np.array([p["box"] for p in result["proposals"]])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 120).all() and (boxes[:, 3] <= 90).all()
    assert any(p["kept"] for p in result["proposals"])
    assert (tmp_path / "f.png").is_file()


# ---------------------------------------------------------------------------------------
# figures and `sepnms show`

GT_RGB = np.array([0, 0, 0])  # the palette's ground-truth colour, black (over a white halo)
LEGEND_AND_CAPTION = 22 + 34  # caption band + legend band (the documented layout)


def _panel_px(width, height, panel_px=384):
    """The documented layout, recomputed here: panel size of a width x height image."""
    s = panel_px / max(width, height)
    return round(width * s), round(height * s)


def _outline_fraction(png, width, height, box, panel, panel_px=384, title_px=48):
    """Fraction of the positions along the four sides of ``box`` (image pixels) where the figure
    has a pixel of exactly the GT colour within 2 pixels of the side, in panel ``panel``."""
    from PIL import Image

    arr = np.asarray(Image.open(png).convert("RGB")).astype(int)
    pw, ph = _panel_px(width, height, panel_px)
    left = panel * (pw + 8)
    x0, x1 = left + box[0] * pw / width, left + box[2] * pw / width
    y0, y1 = title_px + box[1] * ph / height, title_px + box[3] * ph / height

    def green(ys, xs):
        return bool((arr[ys, xs] == GT_RGB).all(-1).any())

    hits = []
    for x in range(int(x0) + 4, int(x1) - 3):
        for y in (y0, y1):
            hits.append(green(slice(max(int(y) - 2, 0), int(y) + 3), x))
    for y in range(int(y0) + 4, int(y1) - 3):
        for x in (x0, x1):
            hits.append(green(y, slice(max(int(x) - 2, 0), int(x) + 3)))
    inside = arr[int(y0) + 6:int(y1) - 6, int(x0) + 6:int(x1) - 6]
    return float(np.mean(hits)), int((inside == GT_RGB).all(-1).sum())


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
    assert Image.open(out).size == (2 * pw + 8, 48 + ph + LEGEND_AND_CAPTION)
    for panel in (0, 1):
        on, inside = _outline_fraction(out, 250, 150, gt, panel)
        assert on > 0.4, on  # dashed: a good share of the outline is exactly the GT colour
        assert inside == 0   # and the inside is not painted
    # an empty drawing fails the same check
    blank = draw_expression(img, "x", None, np.zeros((0, 4)), [Panel("det", np.zeros((0, 4)), [], np.zeros(0))],
                            tmp_path / "blank.png")
    assert _outline_fraction(blank, 250, 150, gt, 0)[0] == 0.0


def test_figure_legend_heading_and_note_on_scores_above_one():
    """The legend names GT, context objects, each method and the second stage's pick; the title
    carries split and sent_id; a method whose scores leave [0, 1] is named in a note, and only
    then."""
    from sepnms.evaluation.figures import Panel, expression_figure
    from sepnms.evaluation.palette import method_colour

    img = np.full((100, 120, 3), 90, np.uint8)
    box = np.array([[10, 10, 60, 60], [50, 40, 110, 90]], float)
    panels = [Panel("det", box, ["cat", "dog"], np.array([0.9, 0.4]), True, pick=1, pick_hit=False),
              Panel("sepnms", box[:1], ["cat"], np.array([1.37]), True)]
    fig = expression_figure(img, "the cat", [10, 10, 60, 60], box[1:], panels, heading="testA - sent_id 4711")
    texts = [t.get_text() for t in fig.texts]
    assert any(t.startswith('testA - sent_id 4711: "the cat"') for t in texts)
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["ground truth", "context objects", "det", "sepnms", "second stage's pick"]
    lines = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert lines["det"].get_color().lower() == method_colour("det").lower()
    assert lines["sepnms"].get_color().lower() == method_colour("sepnms").lower()
    notes = [t for t in texts if "not probabilities" in t]
    assert len(notes) == 1 and "sepnms (up to 1.37)" in notes[0] and "det" not in notes[0]
    assert any("2nd stage wrong" in t for t in texts)
    plain = expression_figure(img, "the cat", None, np.zeros((0, 4)), panels[:1])
    assert not any("not probabilities" in t.get_text() for t in plain.texts)
    assert [t.get_text() for t in plain.legends[0].get_texts()] == ["det", "second stage's pick"]


def _independent_hits(cfg, method, split):
    """sent_id -> hit, computed here from the fused table and metrics.json (IoU by hand)."""
    from sepnms.data.refdb import load_refdb
    from sepnms.workdir import fused_path
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
        assert Image.open(f).size == (2 * pw + 8, 48 + ph + LEGEND_AND_CAPTION)
        for panel in (0, 1):
            assert _outline_fraction(f, w, h, e["gt_box"], panel)[0] > 0.3


def test_show_disagree_selects_expressions_whose_outcomes_differ(evaluated, tmp_path):
    from sepnms.engine.look.show import show

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


# ---------------------------------------------------------------------------------------
# gallery (the page's behaviour in a browser: test_gallery_browser.py)


def test_gallery_data_matches_metrics_and_references_the_images(evaluated, capsys):
    from urllib.parse import unquote

    from _gallery import outcomes_by_hand, read_page

    cfg, config = evaluated
    rc, out, err = _cli(capsys, "gallery", "-c", str(config), "--methods", "det", "sepnms", "-q")
    assert rc == 0, err
    page = Path(json.loads(out)["gallery"])
    assert page == Path(cfg.workdir) / "gallery" / "index.html"
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html"]  # nothing copied or rendered
    parsed = read_page(page.read_text())
    data, metrics = parsed["data"], json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())
    assert [m["name"] for m in data["methods"]] == ["det", "sepnms"]
    cards = data["cards"]
    assert len(cards) == sum(metrics["det"][s]["n_expressions"] for s in cfg.evaluate.splits) > 0
    images_dir = Path(cfg.images_dir()).resolve()
    for url, w, h, _pool in data["images"]:
        f = (page.parent / unquote(url)).resolve()
        assert f.is_file() and f.parent == images_dir
    refdb = json.loads((Path(cfg.workdir) / "prepare" / "refdb.json").read_text())
    sents = {int(e["sent_id"]): e["sent"] for e in refdb["expressions"]}
    for j, method in enumerate(("det", "sepnms")):
        for split in cfg.evaluate.splits:
            mine = [c for c in cards if data["splits"][c["p"]] == split]
            m = metrics[method][split]
            assert len(mine) == m["n_expressions"]
            assert sum(c["m"][j][1] for c in mine) == round(m["hit_rate"] * m["n_expressions"]), (method, split)
            by_hand = outcomes_by_hand(cfg, method, split, m["conf"])
            for c in mine:
                boxes, hit, scores = by_hand[c["s"]]
                assert c["m"][j][0] == len(boxes) and c["m"][j][1] == int(hit)
                ranking, pool = c["r"][data["methods"][j]["base"]], data["images"][c["i"]][3]
                for k in range(len(boxes)):  # the drawn boxes are the kept boxes, in rank order
                    got = pool[5 * ranking[2 * k]: 5 * ranking[2 * k] + 4]
                    want = [boxes[k][0], boxes[k][1], boxes[k][2] - boxes[k][0], boxes[k][3] - boxes[k][1]]
                    assert np.abs(np.array(got) - np.array(want)).max() <= 1.0
                    assert abs(ranking[2 * k + 1] / data["scale"] - scores[k]) <= 0.5 / data["scale"]
                assert c["m"][j][2] == -1 and c["m"][j][3] == -1  # no second stage ran here
    for c in cards:
        assert c["t"] == sents[c["s"]]
        fig = Path(cfg.workdir) / "show" / data["splits"][c["p"]] / f"{c['s']}.png"
        assert ("f" in c) == fig.is_file()  # a card links to its `show` figure where one was drawn
        if "f" in c:
            assert (page.parent / unquote(c["f"])).resolve() == fig.resolve()


def test_gallery_second_stage_and_equal_budget_rows(evaluated, tmp_path):
    """Every method of metrics.json with a table - the ``M@X`` row included - gets cards, filters
    and a table row; the second stage's pick and outcome per method reach the cards."""
    from _gallery import outcomes_by_hand, read_page, with_second_stage
    from sepnms.engine.look.gallery import gallery

    cfg, _ = evaluated
    cfg2, expected = with_second_stage(cfg, tmp_path / "w")
    parsed = read_page(gallery(cfg2, progress=False).read_text())
    data = parsed["data"]
    names = [m["name"] for m in data["methods"]]
    assert names == ["det", "sepnms", "sepnms@mattnet_dets"]
    assert [m["second_stage"] for m in data["methods"]] == [False, True, True]
    assert data["methods"][1]["base"] == data["methods"][2]["base"]  # one table, two operating points
    assert {f"f-m{j}" for j in range(3)} <= parsed["ids"] and {f"t-m{j}" for j in range(3)} <= parsed["ids"]
    rows = {(r["data-method"], r["data-split"]) for r in parsed["rows"]}
    assert {(m, s) for m in names + ["gt"] for s in cfg.evaluate.splits} <= rows
    metrics = json.loads((Path(cfg2.workdir) / "eval" / "metrics.json").read_text())
    checked = 0
    for c in data["cards"]:
        split = data["splits"][c["p"]]
        for j, method in ((1, "sepnms"), (2, "sepnms@mattnet_dets")):
            k, rank, ph = expected[(method, split)][c["s"]]
            assert c["m"][j][0] == k and c["m"][j][2] == rank and c["m"][j][3] == ph, (method, c["s"])
            checked += 1
    assert checked == 2 * len(data["cards"])
    low = outcomes_by_hand(cfg2, "sepnms", "val", metrics["sepnms@mattnet_dets"]["val"]["conf"])
    own = outcomes_by_hand(cfg2, "sepnms", "val", metrics["sepnms"]["val"]["conf"])
    assert sum(len(v[0]) for v in low.values()) > sum(len(v[0]) for v in own.values())


def test_show_before_evaluate_is_a_clear_error(evaluated, tmp_path, capsys):
    cfg, _ = evaluated
    work = tmp_path / "w"
    shutil.copytree(cfg.workdir, work, ignore=shutil.ignore_patterns("gallery", "show", "eval"))
    from sepnms.config import save_config

    save_config(cfg.model_copy(update={"workdir": work}), tmp_path / "c.yaml")
    for command in ("show", "gallery"):
        rc, out, err = _cli(capsys, command, "-c", str(tmp_path / "c.yaml"), "--methods", "sepnms", "-q")
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert f"{work / 'eval' / 'metrics.json'}: not found: run `sepnms evaluate` first" in err


def test_show_and_gallery_refuse_a_broken_second_stage_file(evaluated, tmp_path, capsys):
    """A predictions file that is not [{sent_id, box}] or a hits.json that is not JSON: one line
    naming the file, for show and gallery alike."""
    from sepnms.config import save_config

    cfg, _ = evaluated
    work = tmp_path / "w"
    shutil.copytree(cfg.workdir, work, ignore=shutil.ignore_patterns("gallery", "show", "ground"))
    save_config(cfg.model_copy(update={"workdir": work}), tmp_path / "c.yaml")
    pred = work / "ground" / "predictions" / "sepnms_val.json"
    pred.parent.mkdir(parents=True)
    pred.write_text(json.dumps([{"sent_id": 1, "bbox": [0, 0, 1, 1]}]))
    for command in ("show", "gallery"):
        rc, out, err = _cli(capsys, command, "-c", str(tmp_path / "c.yaml"), "--methods", "sepnms", "-q")
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"{pred}: not a predictions file" in err
    pred.unlink()
    (work / "ground" / "hits.json").write_text("{not json")
    rc, out, err = _cli(capsys, "gallery", "-c", str(tmp_path / "c.yaml"), "--methods", "sepnms", "-q")
    assert rc == 2 and f"{work / 'ground' / 'hits.json'}: not valid JSON" in err and len(err.strip().splitlines()) == 1


def test_labels_of_a_crowded_panel_do_not_overlap():
    """Twelve proposals piled on one spot: every label placed stays inside the panel and no two
    labels' boxes intersect."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sepnms.evaluation.figures import _place_labels

    fig = Figure(figsize=(3.84, 2.56), dpi=100)
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 384)
    ax.set_ylim(256, 0)
    boxes = [np.array([100 + k, 80 + k, 200 + k, 180 + k], float) for k in range(12)]
    _place_labels(ax, renderer, [(f"dining table {0.9 - k / 20:.2f}", "#d62728", b) for k, b in enumerate(boxes)],
                  384, 256, 1.0, 1.0, 7.0)
    canvas.draw()  # lays out the label boxes
    renderer = canvas.get_renderer()
    ext = [t.get_bbox_patch().get_window_extent(renderer) for t in ax.texts]
    assert len(ext) >= 8
    for i, a in enumerate(ext):
        assert a.x0 >= -1 and a.x1 <= 385 and a.y0 >= -1 and a.y1 <= 257
        for b in ext[i + 1:]:
            assert not (a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5), (a, b)
