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
                                      "evaluate.top_n_export=-1", "propose.flush_every=0"])
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


# =======================================================================================
# 2. malformed fields anywhere: schemas at the boundary, with the path of the bad field


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set_refs(world: Path, edit) -> None:
    refs = load_refs(world)
    edit(refs)
    write_refs(world, refs)


def _refs_fault(fault: str, world: Path):
    """Apply ``fault`` to a world copy; return (the bad file, the needles of the message)."""
    inst, data_json = instances_path(world), world / "prepro" / "data.json"
    if fault == "tokens None":
        _set_refs(world, lambda r: r[3]["sentences"][0].__setitem__("tokens", None))
        return refs_path(world), ["[3].sentences[0].tokens: Input should be a valid list (got None)"]
    if fault == "string image id":
        _set_refs(world, lambda r: r[2].__setitem__("image_id", str(r[2]["image_id"])))
        return refs_path(world), ["[2].image_id: Input should be a valid integer (got '"]
    if fault == "string in a bbox":
        _edit_json(inst, lambda d: d["annotations"][5]["bbox"].__setitem__(1, "12"))
        return inst, ["annotations[5].bbox[1]: Input should be a valid number (got '12')"]
    if fault == "NaN in a bbox":
        _edit_json(inst, lambda d: d["annotations"][0].__setitem__("bbox", [float("nan"), 1.0, 2.0, 3.0]))
        return inst, ["annotations[0].bbox[0]: Input should be a finite number"]
    if fault == "string image size in data.json":
        _edit_json(data_json, lambda d: d["images"][4].__setitem__("width", "640"))
        return data_json, ["images[4].width: Input should be a valid integer (got '640')"]
    if fault == "instances not UTF-8":
        inst.write_bytes(b"\xff\xfe" + inst.read_bytes())
        return inst, ["not UTF-8 text (byte 0xff at offset 0)"]
    if fault == "instances not an object":
        inst.write_text("[1, 2, 3]")
        return inst, ["the top level is a JSON list, expected an object"]
    if fault == "deep nesting":
        inst.write_text("[" * 200_000 + "]" * 200_000)
        return inst, ["nested too deeply"]
    raise AssertionError(fault)


@pytest.mark.parametrize("fault", ["tokens None", "string image id", "string in a bbox", "NaN in a bbox",
                                   "string image size in data.json", "instances not UTF-8",
                                   "instances not an object", "deep nesting"])
def test_malformed_field_in_refer_or_data_json(tiny_world, prepared_copy, tmp_path, capsys, fault):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    bad, needles = _refs_fault(fault, world)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", bad, *needles)
    assert_prepare_untouched(work, before, tmp_path)


@pytest.mark.parametrize("fault,needle", [
    ("not UTF-8", "not UTF-8 text"),
    ("not an object", "the top level is a JSON str, expected an object"),
    ("tokens None", "expressions[0].tokens: Input should be a valid list (got None)"),
    ("string gt_box", "expressions[1].gt_box[2]: Input should be a valid number (got 'wide')"),
])
def test_malformed_refdb_json(tiny_world, prepared_copy, tmp_path, capsys, fault, needle):
    """Our own files are read with the same care (a refdb.json edited by hand, or damaged)."""
    work, _ = prepared_copy
    refdb = work / "prepare" / "refdb.json"
    if fault == "not UTF-8":
        refdb.write_bytes(b"\x80" + refdb.read_bytes())
    elif fault == "not an object":
        refdb.write_text('"sepnms-refdb"')
    elif fault == "tokens None":
        _edit_json(refdb, lambda d: d["expressions"][0].__setitem__("tokens", None))
    else:
        _edit_json(refdb, lambda d: d["expressions"][1]["gt_box"].__setitem__(2, "wide"))
    before = snapshot(work)
    rc, out, err = cli(capsys, "train", tiny_world, work)
    assert_one_clear_error(rc, out, err, "train", refdb, needle)
    assert snapshot(work) == before and temp_files(tmp_path) == []


# =======================================================================================
# 3. plausible-looking wrong data, refused at prepare


@pytest.mark.parametrize("fault,needles", [
    ("negative width", ["annotations[3] (id ", "has a negative width"]),
    ("negative height", ["annotations[3] (id ", "has a negative height"]),
    ("duplicated annotation id", ["duplicate annotation id ", "(annotations[2] and annotations[9])",
                                  "a later copy would silently replace the first"]),
    ("duplicated image id", ["duplicate image id ", "(images[0] and images[1])"]),
    ("79 categories", ["79 categories; the detector's 80 classes need all 80 COCO categories"]),
])
def test_plausible_wrong_instances_are_refused_at_prepare(tiny_world, prepared_copy, tmp_path, capsys, fault, needles):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    inst = instances_path(world)

    def edit(d):
        if fault == "negative width":
            d["annotations"][3]["bbox"][2] = -abs(d["annotations"][3]["bbox"][2]) - 1
        elif fault == "negative height":
            d["annotations"][3]["bbox"][3] = -5.0
        elif fault == "duplicated annotation id":
            d["annotations"][9]["id"] = d["annotations"][2]["id"]
        elif fault == "duplicated image id":
            d["images"][1]["id"] = d["images"][0]["id"]
        else:
            used = {a["category_id"] for a in d["annotations"]}
            d["categories"] = [c for c in d["categories"] if c["id"] != next(c["id"] for c in d["categories"][::-1]
                                                                              if c["id"] not in used)]
    _edit_json(inst, edit)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", inst, *needles)
    assert_prepare_untouched(work, before, tmp_path)


# =======================================================================================
# 4. training: a lock per run, resuming with changed settings, --no-resume, divergence


@pytest.mark.parametrize("command,args,run,shown", [
    ("train", ["--no-resume"], "sepnms", "sepnms train"),
    ("ground", ["train"], "mattnet", "sepnms ground train"),  # the run folder of `ground train`
])
def test_two_train_runs_cannot_share_a_run(tiny_world, trained, tmp_path, capsys, command, args, run, shown):
    import fcntl

    work = copy_work(trained, tmp_path)
    folder = work / "models" / run
    folder.mkdir(parents=True, exist_ok=True)
    before = snapshot(work)
    fd = os.open(folder, os.O_RDONLY)  # what a running training holds: a flock on its run folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, out, err = cli(capsys, command, tiny_world, work, *args)
    finally:
        os.close(fd)
    assert_one_clear_error(rc, out, err, command, folder, f"another `{shown}` is running on this run")
    assert snapshot(work) == before and temp_files(tmp_path) == []


def test_resuming_with_changed_train_settings_is_refused(tiny_world, trained, tmp_path, capsys):
    work = copy_work(trained, tmp_path)
    last = work / "models" / "sepnms" / "last.pt"
    before = snapshot(work)
    rc, out, err = cli(capsys, "train", tiny_world, work, "--set", "train.max_steps=3", "--set",
                       "train.val_max_expressions=4", "--set", "train.lr_head=0.125", "--set", "train.batch_size=4")
    line = assert_one_clear_error(rc, out, err, "train", last, "cannot resume with changed settings",
                                  "train.batch_size (8 -> 4)", "-> 0.125)", "--no-resume")
    assert "max_steps" not in line  # how long to run is applied, not refused
    assert snapshot(work) == before and temp_files(tmp_path) == []


def test_resuming_with_more_steps_is_applied(tiny_world, trained, tmp_path, capsys, caplog):
    import torch

    work = copy_work(trained, tmp_path)
    with caplog.at_level("INFO"):
        rc, out, err = cli(capsys, "train", tiny_world, work, "--set", "train.max_steps=3", "--set",
                           "train.val_max_expressions=4")
    assert rc == 0, err
    assert "train.max_steps changed from 2 to 3 (applied)" in caplog.text
    last = torch.load(work / "models" / "sepnms" / "last.pt", weights_only=True)
    assert last["state"]["step"] == 3


def test_diverging_run_after_no_resume_keeps_the_old_checkpoints(tiny_world, trained, tmp_path, capsys, monkeypatch):
    """A new run (--no-resume) whose loss becomes NaN stops with one line, and the previous run's
    best.pt and last.pt are still there byte for byte (nothing was deleted before the new run had
    a checkpoint of its own)."""
    import sepnms.engine.train as train_mod

    work = copy_work(trained, tmp_path)
    before = snapshot(work)
    real = train_mod.batch_loss
    monkeypatch.setattr(train_mod, "batch_loss", lambda *a: real(*a) * float("nan"))
    rc, out, err = cli(capsys, "train", tiny_world, work, "--no-resume")
    assert_one_clear_error(rc, out, err, "train", "training diverged at step 1: the training loss is nan",
                           "train.lr_head=", work / "models" / "sepnms")
    after = snapshot(work)
    for name in ("models/sepnms/best.pt", "models/sepnms/last.pt"):
        assert after[name] == before[name]
    assert temp_files(tmp_path) == []


def test_no_resume_replaces_the_old_checkpoints_once_it_has_its_own(tiny_world, trained, tmp_path, capsys):
    import torch

    work = copy_work(trained, tmp_path)
    rc, out, err = cli(capsys, "train", tiny_world, work, "--no-resume", "--set", "train.max_steps=1",
                       "--set", "train.val_max_expressions=4")
    assert rc == 0, err
    for name in ("best.pt", "last.pt"):
        ck = torch.load(work / "models" / "sepnms" / name, weights_only=True)
        assert ck["config"]["train"]["max_steps"] == 1  # the new run's, not the old run's (2)


# =======================================================================================
# 5. outputs of another configuration used together


@pytest.fixture(scope="module")
def evaluated(trained, tiny_world, tmp_path_factory):
    """A trained workdir after propose, fuse and evaluate of the val split."""
    from sepnms.cli import main
    from test_bad_inputs import SETS

    work = tmp_path_factory.mktemp("evaluated") / "work"
    import shutil

    shutil.copytree(trained, work)
    base = ["--config", str(tiny_world / "config.yaml"), "--set", f"workdir={work}", "--quiet", *SETS,
            "--set", "evaluate.splits=[val]"]
    assert main(["propose", *base]) == 0
    assert main(["fuse", *base, "--model", "sepnms", "--rule", "sep", "--name", "sepnms"]) == 0
    assert main(["evaluate", *base, "--methods", "sepnms"]) == 0
    return work


def test_export_refuses_a_conf_chosen_for_another_fused_table(tiny_world, evaluated, tmp_path, capsys):
    """Re-fused with other settings after evaluate: the conf in metrics.json belongs to the old table."""
    work = copy_work(evaluated, tmp_path)
    rc, out, err = cli(capsys, "fuse", tiny_world, work, "--model", "sepnms", "--rule", "sep", "--name", "sepnms",
                       "--splits", "val", "--set", "fusion.nms_iou=0.9")
    assert rc == 0, err
    before = snapshot(work)
    rc, out, err = cli(capsys, "export", tiny_world, work, "--method", "sepnms", "--splits", "val")
    assert_one_clear_error(rc, out, err, "export", work / "fused" / "sepnms" / "val.h5",
                           "changed since `sepnms evaluate` chose conf", "re-run `sepnms evaluate`")
    assert snapshot(work) == before and not (work / "export").exists()
    # and after evaluate, export works
    rc, out, err = cli(capsys, "evaluate", tiny_world, work, "--methods", "sepnms", "--set", "evaluate.splits=[val]")
    assert rc == 0, err
    rc, out, err = cli(capsys, "export", tiny_world, work, "--method", "sepnms", "--splits", "val")
    assert rc == 0, err


def test_evaluate_refuses_fused_tables_of_another_world(tiny_world, evaluated, tmp_path, capsys):
    from sepnms.io.proposals import ExpressionCandidates, ProposalTable, write_proposals

    work = copy_work(evaluated, tmp_path)
    table = work / "fused" / "other" / "val.h5"
    write_proposals(table, ProposalTable("val", "fused", [
        ExpressionCandidates(900001 + i, 5, 7, np.array([[0, 0, 10, 10]], np.float32), np.array([1], np.int32),
                             np.array([0.9], np.float32), {"score": np.array([0.9], np.float32)}) for i in range(3)]))
    before = snapshot(work)
    rc, out, err = cli(capsys, "evaluate", tiny_world, work, "--methods", "other", "--set", "evaluate.splits=[val]")
    assert_one_clear_error(rc, out, err, "evaluate", table, "3 of its 3 expressions are not in split 'val'",
                           "(e.g. sent_id 900001)", "another dataset or work directory")
    assert snapshot(work) == before


def test_propose_with_a_model_trained_on_another_vocabulary(tiny_world, trained, tmp_path, capsys):
    """Same vocabulary size, other words (another dataset): refused, not scored silently wrong."""
    work = copy_work(trained, tmp_path)
    vocab = work / "prepare" / "vocab.json"
    _edit_json(vocab, lambda d: d["words"].__setitem__(slice(1, 3), d["words"][2:0:-1]))
    before = snapshot(work)
    rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
    assert_one_clear_error(rc, out, err, "propose", work / "models" / "sepnms" / "best.pt",
                           "checkpoint was trained on another vocabulary", str(vocab))
    after = snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k.endswith(".h5") and k not in before]


@pytest.mark.parametrize("command,extra,needle", [
    ("propose", ["--splits", "tset"], "split 'tset' has no expression in this refdb"),
    ("fuse", ["--splits", "tset"], "split 'tset' has no expression in this refdb"),
    ("downstream", ["--split", "tset", "--predictions", "PRED"], "split 'tset' has no expression in this refdb"),
    ("downstream", ["--split", "val", "--predictions", "PRED"], "predictions name sent_ids that are not expressions of split 'val'"),
    ("evaluate", ["--set", "evaluate.splits=[val,tset]"], "evaluate.splits 'tset' has no expression"),
])
def test_unknown_splits_and_sent_ids_are_refused(tiny_world, trained, tmp_path, capsys, command, extra, needle):
    work = copy_work(trained, tmp_path)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"sent_id": 987654321, "box": [0, 0, 5, 5]}]))
    (work / "fused" / "m").mkdir(parents=True)  # evaluate: a method folder, so it reaches the splits
    before = snapshot(work)
    rc, out, err = cli(capsys, command, tiny_world, work, *[str(pred) if e == "PRED" else e for e in extra])
    bad = pred if "predictions name" in needle else work / "prepare" / "refdb.json"
    assert_one_clear_error(rc, out, err, command, bad, needle)
    after = snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k.endswith((".h5", ".json")) and k not in before]


# =======================================================================================
# 6. propose keeps the good table; free space before the merge


def _proposed(tiny_world, trained, tmp_path, capsys) -> tuple[Path, Path, bytes]:
    work = copy_work(trained, tmp_path)
    rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
    assert rc == 0, err
    table = work / "proposals" / "sepnms" / "val.h5"
    return work, table, table.read_bytes()


def test_failing_propose_rerun_keeps_the_good_table(tiny_world, trained, tmp_path, capsys, caplog):
    from sepnms.io.head_feats import read_head, write_head

    work, table, earlier = _proposed(tiny_world, trained, tmp_path, capsys)
    world = copy_world(tiny_world, tmp_path)
    refdb = json.loads((work / "prepare" / "refdb.json").read_text())
    first = sorted({int(e["image_id"]) for e in refdb["expressions"] if e["split"] == "val"})[0]
    head, im_info = read_head(world / "head_feats", first)
    head[0, 0, 0, 0] = np.nan
    write_head(world / "head_feats", first, head, im_info)
    rc, out, err = cli(capsys, "propose", world, work, "--splits", "val")
    assert_one_clear_error(rc, out, err, "propose", world / "head_feats" / f"{first}.h5", "NaN or Inf")
    assert table.read_bytes() == earlier and temp_files(tmp_path) == []
    # fuse uses the kept table, and says that a newer run has not finished
    with caplog.at_level("WARNING"):
        rc, out, err = cli(capsys, "fuse", world, work, "--model", "sepnms", "--rule", "sep", "--splits", "val")
    assert rc == 0, err
    assert f"{table}: a newer `sepnms propose` run of this split has not finished" in caplog.text


@pytest.mark.parametrize("where", ["part", "merge"])
def test_propose_checks_free_space_first(tiny_world, trained, tmp_path, capsys, monkeypatch, where):
    """Before a part file and before the merge (an HDF5 write on a full disk can crash the library)."""
    from sepnms.io import fs, proposals

    work, table, earlier = _proposed(tiny_world, trained, tmp_path, capsys)
    monkeypatch.setattr(fs, "free_bytes", lambda folder: 4096)
    if where == "merge":  # let the part files through, to reach the merge
        monkeypatch.setattr(proposals, "ensure_free", lambda *a, **k: None)
    rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val", "--set", "propose.flush_every=2")
    if where == "part":
        assert_one_clear_error(rc, out, err, "propose", work / "proposals" / "sepnms" / "val.parts" / "part-",
                               "not enough free space for the proposal table", "4.0 KiB free")
    else:
        assert_one_clear_error(rc, out, err, "propose", table, "not enough free space for the merged file",
                               "4.0 KiB free")
    assert table.read_bytes() == earlier and temp_files(tmp_path) == []


def test_disk_full_in_fuse(tiny_world, evaluated, tmp_path, capsys, monkeypatch):
    work = copy_work(evaluated, tmp_path)
    before = snapshot(work)
    _enospc_after(monkeypatch, 0)
    rc, out, err = cli(capsys, "fuse", tiny_world, work, "--model", "sepnms", "--rule", "sep", "--name", "sepnms",
                       "--splits", "val")
    assert_one_clear_error(rc, out, err, "fuse", work / "fused" / "sepnms" / "val.h5", "no space left on device (ENOSPC)")
    assert snapshot(work) == before and temp_files(tmp_path) == []


# =======================================================================================
# 7. the stale-part warning says what was discarded and why


def test_stale_parts_warning_says_what_and_why(tiny_world, trained, tmp_path, capsys, caplog):
    work = copy_work(trained, tmp_path)
    parts = work / "proposals" / "sepnms" / "val.parts"
    parts.mkdir(parents=True)
    (parts / "meta.json").write_text(json.dumps({"fingerprint": "0123456789abcdef", "final": "val.h5"}))
    with caplog.at_level("WARNING"):
        rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
    assert rc == 0, err
    assert (f"{parts}: discarding an empty parts folder (an earlier run stopped before finishing any part): "
            "written by another model or configuration (fingerprint 0123456789abcdef, now ") in caplog.text


def test_out_of_memory_is_one_line(tiny_world, prepared_copy, tmp_path, capsys, monkeypatch):
    import sepnms.engine.prepare as prep

    work, before = prepared_copy

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(prep, "build_pools", exhausted)
    rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", "out of memory")
    assert_prepare_untouched(work, before, tmp_path)


@pytest.mark.parametrize("command,name,content,needle", [
    ("prepare", "prepare/manifest.json", b"\xc3\x28{}", "not UTF-8 text (byte 0xc3 at offset 0) (prepare manifest)"),
    ("train", "prepare/vocab.json", b'{"words": [1, 2]}', "'words' must be a list of strings"),
    ("train", "prepare/ctxdb_glove.json", b"[" * 100_000, "nested too deeply"),
    ("export", "eval/metrics.json", b'{"sepnms": {"val": 0.3}}', "expected {method: {split: {conf, ...}}}"),
], ids=["manifest not UTF-8", "vocab words not strings", "ctxdb nested too deeply", "metrics without conf"])
def test_our_own_json_damaged(tiny_world, prepared_copy, tmp_path, capsys, command, name, content, needle):
    """Our own JSON files (manifest, vocabulary, ctxdb, metrics) damaged: one line, not a traceback."""
    work, _ = prepared_copy
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    before = snapshot(work)
    extra = ["--method", "sepnms", "--splits", "val"] if command == "export" else []
    rc, out, err = cli(capsys, command, tiny_world, work, *extra)
    assert_one_clear_error(rc, out, err, command, path, needle)
    assert snapshot(work) == before and temp_files(tmp_path) == []


def test_checkpoint_without_vocabulary_record_that_does_not_fit(tiny_world, trained, tmp_path, capsys):
    """A checkpoint written before checkpoints recorded their vocabulary, of another vocabulary
    size: one line instead of torch's size-mismatch traceback."""
    import torch

    work = copy_work(trained, tmp_path)
    best = work / "models" / "sepnms" / "best.pt"
    ck = torch.load(best, weights_only=True)
    ck.pop("vocab", None)
    key = next(k for k, v in ck["model"].items() if v.ndim == 2 and v.shape[0] > 10 and "emb" in k)
    ck["model"][key] = torch.cat([ck["model"][key], ck["model"][key][:3]])
    torch.save(ck, best)
    before = snapshot(work)
    rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
    assert_one_clear_error(rc, out, err, "propose", best, "checkpoint does not fit the model", "size mismatch")
    after = snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before
