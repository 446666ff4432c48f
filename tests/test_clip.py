"""Tests for sepnms.clip: DAMSM losses, the CLIP-dagger model and its checkpoints, crops, the CLIP
context labels (clip-ctx), proposal scoring and the fine-tuning stage.  Tiny sizes, CPU only."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sepnms.clip import crops as crops_mod
from sepnms.clip.crops import crop_boxes
from sepnms.clip.transform import from_dagger_input, to_dagger_input
from sepnms.clip.finetune import clip_finetune, lr_at_epoch
from sepnms.clip.labeller import clip_ctx, critical_ann_ids, label_image
from sepnms.clip.losses import sentence_loss, word_loss, word_relevance
from sepnms.clip.backbone import tokenize
from sepnms.clip.model import CLIPDagger, build_dagger, default_heads_path, load_dagger
from sepnms.clip.proposals import clip_scores_for_image
from sepnms.config import load_config
from sepnms.data.ctxdb import ctxdb_path, load_ctxdb
from sepnms.errors import ConfigError, InputError, OutputExistsError
from sepnms.io.refer import write_instances, write_refs

torch.set_num_threads(2)

TINY = ["clip.arch=tiny", "clip.tiny_width=8", "clip.layer3_channels=128", "clip.embed_dim=32",
        "clip.tiny_text_width=32", "clip.tiny_text_layers=1", "clip.tiny_text_heads=2",
        "clip.tiny_context_length=16", "clip.image_size=64", "clip.resize=72", "clip.crop=64"]


def tiny_cfg(tmp_path: Path, *overrides: str):
    cfg = load_config("demo", TINY + list(overrides))
    cfg.workdir = tmp_path / "work"
    return cfg


# ---------------------------------------------------------------------------------------
# losses against slow references


def cos_ref(a, b, eps=1e-8):
    num = sum(float(x) * float(y) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x) ** 2 for x in a))
    nb = math.sqrt(sum(float(y) ** 2 for y in b))
    return num / max(na * nb, eps)


def ce_both_ref(m):
    """CE(M, arange) + CE(M^T, arange), mean over rows, with explicit loops."""
    b = len(m)
    rows = sum(-m[i][i] + math.log(sum(math.exp(m[i][j]) for j in range(b))) for i in range(b)) / b
    cols = sum(-m[j][j] + math.log(sum(math.exp(m[i][j]) for i in range(b))) for j in range(b)) / b
    return rows + cols


def sentence_loss_ref(img, sent, gamma3):
    b = img.shape[0]
    s = [[gamma3 * cos_ref(img[i], sent[j]) for j in range(b)] for i in range(b)]
    return ce_both_ref(s)


def relevance_ref(regions, words, lengths, gamma1, gamma2):
    """R[i][j] with loops over (i, j, k, r); regions [B, E, N], words [B, L, E]."""
    b, e, n = regions.shape
    out = [[0.0] * b for _ in range(b)]
    for i in range(b):
        for j in range(b):
            t = int(lengths[j])
            a = [[sum(float(words[j, k, d]) * float(regions[i, d, r]) for d in range(e)) for r in range(n)]
                 for k in range(t)]
            # softmax over words, for each region
            norm = [[0.0] * n for _ in range(t)]
            for r in range(n):
                z = sum(math.exp(a[k][r]) for k in range(t))
                for k in range(t):
                    norm[k][r] = math.exp(a[k][r]) / z
            total = 0.0
            for k in range(t):
                z = sum(math.exp(gamma1 * norm[k][r]) for r in range(n))
                w = [math.exp(gamma1 * norm[k][r]) / z for r in range(n)]
                c = [sum(w[r] * float(regions[i, d, r]) for r in range(n)) for d in range(e)]
                total += math.exp(gamma2 * cos_ref(c, words[j, k].tolist()))
            out[i][j] = math.log(total)
    return out


def test_sentence_loss_matches_reference():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(5, 7, generator=g, dtype=torch.float64)
    sent = torch.randn(5, 7, generator=g, dtype=torch.float64)
    got = float(sentence_loss(img, sent, 10.0))
    assert got == pytest.approx(sentence_loss_ref(img, sent, 10.0), abs=1e-5)
    # matched pairs scored higher -> lower loss
    assert float(sentence_loss(img, img + 0.01 * sent, 10.0)) < got


def test_word_loss_matches_reference():
    g = torch.Generator().manual_seed(1)
    b, e, n, l = 4, 5, 6, 7
    regions = torch.randn(b, e, n, generator=g, dtype=torch.float64)
    words = torch.randn(b, l, e, generator=g, dtype=torch.float64)
    lengths = torch.tensor([3, 1, 7, 5])
    r = word_relevance(regions, words, lengths, 4.0, 5.0)
    ref = relevance_ref(regions, words, lengths, 4.0, 5.0)
    assert torch.allclose(r, torch.tensor(ref, dtype=torch.float64), atol=1e-5)
    got = float(word_loss(regions, words, lengths, 4.0, 5.0, 10.0))
    want = ce_both_ref([[10.0 * v for v in row] for row in ref])
    assert got == pytest.approx(want, abs=1e-5)
    # padding beyond each caption's length does not matter; a [B, E, h, w] map is flattened
    noisy = words.clone()
    noisy[0, 3:] = 100.0
    noisy[1, 1:] = -50.0
    assert float(word_loss(regions.view(b, e, 2, 3), noisy, lengths, 4.0, 5.0, 10.0)) == pytest.approx(got, abs=1e-9)


def test_word_loss_has_gradients():
    regions = torch.randn(3, 4, 5, requires_grad=True)
    words = torch.randn(3, 6, 4, requires_grad=True)
    word_loss(regions, words, torch.tensor([2, 6, 1]), 4.0, 5.0, 10.0).backward()
    assert torch.isfinite(regions.grad).all() and regions.grad.abs().sum() > 0
    assert torch.isfinite(words.grad).all() and words.grad[:, :1].abs().sum() > 0


def test_lr_schedule():
    cfg = load_config("paper")
    assert lr_at_epoch(cfg.clip, 0) == pytest.approx(2e-4)
    assert lr_at_epoch(cfg.clip, 2) == pytest.approx(2e-4 * 0.98 ** 2)
    # decays while > 2e-5: 0.98^114 * 2e-4 < 2e-5 is the first value at or below the floor
    k = next(k for k in range(1000) if 2e-4 * 0.98 ** k <= 2e-5)
    assert lr_at_epoch(cfg.clip, k + 50) == pytest.approx(2e-4 * 0.98 ** k)


# ---------------------------------------------------------------------------------------
# the model


def test_towers_match_open_clip(tmp_path):
    cfg = tiny_cfg(tmp_path)
    d = build_dagger(cfg, seed=0).eval()
    x = torch.randn(2, 3, 64, 64)
    texts = ["a red ball on the left", "x"]
    tok = d.tokenize(texts)
    g, l3 = d._visual(x)
    assert torch.allclose(g, d.clip.encode_image(x), atol=1e-6)
    assert l3.shape == (2, 128, 4, 4)
    feats, sent = d._textual(tok)
    assert torch.allclose(sent, d.clip.encode_text(tok), atol=1e-6)
    code, regions = d.encode_image(x)
    assert code.shape == (2, 32) and regions.shape == (2, 32, 4, 4)
    tcode, words, lengths = d.encode_text(tok)
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    assert lengths.tolist() == [len(bpe.encode(t)) for t in texts]
    # words[k] is the feature of caption token k (after <sot>)
    assert torch.allclose(words[0, 0], d.word_norm(d.word_head(feats[0, 1])), atol=1e-6)
    assert torch.allclose(d.image_code(x), code) and torch.allclose(d.text_code(tok), tcode)


def test_frozen_backbone_has_no_trainable_params(tmp_path):
    d = build_dagger(tiny_cfg(tmp_path, "clip.freeze_backbone=true"), seed=0)
    names = [n for n, p in d.named_parameters() if p.requires_grad]
    assert names and all(n.split(".")[0] in CLIPDagger.HEAD_MODULES for n in names)
    d.train()
    assert not d.clip.training and d.image_head.training
    d2 = build_dagger(tiny_cfg(tmp_path, "clip.freeze_backbone=false"), seed=0)
    assert any(n.startswith("clip.") for n, p in d2.named_parameters() if p.requires_grad)


def test_config_dims_checked(tmp_path):
    with pytest.raises(ConfigError, match="layer3_channels"):
        build_dagger(tiny_cfg(tmp_path, "clip.layer3_channels=64"))
    with pytest.raises(ConfigError, match="tiny_vocab_size"):
        build_dagger(tiny_cfg(tmp_path, "clip.tiny_vocab_size=1000"))
    with pytest.raises(ConfigError, match="clip_checkpoint"):
        build_dagger(load_config("paper"))


def _openai_state(src: torch.nn.Module, half: bool) -> dict:
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    if half:  # OpenAI ships partly fp16 weights; round the source the same way
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
        src.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    sd["input_resolution"] = torch.tensor(64)
    sd["context_length"] = torch.tensor(16)
    sd["vocab_size"] = torch.tensor(49408)
    return sd


@pytest.mark.parametrize("layout", ["openai_fp16", "open_clip_wrapped", "torchscript"])
def test_checkpoint_loads_and_reproduces(tmp_path, layout):
    cfg = tiny_cfg(tmp_path)
    src = build_dagger(cfg, seed=123).clip.eval()
    path = tmp_path / "clip.pt"
    x = torch.randn(2, 3, 64, 64)
    tok = tokenize(["a photo of a cat", "two dogs"], 16)
    if layout == "openai_fp16":
        torch.save(_openai_state(src, half=True), path)
    elif layout == "open_clip_wrapped":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(src, (x, tok), check_trace=False).save(str(path))
    cfg.paths.clip_checkpoint = path
    d = build_dagger(cfg, seed=7).eval()
    assert d.info["checkpoint"] == str(path)
    with torch.no_grad():
        assert torch.allclose(d.clip.encode_image(x), src.encode_image(x), atol=1e-6)
        assert torch.allclose(d.clip.encode_text(tok), src.encode_text(tok), atol=1e-6)
        # a differently seeded random backbone differs (the check can fail)
        other = build_dagger(tiny_cfg(tmp_path), seed=7).eval()
        assert not torch.allclose(other.clip.encode_image(x), src.encode_image(x), atol=1e-3)


def test_checkpoint_missing_and_garbage(tmp_path):
    cfg = tiny_cfg(tmp_path)
    cfg.paths.clip_checkpoint = tmp_path / "nope" / "RN101.pt"
    with pytest.raises(InputError, match="RN101.pt") as err:
        build_dagger(cfg)
    assert "not found" in str(err.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    cfg.paths.clip_checkpoint = bad
    with pytest.raises(InputError, match="bad.pt.*not a loadable"):
        build_dagger(cfg)


def test_checkpoint_wrong_architecture(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    # a tiny CLIP of another width, given to the tiny config
    other = build_dagger(tiny_cfg(tmp_path, "clip.tiny_width=4", "clip.layer3_channels=64"), seed=0).clip
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    cfg = tiny_cfg(tmp_path)
    cfg.paths.clip_checkpoint = path
    with pytest.raises(InputError, match="other.pt") as err:
        build_dagger(cfg)
    assert "shapes differ" in str(err.value) and "width 4" in str(err.value)
    # a ViT CLIP
    vit = CLIP(32, CLIPVisionCfg(layers=1, width=32, patch_size=16, image_size=32, head_width=16),
               CLIPTextCfg(context_length=16, width=32, heads=2, layers=1))
    vpath = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), vpath)
    cfg.paths.clip_checkpoint = vpath
    with pytest.raises(InputError, match="ViT") as err:
        build_dagger(cfg)
    assert "vit.pt" in str(err.value) and "keys missing" in str(err.value)
    # the tiny checkpoint given for RN101
    rn = load_config("paper")
    rn.paths.clip_checkpoint = path
    with pytest.raises(InputError, match="RN101") as err:
        build_dagger(rn)
    assert "other.pt" in str(err.value)


def test_heads_save_and_load(tmp_path):
    cfg = tiny_cfg(tmp_path, "clip.freeze_backbone=true")
    a = build_dagger(cfg, seed=0)
    with torch.no_grad():
        for p in a.image_head.parameters():
            p.add_(0.5)
    path = tmp_path / "h" / "heads.pt"
    a.save_heads(path)
    assert path.stat().st_size < 100_000  # heads only, not the token embedding of the backbone
    b = build_dagger(cfg, seed=0)
    assert not torch.equal(b.image_head.weight, a.image_head.weight)
    record = b.load_heads(path)
    assert record["info"]["arch"] == "tiny"
    for k, v in a.heads_state_dict().items():
        assert torch.equal(b.heads_state_dict()[k], v)
    # heads of another architecture are refused, naming the file and what differs
    c = build_dagger(tiny_cfg(tmp_path, "clip.embed_dim=16"), seed=0)
    with pytest.raises(InputError, match="heads.pt.*embed_dim"):
        c.load_heads(path)
    # a full state round-trips the backbone too
    full = tmp_path / "h" / "full.pt"
    a.save_full(full)
    d = build_dagger(cfg, seed=99)
    d.load_full(full)
    for k, v in a.state_dict().items():
        assert torch.equal(d.state_dict()[k], v)
    with pytest.raises(InputError, match="not a sepnms-clip-full"):
        d.load_full(path)


# ---------------------------------------------------------------------------------------
# crops and designed similarities

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLOUR_VEC = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}
#: designed sentence embeddings (first three dims: red, green, blue)
SENTENCE_VEC = {"red and green": [1.0, 1.0, 0.0], "mostly red": [1.0, 0.5, 0.0], "blue": [0.0, 0.0, 1.0],
                "green": [0.0, 1.0, 0.0]}


def unnormalise(crops: torch.Tensor) -> torch.Tensor:
    return from_dagger_input(crops)


def scene(size=(96, 96)) -> Image.Image:
    """Grey image: red square (10..40), green square (50..80, 10..40), blue square (10..40, 50..80)."""
    im = Image.new("RGB", size, (128, 128, 128))
    dr = ImageDraw.Draw(im)
    dr.rectangle([10, 10, 39, 39], fill=RED)
    dr.rectangle([50, 10, 79, 39], fill=GREEN)
    dr.rectangle([10, 50, 39, 79], fill=BLUE)
    return im


#: boxes xyxy: A red, B green, C blue, D red (IoU with A = 841/900 > 0.9)
BOXES = {"A": [10, 10, 40, 40], "B": [50, 10, 80, 40], "C": [10, 50, 40, 80], "D": [11, 11, 40, 40]}


def fake_image_code(self, crops):
    """Designed image code: the crop's mean RGB colour (un-normalised), zero-padded to E."""
    rgb = unnormalise(crops.detach().cpu()).mean(dim=(2, 3))
    out = torch.zeros(crops.shape[0], self.embed_dim)
    out[:, :3] = rgb
    return out.to(self.device)


def fake_sentence_codes(self, sentences):
    out = torch.zeros(len(sentences), self.embed_dim)
    for i, s in enumerate(sentences):
        out[i, :3] = torch.tensor(SENTENCE_VEC[s])
    return out.to(self.device)


def designed_probs(sentence: str, colours: list[str], scale: float = 10.0) -> np.ndarray:
    s = np.asarray(SENTENCE_VEC[sentence]) / np.linalg.norm(SENTENCE_VEC[sentence])
    cos = np.asarray([np.dot(s, COLOUR_VEC[c]) for c in colours])
    z = np.exp(scale * cos)
    return z / z.sum()


def test_crops_are_rgb_and_parity_flips(tmp_path):
    im = scene()
    crops = crop_boxes(im, [BOXES["A"], BOXES["C"]], 64)
    assert crops.shape == (2, 3, 64, 64)
    red = unnormalise(crops[0]).mean(dim=(1, 2))
    assert red[0] > 0.99 and red[1] < 0.01 and red[2] < 0.01
    blue = unnormalise(crops[1]).mean(dim=(1, 2))
    assert blue[2] > 0.99 and blue[0] < 0.01
    flipped = unnormalise(crop_boxes(im, [BOXES["A"]], 64, bgr_parity=True)[0]).mean(dim=(1, 2))
    assert flipped[2] > 0.99 and flipped[0] < 0.01
    # a box that is out of the image or empty still gives one pixel
    assert crop_boxes(im, [[200, 200, 300, 300], [5, 5, 5, 5]], 32).shape == (2, 3, 32, 32)


def test_label_image_designed(tmp_path, monkeypatch):
    d = build_dagger(tiny_cfg(tmp_path), seed=0)
    calls = {"image": 0, "text": 0}

    def counting_image(self, crops):
        calls["image"] += 1
        return fake_image_code(self, crops)

    def counting_text(self, sentences):
        calls["text"] += 1
        return fake_sentence_codes(self, sentences)

    monkeypatch.setattr(CLIPDagger, "image_code", counting_image)
    monkeypatch.setattr(CLIPDagger, "sentence_codes", counting_text)
    names = ["A", "B", "C", "D"]
    colours = ["red", "green", "blue", "red"]
    sentences = ["red and green", "mostly red", "blue"]
    cos, prob = label_image(d, scene(), np.asarray([BOXES[n] for n in names], float), sentences, 10.0)
    assert calls == {"image": 1, "text": 1}
    assert cos.shape == prob.shape == (3, 4)
    assert cos[0].tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5, 0.0, 2 ** -0.5], abs=1e-5)
    for row, s in enumerate(sentences):
        assert prob[row].numpy() == pytest.approx(designed_probs(s, colours), abs=1e-5)
    ids = [1, 2, 3, 4]
    assert critical_ann_ids(ids, prob[0], 0.08) == [1, 2, 4]
    assert critical_ann_ids(ids, prob[1], 0.08) == [1, 4]  # green at p ~ 0.0057 is below 0.08
    assert critical_ann_ids(ids, prob[1], 0.005) == [1, 2, 4]
    assert critical_ann_ids(ids, prob[2], 0.08) == [3]
    # proposals: the same rule over candidate boxes, softmax over the candidates
    cos2, score = clip_scores_for_image(d, scene(), np.asarray([BOXES["B"], BOXES["C"]], float), ["green"], 5.0)
    assert calls["image"] == 2
    assert cos2[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-5)
    assert score[0].tolist() == pytest.approx([math.exp(5) / (math.exp(5) + 1), 1 / (math.exp(5) + 1)], abs=1e-5)


def test_crops_encoded_once_per_image_in_chunks(tmp_path, monkeypatch):
    d = build_dagger(tiny_cfg(tmp_path), seed=0)
    seen = []
    monkeypatch.setattr(CLIPDagger, "image_code", lambda self, crops: (seen.append(len(crops)), fake_image_code(self, crops))[1])
    monkeypatch.setattr(CLIPDagger, "sentence_codes", fake_sentence_codes)
    monkeypatch.setattr(crops_mod, "CROP_CHUNK", 3)
    boxes = np.asarray([BOXES["A"]] * 7, float)
    cos, _ = clip_scores_for_image(d, scene(), boxes, ["blue", "green"], 10.0)
    assert cos.shape == (2, 7)
    assert sum(seen) == 7  # every crop encoded exactly once, whatever the number of sentences


def test_real_model_scores_are_consistent(tmp_path):
    """With the real (random tiny) model: probabilities are the softmax of scale * cos, per row."""
    d = build_dagger(tiny_cfg(tmp_path), seed=0)
    cos, prob = label_image(d, scene(), np.asarray(list(BOXES.values()), float), ["a red square", "blue"], 10.0)
    assert torch.all(cos.abs() <= 1 + 1e-5)
    assert torch.allclose(prob.sum(1), torch.ones(2), atol=1e-5)
    want = np.exp(10 * cos.numpy()) / np.exp(10 * cos.numpy()).sum(1, keepdims=True)
    assert np.allclose(prob.numpy(), want, atol=1e-5)
    # A's crop is identical to D's interior only approximately; identical boxes give identical scores
    cos_same, _ = label_image(d, scene(), np.asarray([BOXES["A"], BOXES["A"]], float), ["x"], 10.0)
    assert cos_same[0, 0] == pytest.approx(float(cos_same[0, 1]), abs=1e-6)


# ---------------------------------------------------------------------------------------
# clip-ctx end to end on a hand-made refer dataset


def sent(sid, text):
    return {"sent_id": sid, "sent": text, "raw": text, "tokens": text.split()}


def make_refer(tmp_path: Path) -> Path:
    """Two images; image 1 has objects A(1) B(2) C(3) D(4); image 2 has two objects (5, 6)."""
    root = tmp_path / "refer"
    images = tmp_path / "images"
    images.mkdir(parents=True)
    scene().save(images / "img1.png")
    im2 = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(im2).rectangle([0, 0, 31, 31], fill=GREEN)
    ImageDraw.Draw(im2).rectangle([32, 32, 63, 63], fill=BLUE)
    im2.save(images / "img2.png")

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": xywh(BOXES[n]), "area": 1.0, "iscrowd": 0}
            for i, n in enumerate("ABCD")]
    anns += [{"id": 5, "image_id": 2, "category_id": 1, "bbox": [0, 0, 32, 32], "area": 1.0, "iscrowd": 0},
             {"id": 6, "image_id": 2, "category_id": 1, "bbox": [32, 32, 32, 32], "area": 1.0, "iscrowd": 0}]
    instances = {"images": [{"id": 1, "file_name": "img1.png", "width": 96, "height": 96},
                            {"id": 2, "file_name": "img2.png", "width": 64, "height": 64}],
                 "annotations": anns, "categories": [{"id": 1, "name": "square"}]}
    refs = [
        {"ref_id": 10, "ann_id": 1, "category_id": 1, "image_id": 1, "split": "train", "file_name": "img1.png",
         "sent_ids": [100, 101], "sentences": [sent(100, "red and green"), sent(101, "mostly red")]},
        {"ref_id": 11, "ann_id": 3, "category_id": 1, "image_id": 1, "split": "train", "file_name": "img1.png",
         "sent_ids": [102, 103], "sentences": [sent(102, "blue"), sent(103, "red and green")]},
        {"ref_id": 12, "ann_id": 5, "category_id": 1, "image_id": 2, "split": "val", "file_name": "img2.png",
         "sent_ids": [104], "sentences": [sent(104, "green")]},
    ]
    (root / "refcoco").mkdir(parents=True)
    write_refs(root / "refcoco" / "refs(unc).p", refs)
    write_instances(root / "refcoco" / "instances.json", instances)
    return root


def ctx_cfg(tmp_path, *overrides):
    cfg = tiny_cfg(tmp_path, *overrides)
    cfg.paths.refer_root = make_refer(tmp_path) if not (tmp_path / "refer").exists() else tmp_path / "refer"
    cfg.paths.images_dir = tmp_path / "images"
    return cfg


def test_clip_ctx_designed(tmp_path, monkeypatch):
    cfg = ctx_cfg(tmp_path)
    d = build_dagger(cfg, seed=cfg.seed)
    d.save_heads(default_heads_path(cfg))
    calls = {"image": 0, "text": 0}

    def counting_image(self, crops):
        calls["image"] += 1
        return fake_image_code(self, crops)

    def counting_text(self, sentences):
        calls["text"] += 1
        return fake_sentence_codes(self, sentences)

    monkeypatch.setattr(CLIPDagger, "image_code", counting_image)
    monkeypatch.setattr(CLIPDagger, "sentence_codes", counting_text)
    summary = clip_ctx(cfg, progress=False)
    assert summary["expressions"] == 5 and summary["images"] == 2
    assert calls == {"image": 2, "text": 2}  # once per image, not per expression
    db = load_ctxdb(ctxdb_path(cfg.workdir, "clip"))
    assert db.source == "clip" and db.params["ctx_threshold"] == 0.08
    e = db.entries
    # ref A, "red and green": A, B, D kept (~1/3 each); A and D are the referent (IoU > 0.9), B context
    assert sorted(e[100]["ref_ann_ids"]) == [1, 4] and e[100]["ctx_ann_ids"] == [2]
    assert e[100]["ctx_boxes"] == [BOXES["B"]]
    # ref A, "mostly red": green's p ~ 0.0057 < 0.08 -> no context
    assert sorted(e[101]["ref_ann_ids"]) == [1, 4] and e[101]["ctx_ann_ids"] == []
    # ref C, "blue": C kept and is the referent
    assert e[102]["ref_ann_ids"] == [3] and e[102]["ctx_ann_ids"] == []
    # ref C, "red and green": all kept objects are context
    assert e[103]["ref_ann_ids"] == [] and sorted(e[103]["ctx_ann_ids"]) == [1, 2, 4]
    # image 2, "green": object 5 is green (referent), 6 blue
    assert e[104]["ref_ann_ids"] == [5] and e[104]["ctx_ann_ids"] == []
    # raw scores stored for sweeps
    assert e[101]["scores"]["ann_ids"] == [1, 2, 3, 4]
    assert e[101]["scores"]["prob"] == pytest.approx(designed_probs("mostly red", ["red", "green", "blue", "red"]).tolist(), abs=1e-5)
    assert e[101]["scores"]["cos"][2] == pytest.approx(0.0, abs=1e-5)

    # another configuration into the same file is refused unless overwrite
    cfg.clip.ctx_threshold = 0.005
    with pytest.raises(OutputExistsError):
        clip_ctx(cfg, progress=False)
    clip_ctx(cfg, overwrite=True, progress=False)
    e = load_ctxdb(ctxdb_path(cfg.workdir, "clip")).entries
    assert e[101]["ctx_ann_ids"] == [2]  # green now above the lower threshold

    # parity flag: red crops are seen as blue
    cfg.clip.ctx_threshold = 0.08
    cfg.clip.bgr_parity = True
    clip_ctx(cfg, overwrite=True, progress=False)
    e = load_ctxdb(ctxdb_path(cfg.workdir, "clip")).entries
    assert e[102]["ref_ann_ids"] == [] and sorted(e[102]["ctx_ann_ids"]) == [1, 4]


def test_clip_ctx_missing_inputs(tmp_path):
    cfg = ctx_cfg(tmp_path)
    with pytest.raises(InputError, match="heads.pt"):
        clip_ctx(cfg, progress=False)
    build_dagger(cfg, seed=0).save_heads(default_heads_path(cfg))
    (tmp_path / "images" / "img2.png").unlink()
    with pytest.raises(InputError, match="img2.png"):
        clip_ctx(cfg, progress=False)


# ---------------------------------------------------------------------------------------
# fine-tuning


def make_captions(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    images = tmp_path / "coco"
    images.mkdir()
    colours = [("red", RED), ("green", GREEN), ("blue", BLUE)]
    imgs, anns = [], []
    for i in range(n):
        name, rgb = colours[i % 3]
        im = Image.new("RGB", (88, 80), (30 * i, 100, 200 - 20 * i))
        ImageDraw.Draw(im).ellipse([10 + i, 12, 60, 70 - i], fill=rgb)
        im.save(images / f"COCO_train2014_{i:012d}.jpg", quality=90)
        imgs.append({"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"})
        anns.append({"id": 2 * i, "image_id": i, "caption": f"a {name} ball"})
        anns.append({"id": 2 * i + 1, "image_id": i, "caption": f"a {name} circle on a background"})
    path = tmp_path / "captions_train2014.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns}))
    return path, images


def ft_cfg(tmp_path, workdir, *overrides):
    cap, images = (tmp_path / "captions_train2014.json", tmp_path / "coco")
    if not cap.exists():
        make_captions(tmp_path)
    cfg = tiny_cfg(tmp_path, "clip.batch_size=2", "clip.epochs=2", "clip.lr=0.001", *overrides)
    cfg.workdir = tmp_path / workdir
    cfg.paths.captions = cap
    cfg.paths.captions_images_dir = images
    return cfg


def test_finetune_runs_resumes_and_loads(tmp_path):
    cfg = ft_cfg(tmp_path, "a")
    full = clip_finetune(cfg, progress=False)
    assert full["steps"] == 6 and full["epochs_done"] == 2
    assert all(math.isfinite(h["loss"]) for h in full["history"])
    heads = default_heads_path(cfg)
    assert heads.is_file() and (heads.parent / "heads_full.pt").is_file()  # demo: backbone trained
    assert (cfg.workdir / "clip" / "tb").is_dir() and (cfg.workdir / "clip" / "manifest.json").is_file()

    # interrupted after 2 steps (mid-epoch), then resumed: the same weights
    cfg_b = ft_cfg(tmp_path, "b")
    part = clip_finetune(cfg_b, progress=False, stop_after_steps=2)
    assert part == {"interrupted": True, "step": 2}
    assert not default_heads_path(cfg_b).exists()
    rest = clip_finetune(cfg_b, progress=False)
    assert rest["steps"] == 6
    a, b = load_dagger(cfg), load_dagger(cfg_b)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
    assert [h["loss"] for h in rest["history"]] == pytest.approx([h["loss"] for h in full["history"]], abs=1e-6)
    # the fine-tuned weights differ from the initial ones
    init = build_dagger(cfg, seed=cfg.seed)
    assert not torch.equal(init.image_head.weight, a.image_head.weight)
    assert not torch.equal(init.clip.visual.conv1.weight, a.clip.visual.conv1.weight)

    # another configuration into the same workdir is refused
    cfg.clip.lr = 0.002
    with pytest.raises(OutputExistsError):
        clip_finetune(cfg, progress=False)
    from sepnms.workdir import STAGE_SECTIONS

    # --overwrite starts again (the other configuration's last.pt is not resumed) and replaces it
    again = clip_finetune(cfg, overwrite=True, progress=False)
    assert again["steps"] == 6 and [h["step"] for h in again["history"]] == [3, 6]
    assert torch.load(cfg.workdir / "clip" / "last.pt", weights_only=True)["fingerprint"] == cfg.fingerprint(*STAGE_SECTIONS["clip"])


def test_finetune_frozen_heads_only_decreases_loss(tmp_path):
    cfg = ft_cfg(tmp_path, "frozen", "clip.freeze_backbone=true", "clip.epochs=8", "clip.lr=0.003")
    out = clip_finetune(cfg, progress=False)
    losses = [h["loss"] for h in out["history"]]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    heads = default_heads_path(cfg)
    # a tiny backbone without a checkpoint file cannot be rebuilt from a file: the full state is kept
    assert (heads.parent / "heads_full.pt").is_file()
    d = load_dagger(cfg)
    assert not d.image_head.training and d.frozen


def test_finetune_bad_inputs(tmp_path):
    cfg = ft_cfg(tmp_path, "bad")
    (tmp_path / "coco" / "COCO_train2014_000000000003.jpg").unlink()
    with pytest.raises(InputError, match="COCO_train2014_000000000003.jpg"):
        clip_finetune(cfg, progress=False)
    cfg2 = ft_cfg(tmp_path, "bad2", "clip.batch_size=64")
    cfg2.paths.captions = tmp_path / "missing.json"
    with pytest.raises(InputError, match="missing.json"):
        clip_finetune(cfg2, progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    cfg2.paths.captions = bad
    with pytest.raises(InputError, match="bad.json"):
        clip_finetune(cfg2, progress=False)


def test_finetune_and_scoring_share_one_transform(tmp_path):
    """The crops scored by clip-ctx / propose go through exactly what clip-finetune fed the heads:
    with no augmentation left (resize = crop = image side, no flip), a fine-tuning image and the
    crop of a box covering that whole image are the same tensor.  Fails if either path changes its
    resize (bilinear vs bicubic) or normalisation (0.5/0.5 vs CLIP mean/std)."""
    from sepnms.clip.finetune import CaptionImages

    rng_img = np.random.default_rng(3)
    image = Image.fromarray(rng_img.integers(0, 256, size=(40, 40, 3), dtype=np.uint8))
    cfg = tiny_cfg(tmp_path, "clip.resize=40", "clip.crop=40", "clip.image_size=32")
    ds = CaptionImages([], cfg.clip, context_length=8, seed=0)

    class NoFlip:
        def integers(self, lo, hi):
            return 0

        def random(self):
            return 0.99

    trained_on = ds.transform(image, NoFlip())
    scored = crop_boxes(image, [[0, 0, 40, 40]], 32)[0]
    assert trained_on.shape == scored.shape == (3, 32, 32)
    assert torch.allclose(trained_on, scored, atol=1e-6)
    assert torch.allclose(scored, to_dagger_input(image, 32))
    # the normalisation is GR-GAN's (0.5, 0.5): a white pixel maps to +1, a black one to -1
    white = to_dagger_input(Image.new("RGB", (4, 4), (255, 255, 255)), 4)
    black = to_dagger_input(Image.new("RGB", (4, 4), (0, 0, 0)), 4)
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, -torch.ones_like(black))
