"""``encode-text`` and ``clip-ctx`` killed with SIGKILL mid-way: the re-run finishes without
redoing the images of the parts already written, and the final file equals an uninterrupted run.

The stage runs in a subprocess through ``sepnms.cli`` with a wrapper that slows each chunk down
(so the kill lands mid-way) and logs the images of every part it writes."""
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
import pytest

from conftest import TINY

#: run sepnms.cli in a subprocess; every part written appends its images to $PART_LOG, and the
#: stage's per-chunk work sleeps $SLOW_S seconds.  ``target`` names the function to slow down.
WRAPPER = r"""
import importlib, json, os, sys, time
from pathlib import Path

stage_mod, slow_fn, write_fn = sys.argv[1:4]
mod = importlib.import_module(stage_mod)
slow, write = getattr(mod, slow_fn), getattr(mod, write_fn)
delay = float(os.environ["SLOW_S"])


def part_images(path):
    if path.suffix == ".json":
        return json.loads(path.read_text())["images"]
    import h5py
    with h5py.File(path, "r") as f:
        return [int(v) for v in str(f.attrs["images"]).split(",")]


def slowed(*a, **k):
    time.sleep(delay)
    return slow(*a, **k)


def logged(path, *a, **k):
    out = write(path, *a, **k)
    path = Path(path)
    if path.name.startswith("part-"):
        with open(os.environ["PART_LOG"], "a") as fh:
            fh.write(json.dumps({"part": path.name, "images": part_images(path)}) + "\n")
    return out


setattr(mod, slow_fn, slowed)
setattr(mod, write_fn, logged)
from sepnms.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _copy(cfg, tmp_path: Path, name: str):
    dst = tmp_path / name
    shutil.copytree(cfg.workdir, dst)
    return cfg.model_copy(update={"workdir": dst})


def _start(hooks: tuple[str, str, str], command: str, world: Path, workdir: Path, log: Path, slow_s: float,
           *extra: str) -> subprocess.Popen:
    sets = [a for o in TINY + [f"workdir={workdir}"] for a in ("--set", o)]
    env = {**os.environ, "PART_LOG": str(log), "SLOW_S": str(slow_s), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *hooks, command, "--config", str(world / "config.yaml"),
                             *sets, "--quiet", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_after_parts(proc: subprocess.Popen, parts: Path, n: int, timeout: float = 120) -> None:
    """SIGKILL ``proc`` once ``parts`` holds at least ``n`` finished part files."""
    t0 = time.monotonic()
    while len(list(parts.glob("part-*"))) < n:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the stage ended (rc {proc.returncode}) before it could be killed:\n{err.decode()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("no part file appeared in time")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]


def _read_log(path: Path) -> dict[str, list[int]]:
    """``{part file name: its images}`` of the parts a run wrote."""
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return {e["part"]: e["images"] for e in entries}


def _crash_and_resume(hooks, command: str, world: Path, cfg, parts: Path, final: Path, all_images: set[int],
                      tmp_path: Path) -> None:
    """Kill the stage after 2 parts, check what is on disk, re-run it to the end, check that the
    re-run wrote only the missing images."""
    log1, log2 = tmp_path / f"{command}-1.log", tmp_path / f"{command}-2.log"
    earlier = final.read_bytes() if final.exists() else None
    _kill_after_parts(_start(hooks, command, world, cfg.workdir, log1, 0.3, "--flush-every", "2"), parts, 2)
    # the output of an earlier run (if any) stays as it was until the new one is merged
    assert (final.read_bytes() if final.exists() else None) == earlier
    first = _read_log(log1)
    assert {p.name for p in parts.glob("part-*")} == set(first)  # whole parts only, each one logged
    done_before = {i for images in first.values() for i in images}
    assert 0 < len(done_before) < len(all_images)

    _finish(_start(hooks, command, world, cfg.workdir, log2, 0.0, "--flush-every", "2"))
    second = _read_log(log2)
    redone = {i for images in second.values() for i in images}
    assert not (set(second) & set(first))
    assert not (redone & done_before), "images of finished parts were done again"
    assert redone | done_before == all_images
    assert final.is_file() and not parts.exists()


def test_encode_text_killed_and_resumed(prepared, tiny_world, tmp_path):
    import h5py

    from sepnms.data.refdb import load_refdb
    from sepnms.engine.encode_text import encode_text
    from sepnms.workdir import vectors_path
    from sepnms.text.sentence_encoder import load_vectors

    clean = _copy(prepared, tmp_path, "clean")
    crashed = _copy(prepared, tmp_path, "crashed")
    encode_text(clean, progress=False, flush_every=2)
    final = vectors_path(crashed)
    images = {int(e["image_id"]) for e in load_refdb(Path(crashed.workdir) / "prepare" / "refdb.json").expressions}
    _crash_and_resume(("sepnms.engine.encode_text", "encode_sentences", "save_vectors"), "encode-text", tiny_world,
                      crashed, final.with_name(final.stem + ".parts"), final, images, tmp_path)
    a, b = load_vectors(vectors_path(clean)), load_vectors(final)
    assert a.keys() == b.keys() and len(a) > 0
    for sid in a:
        np.testing.assert_allclose(a[sid], b[sid], rtol=0, atol=1e-6)
    with h5py.File(vectors_path(clean), "r") as f, h5py.File(final, "r") as g:
        assert np.array_equal(f["sent_id"][()], g["sent_id"][()])  # same (refdb) order


def test_clip_ctx_killed_and_resumed(prepared, tiny_world, tmp_path):
    from sepnms.clip.labeller import clip_ctx
    from sepnms.clip.model import build_dagger, default_heads_path
    from sepnms.data.ctxdb import ctxdb_path, load_ctxdb
    from sepnms.data.refdb import load_refer

    clean = _copy(prepared, tmp_path, "clean")
    crashed = _copy(prepared, tmp_path, "crashed")
    heads = default_heads_path(clean)
    build_dagger(clean, seed=0).save_heads(heads)
    default_heads_path(crashed).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(heads, default_heads_path(crashed))
    clip_ctx(clean, progress=False)
    final = ctxdb_path(crashed.workdir, "clip")
    images = set(load_refer(crashed).refs_by_image)
    _crash_and_resume(("sepnms.clip.labeller", "label_image", "atomic_write_json"), "clip-ctx", tiny_world,
                      crashed, final.with_name(final.stem + ".parts"), final, images, tmp_path)
    a, b = load_ctxdb(ctxdb_path(clean.workdir, "clip")), load_ctxdb(final)
    assert a.entries.keys() == b.entries.keys() and a.entries
    for sid, e in a.entries.items():
        f = b.entries[sid]
        assert (e["ref_ann_ids"], e["ctx_ann_ids"], e["ctx_boxes"]) == (f["ref_ann_ids"], f["ctx_ann_ids"], f["ctx_boxes"])
        np.testing.assert_allclose(e["scores"]["cos"], f["scores"]["cos"], atol=1e-5)
        np.testing.assert_allclose(e["scores"]["prob"], f["scores"]["prob"], atol=1e-5)
