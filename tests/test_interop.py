"""Importing the authors' released weights (sepnms.interop, ``sepnms import-weights``).

``ReleaseLike`` is written here from the key names, shapes and forward pass the issue describes
(the release's ``AttVanillaPredictorV2``), independently of the project's model: the project's
logits must equal its forward pass after the import.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torchvision.models.resnet import Bottleneck

from conftest import TINY
from test_bad_inputs import assert_one_clear_error
from sepnms.cli import main
from sepnms.config import ModelConfig
from sepnms.data.training_set import pad_words
from sepnms.errors import ConfigError, InputError
from sepnms.interop import export_release_weights, import_release_weights
from sepnms.io.checkpoints import torch_load_weights
from sepnms.models.relatedness import location_features
from sepnms.models.sepnms_model import build_model
from sepnms.text.vocab import build_vocab

SETS = sum((["--set", o] for o in TINY), [])


class ReleaseLike(nn.Module):
    """The release's module: key names and shapes from the issue text (paper dims by default)."""

    def __init__(self, sep: bool, c_in=1024, mid=512, c_out=2048, blocks=3, word=300, gru=256, hidden=1024,
                 embed=512, text=768, temperature=0.06):
        super().__init__()
        down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.head = nn.Sequential(Bottleneck(c_in, mid, 1, down), *[Bottleneck(c_out, mid) for _ in range(blocks - 1)])
        self.vis_a_fc = nn.Sequential(nn.Linear(c_out, hidden), nn.ReLU(), nn.Linear(hidden, embed))
        self.vis_r_fc = nn.Sequential(nn.Linear(c_out, hidden), nn.ReLU(), nn.Linear(hidden, embed))
        self.att_fc = nn.Linear(2 * embed, 1)
        self.rank_fc = nn.Linear(embed, 1)
        self.rnn = nn.GRU(word, gru, bidirectional=True, batch_first=True)
        self.sep = sep
        self.temperature = temperature
        if sep:
            self.vis_a_fck = nn.Sequential(nn.Linear(c_out + 5, hidden), nn.ReLU(), nn.Linear(hidden, embed))
            self.mapping_sent = nn.Sequential(nn.Linear(text, embed), nn.BatchNorm1d(embed), nn.ReLU(), nn.Dropout(0.1),
                                              nn.Linear(embed, embed), nn.BatchNorm1d(embed), nn.ReLU())

    def forward(self, roi_feat, packed_words, bert=None, lfeat=None):
        """roi_feat [N, R, C, 7, 7], packed GloVe sequences, bert [N, 768], lfeat [N, R, 5]
        -> (ref logit [N, R], ctx logit [N, R]) for Sep-NMS, (ctx logit,) for Ref-NMS."""
        n, r = roi_feat.shape[:2]
        pool = self.head(roi_feat.flatten(0, 1)).mean(dim=(2, 3)).view(n, r, -1)    # [N, R, 2048]
        words, lengths = pad_packed_sequence(self.rnn(packed_words)[0], batch_first=True)  # [N, S, 512]
        s = words.size(1)
        key = self.vis_a_fc(pool)                                                   # [N, R, 512]
        pair = torch.cat((key[:, :, None].expand(-1, -1, s, -1), words[:, None].expand(-1, r, -1, -1)), dim=3)
        att = self.att_fc(pair).squeeze(3)                                          # [N, R, S]
        pad = torch.arange(s)[None, :] >= lengths[:, None]                          # [N, S]
        att = att.masked_fill(pad[:, None, :], float("-inf")).softmax(dim=2)
        sent = (att[..., None] * words[:, None]).sum(dim=2)                         # [N, R, 512]
        merged = F.normalize(F.relu(self.vis_r_fc(pool) * sent), dim=2)
        ctx = self.rank_fc(merged).squeeze(2)
        if not self.sep:
            return (ctx,)
        visual = self.vis_a_fck(torch.cat((pool, lfeat), dim=2))                    # [N, R, 512]
        text = self.mapping_sent(bert)                                              # [N, 512]
        return (visual * text[:, None]).sum(dim=2) / self.temperature, ctx


def randomise(module: nn.Module, seed: int) -> None:
    """Random weights everywhere, BN running statistics included (so eval-mode BN matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var") or (name.endswith("weight") and t.dim() == 1):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / max(1, t[0].numel() if t.dim() > 1 else 1)) ** 0.5)


# tokens of refs of every split: Ref-NMS counts them all (count >= 2, in GloVe)
REFS = {
    "train": [["the", "red", "cup", "left"], ["man", "on", "left"], ["the", "cup"]],
    "val": [["red", "zebra", "xqzt"], ["zebra", "on", "the", "right"]],
    "testA": [["man", "right"], ["qqq", "thing"]],
}


def glove_for(words, dim=300, seed=3):
    g = np.random.default_rng(seed)
    return {w: g.standard_normal(dim).astype(np.float32) for w in words}


def test_vocabulary_follows_refnms_rule_over_all_splits():
    from sepnms.engine.prepare import vocab_token_lists

    glove = glove_for(["the", "red", "cup", "left", "man", "on", "zebra", "right", "thing"])  # no xqzt, qqq
    exprs = [{"tokens": t, "split": s} for s, ts in REFS.items() for t in ts]
    refdb = SimpleNamespace(expressions=exprs, split=lambda s: [e for e in exprs if e["split"] == s])
    cfg = SimpleNamespace(prepare=SimpleNamespace(vocab_splits="all"), train=SimpleNamespace(train_split="train"))
    vocab, matrix = build_vocab(vocab_token_lists(cfg, refdb), glove, 2)
    # counted by hand: the 4, red 2, cup 2, left 2, man 2, on 2, zebra 2, right 2 (thing 1, xqzt/qqq not in GloVe)
    assert vocab.words == ["<unk>", "cup", "left", "man", "on", "red", "right", "the", "zebra"]
    assert not matrix[0].any() and np.array_equal(matrix[vocab.index["zebra"]], glove["zebra"])
    cfg.prepare.vocab_splits = "train"
    vocab, _ = build_vocab(vocab_token_lists(cfg, refdb), glove, 2)
    assert vocab.words == ["<unk>", "cup", "left", "the"]  # train only: the 3, cup 2, left 2


def paper_inputs(vocab, matrix, n_rois=4, seed=5):
    g = torch.Generator().manual_seed(seed)
    exprs = [t for ts in REFS.values() for t in ts][:4]                           # lengths 4, 3, 2, 3
    ids = [vocab.encode(t) for t in exprs]
    roi = torch.randn(n_rois, 1024, 7, 7, generator=g)
    boxes = torch.tensor([[10.0, 20.0, 200.0, 180.0], [0.0, 0.0, 640.0, 480.0], [300.0, 50.0, 310.5, 400.0],
                          [100.0, 100.0, 160.0, 130.0]])[:n_rois]
    loc = location_features(boxes, 640.0, 480.0)                                   # [R, 5]
    bert = torch.randn(len(exprs), 768, generator=g)
    return ids, roi, loc, bert


def release_forward(release, ids, matrix, roi, loc, bert):
    """The release's input packing: GloVe rows of each token list, padded and packed by length."""
    seqs = [torch.from_numpy(matrix[i]) for i in ids]                             # [len, 300] each
    padded = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    packed = pack_padded_sequence(padded, torch.tensor([len(s) for s in seqs]), batch_first=True, enforce_sorted=False)
    n = len(ids)
    lfeat = None if loc is None else loc[None].expand(n, -1, -1)
    return release(roi[None].expand(n, -1, -1, -1, -1), packed, bert, lfeat)


@pytest.mark.parametrize("fmt", ["sepnms-release", "refnms-release"])
def test_imported_release_scores_identically(fmt, tmp_path):
    sep = fmt == "sepnms-release"
    glove = glove_for(["the", "red", "cup", "left", "man", "on", "zebra", "right", "thing"])
    vocab, matrix = build_vocab([t for ts in REFS.values() for t in ts], glove, 2)
    release = ReleaseLike(sep)
    randomise(release, seed=11)
    release.eval()
    # as the authors saved it (PyTorch 1.1: the legacy, non-zip serialisation), loaded weights_only
    path = tmp_path / "att_vanilla_refcoco_b.pth"
    torch.save(release.state_dict(), path, _use_new_zipfile_serialization=False)
    state = torch_load_weights(path)

    model = build_model(ModelConfig(), torch.from_numpy(matrix), "sepnms" if sep else "refnms")
    report = import_release_weights(model, state, fmt, path)
    assert report.tensors == len(release.state_dict()) and report.absent_counters == []
    model.eval()

    ids, roi, loc, bert = paper_inputs(vocab, matrix)
    with torch.no_grad():
        expected = release_forward(release, ids, matrix, roi, loc, bert)
        feats = model.head(roi)                                                    # [R, 2048]
        word_ids, mask = pad_words(ids)
        ref, ctx = model.relatedness(feats[None], loc[None], word_ids, mask, bert if sep else None)
    torch.testing.assert_close(ctx, expected[-1], rtol=1e-5, atol=1e-5)
    assert ctx.std() > 1e-3  # the comparison is not between constants
    if sep:
        torch.testing.assert_close(ref, expected[0], rtol=1e-5, atol=1e-5)
        assert ref.std() > 1e-3
    else:
        assert ref is None
    # and back: the export holds the release's tensors under its names
    back = export_release_weights(model)
    assert set(back) == set(release.state_dict())
    assert all(torch.equal(back[k], v) for k, v in release.state_dict().items())


def small_model(model_type="sepnms"):
    cfg = ModelConfig(feat_channels=16, head_mid_channels=8, head_out_channels=32, head_blocks=1, word_dim=6,
                      gru_hidden=4, hidden_dim=12, embed_dim=8, text_dim=10)
    return build_model(cfg, torch.randn(5, 6), model_type)


def small_release(sep=True):
    return ReleaseLike(sep, c_in=16, mid=8, c_out=32, blocks=1, word=6, gru=4, hidden=12, embed=8, text=10)


def test_import_is_strict_and_names_the_keys():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = small_release().state_dict()

    missing = {k: v for k, v in good.items() if not k.startswith("rank_fc.")}
    with pytest.raises(InputError, match=r"2 missing key\(s\): rank_fc.weight \[1x8\], rank_fc.bias \[1\]"):
        import_release_weights(model, missing, "sepnms-release", "f.pth")
    with pytest.raises(InputError, match=r"1 unexpected key\(s\): extra.weight \[3\]"):
        import_release_weights(model, {**good, "extra.weight": torch.zeros(3)}, "sepnms-release", "f.pth")
    wrong = {**good, "att_fc.weight": torch.zeros(1, 7)}
    with pytest.raises(InputError, match=r"att_fc.weight is 1x7 in the file but 1x16 in the model"):
        import_release_weights(model, wrong, "sepnms-release", "f.pth")
    # a Ref-NMS file given as Sep-NMS and the reverse: the hint names the other format
    refnms_file = small_release(sep=False).state_dict()
    with pytest.raises(InputError, match="use --format refnms-release"):
        import_release_weights(model, refnms_file, "sepnms-release", "f.pth")
    with pytest.raises(InputError, match="use --format sepnms-release"):
        import_release_weights(small_model("refnms"), good, "refnms-release", "f.pth")
    with pytest.raises(InputError, match="not tensors"):
        import_release_weights(model, {**good, "rank_fc.bias": [0.0]}, "sepnms-release", "f.pth")
    with pytest.raises(InputError, match="NaN or Inf"):
        import_release_weights(model, {**good, "rank_fc.bias": torch.tensor([float("nan")])}, "sepnms-release")
    with pytest.raises(InputError, match="expected a state dict"):
        import_release_weights(model, [1, 2], "sepnms-release", "f.pth")
    with pytest.raises(ConfigError, match="needs a 'refnms' model"):
        import_release_weights(model, good, "refnms-release")
    # nothing was copied by any failed import
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    # a DataParallel save ('module.' prefix) and a file without BN step counters still import
    wrapped = {"module." + k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}
    report = import_release_weights(model, wrapped, "sepnms-release")
    assert report.stripped_prefix == "module."
    assert report.absent_counters and all(k.endswith("num_batches_tracked") for k in report.absent_counters)
    assert torch.equal(model.state_dict()["ref_relatedness.text_mlp.5.running_var"], good["mapping_sent.5.running_var"])
    assert torch.equal(model.state_dict()["ctx_relatedness.embedding.weight"], before["ctx_relatedness.embedding.weight"])


def _demo_release_file(prepared, path: Path, fmt: str, seed: int = 0) -> dict:
    """A release-layout state dict with the demo config's dims (the tiny world's models)."""
    m = prepared.model
    rel = ReleaseLike(fmt == "sepnms-release", c_in=m.feat_channels, mid=m.head_mid_channels, c_out=m.head_out_channels,
                      blocks=m.head_blocks, word=m.word_dim, gru=m.gru_hidden, hidden=m.hidden_dim, embed=m.embed_dim,
                      text=m.text_dim, temperature=m.temperature)
    randomise(rel, seed)
    torch.save(rel.state_dict(), path)
    return rel.state_dict()


def test_cli_import_weights_writes_the_checkpoint_propose_reads(tiny_world, prepared, tmp_path, capsys):
    from sepnms.config import load_config
    from sepnms.data.workspace import Workspace
    from sepnms.engine.propose import load_trained

    work = tmp_path / "work"
    shutil.copytree(prepared.workdir, work)
    src = tmp_path / "att_vanilla_refcoco_b.pth"
    state = _demo_release_file(prepared, src, "refnms-release")
    base = ["--config", str(tiny_world / "config.yaml"), "--set", f"workdir={work}", "--quiet", *SETS]
    capsys.readouterr()
    assert main(["import-weights", *base, "--from", str(src), "--format", "refnms-release"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(work / "models" / "refnms" / "best.pt") and report["tensors"] == len(state)

    cfg = load_config(tiny_world / "config.yaml", TINY + [f"workdir={work}"])
    model = load_trained(cfg, Workspace.open(cfg, need_text=False), "refnms")
    assert torch.equal(model.state_dict()["ctx_relatedness.gru.weight_hh_l0_reverse"], state["rnn.weight_hh_l0_reverse"])
    assert torch.equal(model.state_dict()["head.0.bn3.running_mean"], state["head.0.bn3.running_mean"])

    # propose scores with it: its ctx_score is sigmoid(the release module's forward) on the same pooled RoIs
    from sepnms.data.head_features import HeadCache
    from sepnms.engine.propose import propose
    from sepnms.io.proposals import proposals_path, read_proposals
    from sepnms.models.pooling import pool_rois

    propose(cfg, "refnms", splits=["val"], progress=False)
    ws = Workspace.open(cfg, need_text=False)
    table = read_proposals(proposals_path(work, "refnms", "val")).by_sent_id()
    release = ReleaseLike(False, c_in=cfg.model.feat_channels, mid=cfg.model.head_mid_channels,
                          c_out=cfg.model.head_out_channels, blocks=cfg.model.head_blocks, word=cfg.model.word_dim,
                          gru=cfg.model.gru_hidden, hidden=cfg.model.hidden_dim, embed=cfg.model.embed_dim)
    release.load_state_dict(state)
    release.eval()
    expr = ws.refdb.split("val")[0]
    row = table[int(expr["sent_id"])]
    head, scale = HeadCache.for_config(cfg, ws.refdb).get(int(expr["image_id"]))
    pooled = pool_rois(head, torch.from_numpy(np.asarray(row.box, np.float32)), scale, cfg.model.feat_stride,
                       cfg.model.pool_size, cfg.model.pooling)                                  # [M, C, 7, 7]
    with torch.no_grad():
        (ctx,) = release_forward(release, [ws.word_ids(expr["tokens"], None)], ws.word_vectors, pooled, None, None)
    assert len(row.box) > 1 and np.ptp(row.scores["ctx_score"]) > 1e-4  # not a comparison of constants
    np.testing.assert_allclose(row.scores["ctx_score"], torch.sigmoid(ctx[0]).numpy(), rtol=1e-5, atol=1e-6)

    # a second import without --overwrite is refused; with it, it replaces the checkpoint
    rc = main(["import-weights", *base, "--from", str(src), "--format", "refnms-release"])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["import-weights", *base, "--from", str(src), "--format", "refnms-release", "--overwrite"]) == 0


@pytest.mark.parametrize("fault", ["layout", "not_torch", "code"])
def test_cli_bad_release_file_is_one_line_exit_2(tiny_world, prepared, tmp_path, capsys, fault):
    work = tmp_path / "work"
    shutil.copytree(prepared.workdir, work)
    src = tmp_path / "release.pth"
    if fault == "layout":   # a Ref-NMS file given as Sep-NMS
        _demo_release_file(prepared, src, "refnms-release")
        needle = "missing key(s): vis_a_fck.0.weight"
    elif fault == "not_torch":
        src.write_text("this is not a checkpoint\n")
        needle = "not a loadable checkpoint"
    else:                   # a pickle that would run code
        torch.save({"x": SimpleNamespace(a=1)}, src)
        needle = "refused"
    capsys.readouterr()
    rc = main(["import-weights", "--config", str(tiny_world / "config.yaml"), "--set", f"workdir={work}", "--quiet",
               *SETS, "--from", str(src), "--format", "sepnms-release"])
    out, err = capsys.readouterr()
    assert_one_clear_error(rc, out, err, "import-weights", src, needle)
    assert not (work / "models" / "sepnms" / "best.pt").exists()
