"""Crash safety: a real SIGKILL of ``sepnms train`` / ``sepnms propose`` in a subprocess, then a
re-run, compared with an uninterrupted run.

* train: killed after its first checkpoint, re-run -> resumes from ``last.pt`` and ends with
  exactly the weights (``torch.equal``) of an uninterrupted run with the same seed.
* propose: killed after its first part file, re-run -> finishes, the part files written before
  the kill are neither rewritten nor re-scored (inode, mtime and size unchanged until the merge),
  and the final tables equal an uninterrupted run's.

(encode-text and clip-ctx have their own crash tests with their stages.)
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import torch

from conftest import TINY

SETS = sum((["--set", o] for o in TINY), [])
TIMEOUT = 180  # per subprocess, generous for a loaded CI machine


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")  # the same thread count in every run: bitwise-equal floats
    return env


def _args(command: str, world: Path, work: Path, *extra: str) -> list[str]:
    return [command, "--config", str(world / "config.yaml"), "--set", f"workdir={work}", "--quiet", *SETS, *extra]


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sepnms.cli", *args], env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: "
                                 f"{proc.stderr.read()[-3000:] if proc.stderr else ''}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".*.tmp"))

# =======================================================================================
# train


TRAIN_SETS = ["--set", "train.max_steps=10", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=4",
              "--set", "train.val_max_expressions=6"]


def test_train_sigkill_then_rerun_resumes_to_the_same_weights(tiny_world, prepared, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(prepared.workdir, a)
    shutil.copytree(prepared.workdir, b)
    out_a, out_b = a / "models" / "sepnms", b / "models" / "sepnms"

    run_cli(_args("train", tiny_world, a, *TRAIN_SETS))  # uninterrupted

    proc = subprocess.Popen([sys.executable, "-m", "sepnms.cli", *_args("train", tiny_world, b, *TRAIN_SETS)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out_b / "last.pt").is_file(), proc, "the first checkpoint")
        time.sleep(0.05)  # somewhere in the steps after it
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out_b / "train_summary.json").exists(), "the kill came after the end: nothing was interrupted"
    from sepnms.engine.checkpoint import load_checkpoint

    killed_at = load_checkpoint(out_b / "last.pt")["state"]["step"]
    assert 2 <= killed_at < 10

    rerun = run_cli(_args("train", tiny_world, b, *TRAIN_SETS))
    # it resumed from the checkpoint (a run from scratch would reach the same weights, too)
    assert f"resumed {out_b / 'last.pt'} at step {killed_at}" in rerun.stderr
    assert temp_files(b) == []
    for name in ("last.pt", "best.pt"):
        sa = load_checkpoint(out_a / name)
        sb = load_checkpoint(out_b / name)
        assert sa["state"]["step"] == sb["state"]["step"] == (10 if name == "last.pt" else sa["state"]["step"])
        assert sa["model"].keys() == sb["model"].keys()
        for k in sa["model"]:
            assert torch.equal(sa["model"][k], sb["model"][k]), (name, k)
    sum_a = json.loads((out_a / "train_summary.json").read_text())
    sum_b = json.loads((out_b / "train_summary.json").read_text())
    assert sum_a["steps"] == sum_b["steps"] == 10
    assert sum_a["best_val_loss"] == sum_b["best_val_loss"]
    assert [h["val_loss"] for h in sum_a["history"]] == [h["val_loss"] for h in sum_b["history"]]


# =======================================================================================
# propose

# Runs the real CLI with os.replace wrapped: every atomic rename of a part file (the moment a part
# is complete) is logged, then followed by a pause (so a kill lands between two parts, not at a
# random place), and before any final table is renamed into place the part files beside it are
# stat'ed (the merge removes them afterwards).
HOOK = r"""
import json, os, sys, time
from pathlib import Path
log_path, pause = sys.argv[1], float(sys.argv[2])
_replace = os.replace
def _stat_parts(dst):
    parts = dst.with_name(dst.stem + ".parts")
    return {p.name: [p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size]
            for p in sorted(parts.glob("part-*"))} if parts.is_dir() else {}
def replace(src, dst, *a, **k):
    dst_p = Path(dst)
    is_part = dst_p.name.startswith("part-") and dst_p.parent.name.endswith(".parts")
    is_final = dst_p.suffix == ".h5" and dst_p.parent.parent.name == "proposals"
    event = {"final": str(dst_p), "parts": _stat_parts(dst_p)} if is_final else None
    _replace(src, dst, *a, **k)
    if is_part:
        event = {"part": str(dst_p)}
    if event:
        with open(log_path, "a") as fh:
            fh.write(json.dumps(event) + "\n")
    if is_part:
        time.sleep(pause)
os.replace = replace
from sepnms.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _hooked(log: Path, pause: float, args: list[str]) -> list[str]:
    return [sys.executable, "-c", HOOK, str(log), str(pause), *args]


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def _part_images(path: Path) -> list[int]:
    import h5py

    with h5py.File(path, "r") as f:
        return [int(v) for v in str(f.attrs["meta_images"]).split(",") if v]


def test_propose_sigkill_then_rerun_finishes_without_redoing_work(tiny_world, trained, tmp_path):
    from sepnms.data.refdb import load_refdb
    from sepnms.io.proposals import read_proposals

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(trained, a)
    shutil.copytree(trained, b)
    flush = ["--set", "propose.flush_every=1"]
    splits = ["val", "testA", "testB"]
    run_cli(_args("propose", tiny_world, a, *flush))  # uninterrupted

    # 1. killed while pausing after its first part file
    log1 = tmp_path / "kill.log"
    proc = subprocess.Popen(_hooked(log1, 30.0, _args("propose", tiny_world, b, *flush)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any("part" in e for e in _events(log1)), proc, "the first part file")
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    parts_dir = b / "proposals" / "sepnms" / "val.parts"
    before = {p.name: [p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size] for p in parts_dir.glob("part-*")}
    assert len(before) == 1, before  # one image per part, killed after the first
    done_images = {i for name in before for i in _part_images(parts_dir / name)}
    assert len(done_images) == 1
    assert not (b / "proposals" / "sepnms" / "val.h5").exists()

    # 2. the re-run (the plain command, no pause) finishes
    log2 = tmp_path / "rerun.log"
    proc2 = subprocess.run(_hooked(log2, 0.0, _args("propose", tiny_world, b, *flush)), env=_env(),
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    events = _events(log2)
    rewritten = [e["part"] for e in events if "part" in e and Path(e["part"]).name in before]
    assert rewritten == []  # no part of the killed run was written again
    val_final = next(e for e in events if "final" in e and Path(e["final"]).name == "val.h5")
    assert {k: v for k, v in val_final["parts"].items() if k in before} == before  # same inode, mtime, size
    refdb = load_refdb(b / "prepare" / "refdb.json")
    new_parts = [Path(e["part"]) for e in events if "part" in e and Path(e["part"]).parent.name == "val.parts"]
    val_images = {int(x["image_id"]) for x in refdb.split("val")}
    assert len(new_parts) == len(val_images) - 1  # only the images not done before the kill
    assert len(val_final["parts"]) == len(val_images)
    assert temp_files(b) == [] and not parts_dir.exists()

    # 3. the same tables as the uninterrupted run
    for split in splits:
        ta = read_proposals(a / "proposals" / "sepnms" / f"{split}.h5")
        tb = read_proposals(b / "proposals" / "sepnms" / f"{split}.h5")
        assert [e.sent_id for e in ta] == [e.sent_id for e in tb] and len(ta) > 0
        assert ta.score_columns() == tb.score_columns() == ["ctx_score", "ref_score"]
        for ea, eb in zip(ta, tb):
            assert np.array_equal(ea.box, eb.box) and np.array_equal(ea.cls_idx, eb.cls_idx)
            for col in ta.score_columns():
                assert np.array_equal(ea.scores[col], eb.scores[col]), (split, ea.sent_id, col)


# =======================================================================================
# temp files of killed writers


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    """A SIGKILL inside an atomic write leaves its temp file; the next write of the same file
    removes it (its writer is dead) and leaves live writers' temp files alone."""
    from sepnms.io.atomic import atomic_path, atomic_write_text

    target = tmp_path / "last.pt"
    code = ("import os, sys, time\nfrom sepnms.io.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half')\n"
            "    print(tmp, flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], env=_env(), stdout=subprocess.PIPE, text=True)
    stale = Path(proc.stdout.readline().strip())
    assert stale.is_file() and stale.name.startswith(".last.pt.") and stale.name.endswith(".tmp")
    # while the writer lives, its temp file is kept
    atomic_write_text(target, "one")
    assert stale.is_file()
    sigkill(proc)
    assert stale.is_file()  # nobody cleaned up after the kill
    with atomic_path(target) as tmp:
        assert not stale.exists()
        tmp.write_text("two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
