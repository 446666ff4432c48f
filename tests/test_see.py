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
    table keeps at that conf.  evaluate's conf is itself one of the fused scores, so a candidate
    sits exactly on it; the Predictor's scores equal the table's to ~1e-7 only (batching), so a
    candidate within 1e-5 of the conf may fall on either side and is left out of the comparison."""
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


# ---------------------------------------------------------------------------------------
# gallery


class _Cards:
    """Collects the gallery's cards, their images and the metrics table with html.parser."""

    def __init__(self, text):
        from html.parser import HTMLParser

        self.cards, self.tables = [], 0
        outer = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if tag == "div" and "card" in (a.get("class") or "").split():
                    outer.cards.append({"attrs": a, "imgs": []})
                elif tag == "img" and outer.cards:
                    outer.cards[-1]["imgs"].append(a["src"])
                elif tag == "table" and a.get("id") == "metrics":
                    outer.tables += 1

        P().feed(text)


def test_gallery_cards_images_and_hit_counts_match_metrics(evaluated, capsys):
    cfg, config = evaluated
    rc, out, err = _cli(capsys, "gallery", "-c", str(config), "--methods", "det", "sepnms", "--max-thumbnails", "-1", "-q")
    assert rc == 0, err
    page = Path(json.loads(out)["gallery"])
    assert page == Path(cfg.workdir) / "gallery" / "index.html"
    parsed = _Cards(page.read_text())
    metrics = json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())
    assert parsed.tables == 1
    n_total = sum(metrics["det"][s]["n_expressions"] for s in cfg.evaluate.splits)
    assert len(parsed.cards) == n_total > 0
    for card in parsed.cards:
        assert len(card["imgs"]) == 1
        assert (page.parent / card["imgs"][0]).is_file()
    for method in ("det", "sepnms"):
        for split in cfg.evaluate.splits:
            mine = [c["attrs"] for c in parsed.cards if c["attrs"]["data-split"] == split]
            hits = sum(int(a[f"data-hit-{method}"]) for a in mine)
            m = metrics[method][split]
            assert len(mine) == m["n_expressions"]
            assert hits == round(m["hit_rate"] * m["n_expressions"]), (method, split)
    # the text filter's attribute holds the expression
    refdb = json.loads((Path(cfg.workdir) / "prepare" / "refdb.json").read_text())
    sents = {int(e["sent_id"]): e["sent"] for e in refdb["expressions"]}
    for card in parsed.cards:
        assert card["attrs"]["data-text"] == sents[int(card["attrs"]["data-sent-id"])].lower()


def test_gallery_thumbnail_limit(evaluated, tmp_path):
    from sepnms.engine.gallery import gallery

    cfg, _ = evaluated
    cfg2 = cfg.model_copy(update={"workdir": tmp_path / "w"}, deep=True)
    shutil.copytree(cfg.workdir, cfg2.workdir, ignore=shutil.ignore_patterns("gallery", "show"))
    page = gallery(cfg2, ["sepnms"], ["val"], max_thumbnails=2, progress=False)
    parsed = _Cards(page.read_text())
    assert sum(len(c["imgs"]) for c in parsed.cards) == 2
    assert len(list((page.parent / "thumbs" / "val").glob("*.png"))) == 2
    assert len(parsed.cards) == json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())[
        "sepnms"]["val"]["n_expressions"]


_STUB_DOM = """
const fs = require('fs');
const data = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const el = () => ({value: '', textContent: '', style: {}, onchange: null, oninput: null, onclick: null});
const ids = {methods: {textContent: JSON.stringify(data.methods)}};
const cards = data.cards.map(a => ({dataset: {split: a['data-split'], text: a['data-text']},
  getAttribute: k => a[k], style: {}}));
global.document = {
  querySelectorAll: () => cards,
  getElementById: id => (ids[id] = ids[id] || el()),
};
eval(data.script);
const shown = () => [cards.filter(c => c.style.display !== 'none').length, parseInt(ids.count.textContent)];
const out = {all: shown(), count: ids.count.textContent};
ids['f-split'].value = 'val'; ids['f-split'].onchange();
out.val = shown();
ids['f-sepnms'].value = '1'; ids['f-sepnms'].onchange();
out.val_sep_hit = shown();
ids['f-split'].value = ''; ids['f-sepnms'].value = ''; ids['f-text'].value = data.word; ids['f-text'].oninput();
out.word = shown();
ids['f-text'].value = ''; ids['f-text'].oninput(); ids.next.onclick(); ids.next.onclick();
out.page3 = shown(); out.page3_text = ids.count.textContent;
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_gallery_script_filters_and_pages(evaluated, tmp_path):
    """The page's inline script, run under node with a stub DOM: filters by split, method outcome
    and text, and shows at most page_size cards."""
    import re
    import subprocess

    from sepnms.engine.gallery import gallery

    cfg, _ = evaluated
    cfg2 = cfg.model_copy(update={"workdir": tmp_path / "w"}, deep=True)
    cfg2.gallery.page_size = 4
    shutil.copytree(cfg.workdir, cfg2.workdir, ignore=shutil.ignore_patterns("gallery", "show"))
    page = gallery(cfg2, ["det", "sepnms"], max_thumbnails=0, progress=False).read_text()
    cards = [c["attrs"] for c in _Cards(page).cards]
    script = re.findall(r"<script>(.*?)</script>", page, re.S)[-1]
    word = cards[0]["data-text"].split()[-1]
    (tmp_path / "in.json").write_text(json.dumps({"methods": ["det", "sepnms"], "cards": cards, "script": script,
                                                  "word": word}))
    (tmp_path / "run.js").write_text(_STUB_DOM)
    res = subprocess.run(["node", str(tmp_path / "run.js"), str(tmp_path / "in.json")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    val = [c for c in cards if c["data-split"] == "val"]
    want = {"all": len(cards), "val": len(val), "val_sep_hit": sum(c["data-hit-sepnms"] == "1" for c in val),
            "word": sum(word in c["data-text"] for c in cards)}
    assert len(set(want.values())) > 2  # the filters are told apart
    for key, n in want.items():
        assert got[key] == [min(4, n), n], key  # [cards shown (one page), cards matched]
    assert got["page3"] == [min(4, len(cards) - 8), len(cards)] and "page 3 of" in got["page3_text"]


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
