"""Several processes: torchrun (gloo, CPU) for train and propose, ``--shard i/n`` + ``sepnms merge``
for propose / encode-text / clip-ctx, and the part-file rules (stale parts, incomplete merges).

The sharded outputs must equal the single-process ones (scores allclose 1e-5)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY

TORCHRUN_TIMEOUT = 300


def _copy(cfg, tmp_path: Path, name: str):
    dst = tmp_path / name
    shutil.copytree(cfg.workdir, dst)
    return cfg.model_copy(update={"workdir": dst})


def _random_checkpoint(cfg, model_type: str = "sepnms", seed: int = 0) -> Path:
    """A randomly initialised model saved as ``best.pt``, so ``propose`` can load it."""
    from sepnms.engine.checkpoint import save_initial_checkpoint

    return save_initial_checkpoint(cfg, model_type, seed)


def _cli_args(world: Path, workdir: Path, *extra: str) -> list[str]:
    sets = [a for o in TINY + [f"workdir={workdir}"] for a in ("--set", o)]
    return ["--config", str(world / "config.yaml"), *sets, "--quiet", *extra]


def _torchrun(command: str, world: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sepnms.cli", command, *_cli_args(world, workdir, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _assert_same_proposals(a_paths: dict, b_paths: dict) -> None:
    from sepnms.io.proposals import read_proposals

    assert set(a_paths) == set(b_paths)
    for split in a_paths:
        a, b = read_proposals(a_paths[split]), read_proposals(b_paths[split])
        assert len(a) > 0 and [e.sent_id for e in a] == [e.sent_id for e in b], split
        assert a.attrs == b.attrs
        for x, y in zip(a, b):
            assert x.image_id == y.image_id and x.ref_id == y.ref_id
            assert np.array_equal(x.box, y.box) and np.array_equal(x.cls_idx, y.cls_idx)
            assert np.array_equal(x.det_score, y.det_score)
            assert sorted(x.scores) == sorted(y.scores)
            for col in x.scores:
                np.testing.assert_allclose(x.scores[col], y.scores[col], rtol=0, atol=1e-5)


SPLITS = ["val", "testA", "testB"]


# ---------------------------------------------------------------------------------------
# torchrun


def test_torchrun_train_ddp(prepared, tiny_world, tmp_path):
    """2 ranks, gloo: trains, rank 0 writes checkpoints; the all-reduced, rank-split validation loss
    equals the single-process validation of the saved best weights."""
    from sepnms.engine.inputs import TrainingSet, Workspace, collate
    from sepnms.engine.checkpoint import load_checkpoint
    from sepnms.engine.train import RoIForward, train, validation_loss
    from sepnms.workdir import model_dir
    from sepnms.errors import InputError
    from sepnms.models.sepnms_model import build_model

    cfg = _copy(prepared, tmp_path, "ddp")
    _torchrun("train", tiny_world, cfg.workdir, "--model", "sepnms")
    out = model_dir(cfg, "sepnms")
    summary = json.loads((out / "train_summary.json").read_text())
    ws = Workspace.open(cfg, need_text=True, need_ctx=True)
    n_train = len(ws.refdb.split(cfg.train.train_split))
    per_rank_batches = (n_train // cfg.train.batch_size) // 2
    assert per_rank_batches >= 1
    assert summary["steps"] == per_rank_batches * cfg.train.epochs
    last = load_checkpoint(out / "last.pt", cfg, "sepnms")
    assert last["state"]["world_size"] == 2 and last["state"]["step"] == summary["steps"]

    best = load_checkpoint(out / "best.pt", cfg, "sepnms")
    model = build_model(cfg.model, torch.from_numpy(ws.word_vectors), "sepnms")
    model.load_state_dict(best["model"])
    val = TrainingSet(ws, cfg.train.val_split, cfg.train.val_max_expressions, fixed_epoch=-1)
    loader = torch.utils.data.DataLoader(val, batch_size=cfg.train.batch_size, collate_fn=collate)
    single = validation_loss(RoIForward(model), loader, "cpu", True)
    assert single == pytest.approx(summary["best_val_loss"], rel=1e-5)

    # a 2-process run does not resume in one process (the epoch position is per rank)
    with pytest.raises(InputError, match="same number"):
        train(cfg, "sepnms", resume=True, progress=False)


def test_torchrun_propose_equals_single_process(prepared, tiny_world, tmp_path):
    from sepnms.engine.propose import propose
    from sepnms.io.proposals import proposals_path

    single = _copy(prepared, tmp_path, "single")
    dist = _copy(prepared, tmp_path, "dist")
    for cfg in (single, dist):
        _random_checkpoint(cfg)
    expected = propose(single, "sepnms", SPLITS, progress=False)
    _torchrun("propose", tiny_world, dist.workdir, "--model", "sepnms", "--splits", *SPLITS, "--flush-every", "2")
    got = {s: proposals_path(dist.workdir, "sepnms", s) for s in SPLITS}
    assert all(p.is_file() and not p.with_name(p.stem + ".parts").exists() for p in got.values())
    _assert_same_proposals(expected, got)


def test_torchrun_encode_text_equals_single_process(prepared, tiny_world, tmp_path):
    from sepnms.engine.encode_text import vectors_path
    from sepnms.text.sentence_encoder import load_vectors

    dist = _copy(prepared, tmp_path, "dist")
    _torchrun("encode-text", tiny_world, dist.workdir, "--flush-every", "3")
    a, b = load_vectors(vectors_path(prepared)), load_vectors(vectors_path(dist))
    assert a.keys() == b.keys() and len(a) > 0
    for sid in a:
        np.testing.assert_allclose(a[sid], b[sid], rtol=0, atol=1e-5)
    assert not vectors_path(dist).with_name("sentence_vectors.parts").exists()


# ---------------------------------------------------------------------------------------
# --shard i/n + merge, in process


def test_shard_and_merge_propose_via_cli(prepared, tiny_world, tmp_path):
    from sepnms.cli import main
    from sepnms.engine.propose import merge_proposals, propose
    from sepnms.errors import InputError

    single = _copy(prepared, tmp_path, "single")
    shards = _copy(prepared, tmp_path, "shards")
    for cfg in (single, shards):
        _random_checkpoint(cfg)
    expected = propose(single, "sepnms", SPLITS, progress=False)
    args = _cli_args(tiny_world, shards.workdir, "--model", "sepnms", "--splits", *SPLITS)
    assert main(["propose", *args, "--shard", "1/3", "--flush-every", "1"]) == 0
    assert main(["propose", *args, "--shard", "0/3"]) == 0
    with pytest.raises(InputError, match="not done yet"):
        merge_proposals(shards, "sepnms", SPLITS)
    assert main(["merge", "propose", *_cli_args(tiny_world, shards.workdir, "--model", "sepnms", "--splits", *SPLITS)]) == 2
    assert main(["propose", *args, "--shard", "2/3"]) == 0
    for split in SPLITS:  # parts wait for `sepnms merge`
        assert (Path(shards.workdir) / "proposals" / "sepnms" / f"{split}.parts").is_dir()
    assert main(["merge", "propose", *_cli_args(tiny_world, shards.workdir, "--model", "sepnms", "--splits", *SPLITS)]) == 0
    _assert_same_proposals(expected, {s: Path(shards.workdir) / "proposals" / "sepnms" / f"{s}.h5" for s in SPLITS})


def test_stale_parts_of_another_model_are_discarded(prepared, tmp_path):
    from sepnms.engine.propose import propose

    cfg = _copy(prepared, tmp_path, "stale")
    fresh = _copy(prepared, tmp_path, "fresh")
    _random_checkpoint(cfg, seed=1)
    propose(cfg, "sepnms", ["val"], progress=False, shard=(0, 2), merge=False)  # parts of model 1
    _random_checkpoint(cfg, seed=2)
    _random_checkpoint(fresh, seed=2)
    _assert_same_proposals(propose(fresh, "sepnms", ["val"], progress=False),
                           propose(cfg, "sepnms", ["val"], progress=False))


def test_shard_and_merge_encode_text(prepared, tiny_world, tmp_path):
    from sepnms.cli import main
    from sepnms.engine.encode_text import encode_text, merge_text, vectors_path
    from sepnms.errors import InputError
    from sepnms.text.sentence_encoder import load_vectors

    single = _copy(prepared, tmp_path, "single")
    lib = _copy(prepared, tmp_path, "lib")
    cli = _copy(prepared, tmp_path, "cli")
    # the prepared fixture holds a complete vectors file, which a shard run keeps until a merge
    # replaces it: start these two without one, so "not merged" and "merged" can be told apart
    vectors_path(lib).unlink()
    vectors_path(cli).unlink()
    encode_text(single, progress=False, flush_every=3)
    for i in (2, 0):
        r = encode_text(lib, progress=False, shard=(i, 3), merge=False, flush_every=2)
        assert r["merged"] is False and not vectors_path(lib).exists()
    with pytest.raises(InputError, match="not done yet"):
        merge_text(lib)
    encode_text(lib, progress=False, shard=(1, 3), merge=False, flush_every=2)
    merge_text(lib)
    for i in range(2):
        assert main(["encode-text", *_cli_args(tiny_world, cli.workdir, "--shard", f"{i}/2")]) == 0
    assert main(["merge", "encode-text", *_cli_args(tiny_world, cli.workdir)]) == 0
    a = load_vectors(vectors_path(single))
    assert len(a) > 0
    for other in (lib, cli):
        b = load_vectors(vectors_path(other))
        assert a.keys() == b.keys()
        for sid in a:
            np.testing.assert_allclose(a[sid], b[sid], rtol=0, atol=1e-5)


def test_shard_and_merge_clip_ctx(prepared, tmp_path):
    from sepnms.clip.labeller import clip_ctx, merge_clip_ctx
    from sepnms.clip.model import build_dagger, default_heads_path
    from sepnms.data.ctxdb import ctxdb_path, load_ctxdb

    single = _copy(prepared, tmp_path, "single")
    shards = _copy(prepared, tmp_path, "shards")
    for cfg in (single, shards):
        build_dagger(cfg, seed=0).save_heads(default_heads_path(cfg))
    s = clip_ctx(single, progress=False)
    clip_ctx(shards, progress=False, shard=(1, 2), merge=False, flush_every=3)
    clip_ctx(shards, progress=False, shard=(0, 2), merge=False, flush_every=5)
    m = merge_clip_ctx(shards)
    assert {k: v for k, v in s.items() if k not in ("seconds", "ctxdb")} == \
        {k: v for k, v in m.items() if k not in ("seconds", "ctxdb")}
    a, b = load_ctxdb(ctxdb_path(single.workdir, "clip")), load_ctxdb(ctxdb_path(shards.workdir, "clip"))
    same = lambda params: {k: v for k, v in params.items() if k not in ("heads", "heads_sha256")}  # noqa: E731
    assert same(a.params) == same(b.params) and a.entries.keys() == b.entries.keys() and a.entries
    for sid, e in a.entries.items():
        f = b.entries[sid]
        assert (e["ref_ann_ids"], e["ctx_ann_ids"], e["ctx_boxes"]) == (f["ref_ann_ids"], f["ctx_ann_ids"], f["ctx_boxes"])
        np.testing.assert_allclose(e["scores"]["prob"], f["scores"]["prob"], atol=1e-5)


def test_run_sharded_without_a_process_group():
    from sepnms.distributed import process_group, rank_world, run_sharded

    calls = []
    with process_group("cpu") as (rank, world):
        assert (rank, world) == (0, 1) == rank_world()
        assert run_sharded(lambda shard, merge: calls.append((shard, merge)) or "ran", lambda: "merged") == "ran"
        run_sharded(lambda shard, merge: calls.append((shard, merge)), lambda: None, (1, 4))
        run_sharded(lambda shard, merge: calls.append((shard, merge)), lambda: None, (0, 1))
    assert calls == [((0, 1), True), ((1, 4), False), ((0, 1), True)]


def test_device_errors_are_clear():
    from sepnms.distributed import resolve_device
    from sepnms.errors import ConfigError

    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
