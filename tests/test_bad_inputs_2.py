"""The bad-input matrix, round two (docs/BAD_INPUTS.md "Round two"; issue 14).

Same pattern as ``tests/test_bad_inputs.py``: each fault is built on a copy of the tiny world or
of a finished work directory, driven through ``sepnms.cli.main``, and checked for return code 2,
one stderr line naming the file and the problem (no traceback), earlier outputs byte-identical
and no temp file left.  The classes: untrusted files that expand in memory, malformed fields,
plausible-looking wrong data, config values that cannot work, outputs of another configuration,
the disk and the file system, messages, permissions.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from test_bad_inputs import (assert_one_clear_error, assert_prepare_untouched, cli, copy_work, copy_world,
                             image_ids, image_sizes, instances_path, load_refs, refs_path, rpn_paths, snapshot,
                             temp_files, write_refs)

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def prepared_copy(prepared, tmp_path):
    work = copy_work(prepared, tmp_path)
    return work, snapshot(work)


# =======================================================================================
# 1. untrusted files that are small on disk and huge in memory


class _Alloc:
    """Pickles as ``<callable>(*args)`` without building the object here."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _laughs(levels: int = 5, width: int = 100) -> list:
    """A list of ``width`` references to a list of ``width`` references ...: ``width ** levels``
    leaves as a tree, a few hundred bytes as a pickle (the memo shares every level)."""
    node: list = list(range(width))
    for _ in range(levels - 1):
        node = [node] * width
    return node


def _nested(depth: int) -> list:
    node: list = []
    for _ in range(depth):
        node = [node]
    return node


@pytest.mark.parametrize("payload,problem", [
    (lambda: _laughs(), "expands to more than"),
    (lambda: _Alloc(bytearray, 10 ** 12), "declares a bytearray object of 1000000000000 bytes"),
    (lambda: _Alloc(bytes, 10 ** 11), "declares a bytes object of 100000000000 bytes"),
    (lambda: _Alloc(np.ndarray, (100000, 100000)), "declares an array of 80000000000 bytes"),
    (lambda: _nested(300), "nested deeper than 100 levels"),
], ids=["memo expansion", "bytearray(n)", "bytes(n)", "ndarray(shape)", "deep nesting"])
def test_pickle_that_expands_in_memory_is_refused(tiny_world, prepared_copy, tmp_path, capsys, payload, problem):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    boxes = rpn_paths(world)[0]
    boxes.write_bytes(pickle.dumps(payload(), protocol=2))
    assert boxes.stat().st_size < 4000
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", boxes, "refused to load", problem)
    assert_prepare_untouched(work, before, tmp_path)


def test_pickle_object_arrays_and_cycles_are_refused(tmp_path):
    from sepnms.errors import InputError
    from sepnms.io import safe_pickle

    with pytest.raises(InputError, match="array of Python objects"):
        safe_pickle.loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    cyc: list = []
    cyc.append(cyc)
    with pytest.raises(InputError, match="contains itself"):
        safe_pickle.loads(pickle.dumps(cyc, protocol=2))
    # the bound is the caller's: a 10x10x10 tree passes at 2000 elements, not at 500
    data = pickle.dumps(_laughs(3, 10), protocol=2)
    assert len(safe_pickle.loads(data, max_elements=2000)) == 10
    with pytest.raises(InputError, match="more than 500 elements"):
        safe_pickle.loads(data, max_elements=500)
    # ordinary data pickles still load: numpy arrays, Python 2 layouts (tests/test_safe_pickle.py)
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(safe_pickle.loads(pickle.dumps({"a": arr}, protocol=2))["a"], arr)


def _declared_head(path: Path, shape, im_info) -> None:
    """An HDF5 head file declaring ``shape`` without storing its data (HDF5 allocates lazily)."""
    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("head", shape=shape, dtype="f4", chunks=None if 0 in shape else tuple(min(s, 64) for s in shape))
        f.create_dataset("im_info", data=np.asarray(im_info, np.float32).reshape(1, 3))


def _im_info(world: Path, iid: int) -> np.ndarray:
    with h5py.File(world / "head_feats" / f"{iid}.h5", "r") as f:
        return f["im_info"][()].reshape(-1)


@pytest.mark.parametrize("fault,problem", [
    ("381 GiB", "381.5 GiB as float32"),
    ("0x20 map", "an empty feature map"),
    ("1x1 map", "'head' map is 1x1 but"),
    ("scale 1e6", "does not fit the"),
    ("features of another image", "does not fit the"),
])
def test_head_feats_whose_geometry_does_not_fit(tiny_world, prepared_copy, tmp_path, capsys, fault, problem):
    """Checked from the declared shape and im_info at prepare, for every image, before any map is read."""
    from sepnms.io.head_feats import read_head, write_head

    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    iid = image_ids(world)[-1]
    path = world / "head_feats" / f"{iid}.h5"
    info = _im_info(world, iid)
    if fault == "381 GiB":
        _declared_head(path, (1, 64, 2_000_000, 800), info)
    elif fault == "0x20 map":
        _declared_head(path, (1, 64, 0, 20), info)
    else:
        head, _ = read_head(world / "head_feats", iid)
        if fault == "1x1 map":
            write_head(world / "head_feats", iid, head[:, :, :1, :1], info)
        elif fault == "scale 1e6":
            write_head(world / "head_feats", iid, head, [info[0], info[1], 1e6])
        else:  # the im_info of a twice larger image
            write_head(world / "head_feats", iid, head, [2 * info[0], 2 * info[1], 2 * info[2] + 0.5])
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", path, problem)
    assert_prepare_untouched(work, before, tmp_path)


def test_huge_declared_head_is_refused_before_reading(tmp_path):
    """The reader used by train and propose refuses the declaration without allocating it."""
    import resource

    from sepnms.errors import InputError
    from sepnms.io.head_feats import read_head

    _declared_head(tmp_path / "7.h5", (1, 64, 2_000_000, 800), [480, 640, 1.0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="over the bound"):
        read_head(tmp_path, 7, expect_channels=64)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: nothing near 381 GiB


# =======================================================================================
# 4. config values that cannot work


@pytest.mark.parametrize("override", ["train.lr_head=-0.001", "train.epochs=0", "train.batch_size=0",
                                      "train.eval_every=0", "train.checkpoint_every=0", "clip.lr=0",
                                      "evaluate.top_n_export=0", "propose.flush_every=0"])
def test_config_value_that_cannot_work(tiny_world, prepared_copy, tmp_path, capsys, override):
    work, before = prepared_copy
    key = override.split("=")[0]
    rc, out, err = cli(capsys, "train", tiny_world, work, "--set", override)
    assert_one_clear_error(rc, out, err, "train", "invalid config", f"{key} (from --set {override})",
                           "greater than")
    assert snapshot(work) == before and temp_files(tmp_path) == []


# =======================================================================================
# 6. the disk and the file system


def _enospc_after(monkeypatch, n_ok: int, code: int = errno.ENOSPC):
    """Make the (n_ok + 1)-th fsync of an atomic write fail as a full disk would."""
    from sepnms.io import atomic

    calls = {"n": 0}
    real = atomic.os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("n_ok", [0, 3])
def test_disk_full_while_prepare_writes(tiny_world, prepared_copy, tmp_path, capsys, monkeypatch, n_ok):
    """All or nothing: the earlier outputs (manifest included) stay byte for byte, no temp file."""
    work, before = prepared_copy
    calls = _enospc_after(monkeypatch, n_ok)
    rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite")
    assert calls["n"] == n_ok + 1
    assert_one_clear_error(rc, out, err, "prepare", "no space left on device (ENOSPC)", str(work / "prepare"))
    assert_prepare_untouched(work, before, tmp_path)


def test_not_enough_free_space_is_refused_before_writing(tiny_world, prepared_copy, tmp_path, capsys, monkeypatch):
    from sepnms.io import fs

    work, before = prepared_copy
    monkeypatch.setattr(fs, "free_bytes", lambda folder: 1000)
    rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", work / "prepare" / "candidates.h5",
                           "not enough free space for the prepare outputs", "1000 B free")
    assert_prepare_untouched(work, before, tmp_path)


@pytest.mark.parametrize("code,cause", [(errno.EROFS, "read-only file system (EROFS)"),
                                        (errno.EACCES, "permission denied (EACCES)")])
def test_read_only_or_forbidden_workdir(tiny_world, prepared_copy, tmp_path, capsys, monkeypatch, code, cause):
    """(Run as root the tests cannot make a folder read-only: the refusal is injected where every
    output is created, in the atomic writer's temp file.)"""
    from sepnms.io import atomic

    work, before = prepared_copy

    def mkstemp(prefix="", suffix="", dir=None):
        raise OSError(code, os.strerror(code), str(Path(dir) / (prefix + suffix)))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", cause, str(work / "prepare"))
    assert_prepare_untouched(work, before, tmp_path)


# =======================================================================================
# 7. messages; 8. permissions


def test_config_into_a_closed_pipe_has_no_traceback(tmp_path):
    """``sepnms config | head`` where the reader has gone: no BrokenPipeError traceback, rc 0."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    try:
        proc = subprocess.run([sys.executable, "-c", "import sys; from sepnms.cli import main; sys.exit(main(['config']))"],
                              stdout=w, stderr=subprocess.PIPE, env=env, timeout=300)
    finally:
        os.close(w)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 0, err


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_follow_the_umask(tiny_world, prepared_copy, tmp_path, capsys, umask, mode):
    work, _ = prepared_copy
    old = os.umask(umask)
    try:
        rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite")
    finally:
        os.umask(old)
    assert rc == 0, err
    modes = {p.name: p.stat().st_mode & 0o777 for p in (work / "prepare").iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {mode}, modes


def _evil_pt(path: Path, marker: Path) -> None:
    from test_bad_inputs import _malicious_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    _malicious_checkpoint(path, marker)


@pytest.mark.parametrize("where", ["clip-finetune last.pt", "paths.clip_heads"])
def test_refused_clip_checkpoints_do_not_advise_unsafe_loading(tiny_world, prepared_copy, tmp_path, capsys, where):
    """torch's own text for a refused file advises ``weights_only=False``; ours never does."""
    work, _ = prepared_copy
    marker = tmp_path / "marker"
    if where == "clip-finetune last.pt":
        evil = work / "clip" / "last.pt"
        _evil_pt(evil, marker)
        rc, out, err = cli(capsys, "clip-finetune", tiny_world, work)
        command = "clip-finetune"
    else:
        evil = tmp_path / "heads.pt"
        _evil_pt(evil, marker)
        rc, out, err = cli(capsys, "clip-ctx", tiny_world, work, "--set", f"paths.clip_heads={evil}")
        command = "clip-ctx"
    line = assert_one_clear_error(rc, out, err, command, evil, "refused, it references posix.mkdir",
                                  "loading it could run code")
    assert "weights_only" not in line and not marker.exists()
