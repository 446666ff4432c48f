"""MAttNet's released checkpoints: the legacy container parsed without running it, and
``sepnms import-weights --format mattnet-release`` feeding ``sepnms ground eval``.

The files are written by ``_torch03`` (an independent byte-level writer of what Python 2.7 +
PyTorch 0.3 / 0.4 ``torch.save({'model': JointMatching, 'opt': opt})`` produce), not by the loader.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from _py2pickle import Build, Global, PersId, Ref
from _torch03 import ReleaseWriter, release_bytes
from test_bad_inputs import assert_one_clear_error
from sepnms.cli import main
from sepnms.config import load_config, save_config
from sepnms.errors import InputError, UnsafePickleError
from sepnms.grounding.mattnet import build_mattnet
from sepnms.interop import load_mattnet_release
from sepnms.interop.legacy_torch import read_legacy_container
from sepnms.interop.mattnet_unpickler import STUBS as _STUBS

SMALL = ["grounding.word_embedding_size=16", "grounding.word_vec_size=12", "grounding.rnn_hidden_size=10",
         "grounding.jemb_dim=14", "grounding.num_atts=4"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_net(cfg, vocab_size: int, seed: int = 0):
    """MAttNet at the config's sizes with random values everywhere (BN statistics and counters too)."""
    net = build_mattnet(cfg.grounding, cfg.model, vocab_size)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in net.state_dict().items():
            if k.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                t.fill_(3)
    return net.eval()


def _opt(cfg, vocab_size: int) -> dict:
    """What MAttNet's tools/train.py keeps in opt (a subset of its argparse options + the sizes it adds)."""
    g = cfg.grounding
    return {"dataset": cfg.dataset, "splitBy": cfg.split_by, "id": "mrcn_cmr_with_st", "vocab_size": vocab_size,
            "word_embedding_size": g.word_embedding_size, "word_vec_size": g.word_vec_size,
            "rnn_hidden_size": g.rnn_hidden_size, "jemb_dim": g.jemb_dim, "num_atts": g.num_atts,
            "num_cxt": g.num_cxt, "pool5_dim": cfg.model.feat_channels, "fc7_dim": cfg.model.head_out_channels,
            "rnn_num_layers": 1, "bidirectional": 1, "rnn_type": "lstm", "variable_lengths": 1,
            "word_drop_out": 0.5, "visual_init_norm": 20.0, "start_from": None, "learning_rate": 4e-4}


@pytest.fixture(scope="module")
def small():
    cfg = load_config("demo", SMALL)
    net = _random_net(cfg, 23)
    return cfg, net


@pytest.mark.parametrize("era,rebuild", [("0.3", "_rebuild_tensor"), ("0.4", "_rebuild_tensor_v2")])
def test_both_eras_load_to_mattnets_keys_and_exact_tensors(small, tmp_path, era, rebuild):
    cfg, net = small
    path = tmp_path / "mrcn_cmr_with_st.pth"
    path.write_bytes(release_bytes(net, _opt(cfg, 23), era))
    rel = load_mattnet_release(path)
    ours = net.state_dict()
    assert list(rel.state_dict) == list(ours) and len(ours) == 128       # MAttNet's names, MAttNet's order
    counters = [k for k in ours if k.endswith("num_batches_tracked")]
    assert rel.supplied == counters and len(counters) == 13               # absent before PyTorch 0.4.1
    for k, v in rel.state_dict.items():
        if k in counters:
            assert v.dtype == torch.long and v.shape == () and int(v) == 0
        else:
            assert v.dtype == torch.float32 and v.is_contiguous()
            assert torch.equal(v, ours[k]), k
    assert rel.rebuild == rebuild
    assert rel.opt == _opt(cfg, 23) and type(rel.opt) is dict
    assert rel.class_sources["layers.joint_match.JointMatching"].endswith("lib/layers/joint_match.py")


def test_lstm_weights_are_read_as_views_at_their_offsets_of_one_flat_buffer(small, tmp_path):
    cfg, net = small
    w = ReleaseWriter("0.3", lstm_gap=5)          # junk floats between the views: only the offsets find them
    data = w.container({"model": w.module(net), "opt": _opt(cfg, 23)})
    lstm = net.rnn_encoder.rnn
    sizes = [p.numel() for p in lstm.parameters()]
    flat = [k for k, a in w.storages.items() if len(a) == sum(sizes) + 5 * len(sizes)]
    assert len(flat) == 1 and len(w.storages) == 128 - 13 - 8 + 1        # one storage holds all eight
    (tmp_path / "r.pth").write_bytes(data)
    rel = load_mattnet_release(tmp_path / "r.pth")
    for name, p in lstm.named_parameters():
        got = rel.state_dict[f"rnn_encoder.rnn.{name}"]
        assert torch.equal(got, p.detach()), name
        assert (got != -7.0).all()
    # the container holds that one flat buffer, junk included
    _, _, storages = read_legacy_container(data, tmp_path / "r.pth")
    assert storages[flat[0]].numel() == sum(sizes) + 5 * len(sizes) and (storages[flat[0]] == -7.0).sum() == 5 * 8


def test_container_matches_torchs_own_legacy_writer(tmp_path):
    """The container parser reads what torch's legacy (non-zip) writer writes: same framing."""
    from sepnms.interop.legacy_torch import materialize

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(7.0)[2:], "c": torch.randn(2, 3).t()}
    buf = io.BytesIO()
    torch.save(tensors, buf, _use_new_zipfile_serialization=False)
    obj, unpickler, storages = read_legacy_container(buf.getvalue(), tmp_path / "t.pt")
    assert set(obj) == set(tensors)
    for k, ref in obj.items():
        assert torch.equal(materialize(ref, storages), tensors[k]), k
    assert unpickler.rebuilds == {"_rebuild_tensor_v2"}


def _refused(path: Path, *needles: str) -> str:
    with pytest.raises(InputError) as exc:
        load_mattnet_release(path)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and str(path) in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_malicious_files_are_refused_without_running_anything(small, tmp_path, capsys):
    cfg, net = small
    marker = tmp_path / "ran"
    w = ReleaseWriter("0.3")
    evil_opt = {**_opt(cfg, 23), "id": Global("os", "system", (f"touch {marker}",))}
    evil = tmp_path / "evil.pth"
    evil.write_bytes(w.container({"model": w.module(net), "opt": evil_opt}))
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        load_mattnet_release(evil)
    assert not marker.exists()

    # a module class persistent id that smuggles a callable, a rebuild call on a bogus storage,
    # builtins eval, and a known module path with an unknown name
    w2 = ReleaseWriter("0.3")
    w2.new_storage(torch.zeros(1).numpy())
    cases = {
        "pid": {"model": PersId(("module", Global("posix", "system", (f"touch {marker}",)), None, None)), "opt": {}},
        "eval": {"model": Global("__builtin__", "eval", ("__import__('os').system('touch %s')" % marker,)), "opt": {}},
        "name": {"model": Global("layers.joint_match", "os", ()), "opt": {}},
    }
    for tag, top in cases.items():
        p = tmp_path / f"{tag}.pth"
        p.write_bytes(w2.container(top))
        with pytest.raises(UnsafePickleError, match="refused"):
            load_mattnet_release(p)
    # BUILD opcodes that would move a validated tensor past its storage, or set attributes on the
    # OrderedDict class / a module class for the rest of the process
    from collections import OrderedDict

    builds = {"od": Build(Ref("collections", "OrderedDict"), (None, {"__repr__": "x"})),
              "cls": Build(Ref("layers.joint_match", "JointMatching"), (None, {"qualname": "x"}))}
    before = dict(vars(OrderedDict))
    for tag, node in builds.items():
        p = tmp_path / f"build_{tag}.pth"
        p.write_bytes(w2.container({"model": node, "opt": {}}))
        _refused(p)
    assert dict(vars(OrderedDict)) == before

    class MovingWriter(ReleaseWriter):
        """Its first tensor, once validated, is BUILT to an offset far past its storage."""

        def tensor(self, *args, **kwargs):
            node = super().tensor(*args, **kwargs)
            if not getattr(self, "moved", False):
                self.moved = True
                return Build(node, (None, {"offset": 10 ** 6}))
            return node

    mw = MovingWriter("0.3")
    (tmp_path / "moved.pth").write_bytes(mw.container({"model": mw.module(net), "opt": _opt(cfg, 23)}))
    _refused(tmp_path / "moved.pth", "sets the state of a TensorRef")
    assert _STUBS[("layers.joint_match", "JointMatching")].qualname == "layers.joint_match.JointMatching"
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(w2.container({"model": Global("torch._utils", "_rebuild_tensor", ("not a storage", 0, (1,), (1,))),
                                    "opt": {}}))
    _refused(bogus, "not a storage")
    assert not marker.exists()

    # through the CLI: exit 2, one line naming the file and the name it refused
    cfg_path = tmp_path / "cfg.yaml"
    save_config(cfg.model_copy(update={"workdir": tmp_path / "work"}), cfg_path)
    rc = main(["import-weights", "--format", "mattnet-release", "--from", str(evil), "-c", str(cfg_path)])
    out, err = capsys.readouterr()
    assert_one_clear_error(rc, out, err, "import-weights", evil, "os.system")
    assert not marker.exists() and not (tmp_path / "work" / "models").exists()


def test_truncated_corrupt_and_foreign_files_are_one_line_errors(small, tmp_path):
    cfg, net = small
    w = ReleaseWriter("0.3")
    top = {"model": w.module(net), "opt": _opt(cfg, 23)}
    good = w.container(top)
    data_start = len(good) - sum(8 + 4 * len(a) for a in w.storages.values())
    last = w.storages[max(w.storages)]
    cuts = {"in the magic number": 5, "in the object pickle": 400, "in the key list": data_start - 3,
            "in the data section": data_start + 8 + 3, "in the last storage": len(good) - 4 * len(last) // 2}
    for what, n in cuts.items():
        p = tmp_path / "cut.pth"
        p.write_bytes(good[:n])
        _refused(p, "not a MAttNet release", "truncated")
    (tmp_path / "long.pth").write_bytes(good + b"\0" * 3)
    _refused(tmp_path / "long.pth", "3 unexpected bytes")
    (tmp_path / "keys.pth").write_bytes(w.container(top, keys=sorted(w.storages, reverse=True)))
    _refused(tmp_path / "keys.pth", "sorted, once each")
    (tmp_path / "empty.pth").write_bytes(b"")
    _refused(tmp_path / "empty.pth", "magic number")
    torch.save({"model": {}, "opt": {}}, tmp_path / "zip.pth")
    _refused(tmp_path / "zip.pth", "zip-format")
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buf, _use_new_zipfile_serialization=False)  # a legacy state dict
    (tmp_path / "sd.pth").write_bytes(buf.getvalue())
    _refused(tmp_path / "sd.pth", "expected {'model': JointMatching, 'opt': dict}")
    with pytest.raises(InputError, match="not found"):
        load_mattnet_release(tmp_path / "absent.pth")
    # a storage that declares more elements than the file holds: refused before anything is allocated
    w2 = ReleaseWriter("0.3")
    key = w2.new_storage(torch.zeros(2).numpy())
    huge = {"model": Global("torch._utils", "_rebuild_tensor", (
        PersId(("storage", Ref("torch", "FloatStorage"), key, "cuda:0", 10 ** 12, None)), 0, (2,), (1,))), "opt": {}}
    (tmp_path / "huge.pth").write_bytes(w2.container(huge))
    _refused(tmp_path / "huge.pth", "more than the file holds")
    # a tensor reaching past its storage
    past = {"model": Global("torch._utils", "_rebuild_tensor", (
        PersId(("storage", Ref("torch", "FloatStorage"), key, "cuda:0", 2, None)), 1, (2,), (1,))), "opt": {}}
    (tmp_path / "past.pth").write_bytes(w2.container(past))
    _refused(tmp_path / "past.pth", "reaches past its storage")
    # a stride-0 tensor of 10^12 elements on a 2-element storage: refused before it is copied
    wide = {"model": Global("torch._utils", "_rebuild_tensor", (
        PersId(("storage", Ref("torch", "FloatStorage"), key, "cuda:0", 2, None)), 0, (10 ** 6, 10 ** 6), (0, 0))),
        "opt": {}}
    (tmp_path / "wide.pth").write_bytes(w2.container(wide))
    _refused(tmp_path / "wide.pth", "more elements than its storage")


def _tiny_cfg(tiny_world, tmp_path, extra=()):
    from conftest import TINY

    return load_config(tiny_world / "config.yaml", TINY + SMALL + [f"workdir={tmp_path / 'work'}", *extra])


def test_import_then_ground_eval_scores_as_the_model_built_from_the_same_tensors(tiny_world, tmp_path, capsys):
    from sepnms.engine.ground.train import load_trained
    from sepnms.grounding.candidates import predict, gt_sets
    from sepnms.grounding.data import GroundingData, VisualFeatures
    from sepnms.grounding.vocab import GroundingVocab

    cfg = _tiny_cfg(tiny_world, tmp_path)
    w2i = json.loads(Path(cfg.paths.data_json).read_text())["word_to_ix"]
    words = [w for w, _ in sorted(w2i.items(), key=lambda kv: kv[1])]
    net = _random_net(cfg, len(words), seed=1)
    release = tmp_path / "mrcn_cmr_with_st.pth"
    release.write_bytes(release_bytes(net, _opt(cfg, len(words)), "0.3"))
    cfg_path = tmp_path / "cfg.yaml"
    save_config(cfg, cfg_path)

    assert main(["import-weights", "--format", "mattnet-release", "--from", str(release), "-c", str(cfg_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensors"] == 115 and report["supplied_counters"] == 13 and report["vocab_size"] == len(words)
    loaded, vocab = load_trained(cfg)
    assert vocab.words == words
    for k, v in net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[k], v), k

    assert main(["ground", "eval", "-c", str(cfg_path), "-q", "--methods", "gt", "--splits", "val"]) == 0
    capsys.readouterr()
    got = json.loads((Path(cfg.workdir) / "ground" / "predictions" / "gt_val.json").read_text())
    data = GroundingData.open(cfg)
    sets = gt_sets(data, "val")
    expected = predict(net, GroundingVocab(words), VisualFeatures(cfg, data, size=0), data, sets, cfg)
    assert len(got) == len(expected) > 0
    for row in got:
        k = expected[row["sent_id"]]
        assert k is not None and row["box"] == pytest.approx(sets[row["sent_id"]].xywh(k))
    # the choices are the model's, not a constant: some sentence picks a box other than its first candidate
    assert any((expected[s] != sets[s].boxes[0]).any() for s in expected)

    # again without --overwrite: refused; another config's sizes: a one-line error naming the --set
    rc = main(["import-weights", "--format", "mattnet-release", "--from", str(release), "-c", str(cfg_path)])
    out, err = capsys.readouterr()
    assert_one_clear_error(rc, out, err, "import-weights", "--overwrite")
    other = tmp_path / "other.yaml"
    save_config(_tiny_cfg(tiny_world, tmp_path, ["grounding.jemb_dim=8"]), other)
    rc = main(["import-weights", "--format", "mattnet-release", "--from", str(release), "-c", str(other), "--overwrite"])
    out, err = capsys.readouterr()
    assert_one_clear_error(rc, out, err, "import-weights", "jemb_dim", "--set grounding.jemb_dim=14")


def test_a_data_json_of_another_vocabulary_is_named(tiny_world, tmp_path, capsys, small):
    cfg = _tiny_cfg(tiny_world, tmp_path)
    _, net = small                                   # 23 words: not the world's word_to_ix
    release = tmp_path / "r.pth"
    release.write_bytes(release_bytes(net, _opt(cfg, 23), "0.4"))
    cfg_path = tmp_path / "cfg.yaml"
    save_config(cfg, cfg_path)
    rc = main(["import-weights", "--format", "mattnet-release", "--from", str(release), "-c", str(cfg_path)])
    out, err = capsys.readouterr()
    assert_one_clear_error(rc, out, err, "import-weights", "data.json", "word_to_ix", "opt vocab_size 23")
    # an opt the network cannot follow (two LSTM layers) is named before anything is built
    (tmp_path / "two.pth").write_bytes(release_bytes(net, {**_opt(cfg, 23), "rnn_num_layers": 2}, "0.3"))
    rc = main(["import-weights", "--format", "mattnet-release", "--from", str(tmp_path / "two.pth"), "-c", str(cfg_path)])
    out, err = capsys.readouterr()
    assert_one_clear_error(rc, out, err, "import-weights", "two.pth", "rnn_num_layers=2")


def test_word_to_ix_must_index_0_to_v_minus_1_once_each(tmp_path):
    from sepnms.io.mattnet_data import word_list

    assert word_list({"word_to_ix": {"<PAD>": 0, "man": 2, "<UNK>": 1}}, tmp_path) == ["<PAD>", "<UNK>", "man"]
    for bad, needle in [({}, "missing"), ({"word_to_ix": {"a": 0, "b": 0}}, "once each"),
                        ({"word_to_ix": {"a": 0, "b": 5}}, "once each"), ({"word_to_ix": {"a": "0"}}, "not an index")]:
        with pytest.raises(InputError, match=needle) as exc:
            word_list(bad, tmp_path / "data.json")
        assert "word_to_ix" in str(exc.value) and "data.json" in str(exc.value)
