"""The bad-input matrix, round three (docs/BAD_INPUTS.md "Round three"; issue 21).

Same conventions as ``tests/test_bad_inputs.py`` and ``test_bad_inputs_2.py``: every fault goes
through ``sepnms.cli.main``; the user sees return code 2 and one stderr line naming the file or
value and the problem (no traceback); earlier outputs stay byte-identical.  The classes: config and
argument values (the config bounds themselves are walked in ``tests/test_config_bounds.py``, and
every argument of every command in ``tests/test_cli_values.py``), images, files we read, weights
and outputs that must be finite, earlier outputs that must not be lost, paths and resources.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

import numpy as np
import pytest

from sepnms.cli import main
from test_bad_inputs import assert_one_clear_error, snapshot
from test_detection import TINY_SETS, _images_dir, _tiny_checkpoint


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _detect_sets(tmp_path: Path, ckpt: Path) -> list[str]:
    return sum((["--set", s] for s in TINY_SETS + [f"paths.detector_checkpoint={ckpt}", f"workdir={tmp_path / 'w'}"]), [])


# =======================================================================================
# 6. paths and resources as one line


@pytest.mark.parametrize("argv,needles", [
    (["show", "--n", "0"], ["argument --n", ">= 1", "not 0"]),
    (["show", "--n", "-3"], ["argument --n", "not -3"]),
    (["gallery", "--max-thumbnails", "-2"], ["--max-thumbnails", ">= -1"]),
    (["encode-text", "--flush-every", "0"], ["--flush-every", ">= 1"]),
    (["export", "--method", "x", "--top-n", "-1"], ["--top-n", ">= 0"]),
    (["show", "--n", "ten"], ["argument --n", "'ten'"]),
], ids=["show --n 0", "show --n -3", "gallery --max-thumbnails -2", "--flush-every 0", "--top-n -1", "show --n ten"])
def test_integer_arguments_are_bounded(capsys, argv, needles):
    rc, out, err = run(capsys, *argv)
    assert_one_clear_error(rc, out, err, argv[0], *needles)


def test_compare_only_without_compare(capsys, tmp_path):
    rc, out, err = run(capsys, "detect", "-c", "demo", "--set", f"workdir={tmp_path}", "--compare-only")
    assert_one_clear_error(rc, out, err, "detect", "--compare-only", "give --compare")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["folder", "fifo", "under a file", "/dev/null"])
def test_predict_figure_only_onto_a_regular_file_or_a_new_path(capsys, tmp_path, target):
    if target == "folder":
        fig = tmp_path / "figs"
        fig.mkdir()
        needle = "is a folder"
    elif target == "fifo":
        fig = tmp_path / "pipe.png"
        os.mkfifo(fig)
        needle = "not a regular file"
    elif target == "under a file":
        (tmp_path / "plain").write_text("x")
        fig = tmp_path / "plain" / "f.png"
        needle = "is a file, not a folder"
    else:
        fig = Path("/dev/null")
        needle = "not a regular file"
    mode = os.stat(fig).st_mode if fig.exists() else None
    rc, out, err = run(capsys, "predict", "-c", "demo", "--set", f"workdir={tmp_path / 'w'}", "--image", "1",
                       "--expr", "left dog", "--figure", str(fig))
    assert_one_clear_error(rc, out, err, "predict", fig, needle)
    if mode is not None:
        assert os.stat(fig).st_mode == mode  # still the folder / FIFO / device
    assert not (tmp_path / "w").exists()


def test_a_write_into_a_folder_that_takes_no_file_is_one_line(tmp_path):
    from sepnms.errors import StorageError
    from sepnms.io.atomic import atomic_write_text

    with pytest.raises(OSError) as info:
        atomic_write_text("/proc/sepnms-test.png", "x")
    storage = StorageError.from_os_error(info.value)
    assert storage is not None and "/proc/sepnms-test.png" in str(storage) and "\n" not in str(storage)


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_demo_workdir_at_a_file(capsys, tmp_path, where):
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    workdir = plain if where == "a file" else plain / "demo_out"
    rc, out, err = run(capsys, "demo", "--workdir", str(workdir))
    assert_one_clear_error(rc, out, err, "demo", workdir, "not a folder")
    assert plain.read_text() == "keep me"


@pytest.mark.parametrize("message,needles", [
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1717986918400 bytes. Error code 12 "
     "(Cannot allocate memory)", ["`sepnms prepare`", "it needed 1.6 TiB"]),
    ("could not create a primitive", ["`sepnms prepare`", "out of memory"]),
], ids=["cpu allocator", "onednn"])
def test_allocation_failures_name_the_stage(tiny_world, prepared, tmp_path, capsys, monkeypatch, message, needles):
    import sepnms.engine.prepare as prep
    from test_bad_inputs import cli, copy_work

    work = copy_work(prepared, tmp_path)
    before = snapshot(work)

    def exhausted(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(prep, "build_pools", exhausted)
    rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", *needles)
    assert snapshot(work) == before


def test_detect_compare_nan_is_valid_json_and_shard_hint_is_complete(tmp_path, capsys, caplog):
    from sepnms.io.rpn import load_rpn, write_rpn

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80), 9: (60, 80)})
    sets = _detect_sets(tmp_path, ckpt)
    with caplog.at_level(logging.INFO, logger="sepnms"):
        for i in (0, 1):
            rc, out, err = run(capsys, "detect", "-c", "demo", *sets, "--images", str(folder), "--quiet",
                               "--shard", f"{i}/2")
            assert rc == 0, err
    hints = [r.getMessage() for r in caplog.records if "once every shard is done" in r.getMessage()]
    assert hints and all(f"--images {folder}" in h and "sepnms merge detect --config demo" in h for h in hints)
    # follow the hint: the merge of the parts of D
    cmd = shlex.split(hints[-1].split("once every shard is done: ")[1])
    assert cmd[:2] == ["sepnms", "merge"]
    rc, out, err = run(capsys, *cmd[2:], "--quiet")
    assert rc == 0, err
    out_dir = tmp_path / "w" / "detect"
    rpn = load_rpn(out_dir / "rpn_boxes.pkl", out_dir / "rpn_box_scores.pkl")
    assert sorted(rpn.boxes) == [5, 9]
    # a reference with a NaN box: the comparison's numbers are NaN -> null, and the output parses
    boxes = {k: v.copy() for k, v in rpn.boxes.items()}
    boxes[5][0, 4] = np.nan
    write_rpn(tmp_path / "ref_b.pkl", tmp_path / "ref_s.pkl", boxes, rpn.scores)
    rc, out, err = run(capsys, "detect", "-c", "demo", *sets, "--images", str(folder), "--quiet", "--compare-only",
                       "--compare", str(tmp_path / "ref_b.pkl"), str(tmp_path / "ref_s.pkl"))
    if rc == 2:  # a NaN reference may also be refused outright, in one line
        assert_one_clear_error(rc, out, err, "detect", "ref_b.pkl")
    else:
        assert rc == 0, err
        report = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON output"))
        assert report["box_abs_diff_px"]["max"] is None


# =======================================================================================
# 5. nothing earlier lost


def test_detect_images_does_not_replace_the_outputs_of_other_images(tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    first = _images_dir(tmp_path, {5: (60, 80)})
    other = tmp_path / "other"
    first.rename(tmp_path / "first")
    first = tmp_path / "first"
    _images_dir(tmp_path, {7: (50, 70)}).rename(other)
    sets = _detect_sets(tmp_path, ckpt)
    rc, out, err = run(capsys, "detect", "-c", "demo", *sets, "--images", str(first), "--quiet")
    assert rc == 0, err
    before = snapshot(tmp_path / "w")
    rc, out, err = run(capsys, "detect", "-c", "demo", *sets, "--images", str(other), "--quiet")
    assert_one_clear_error(rc, out, err, "detect", "rpn_boxes.pkl", str(first), "would replace them")
    assert snapshot(tmp_path / "w") == before
    # the same folder again is a re-run, not a collision
    rc, out, err = run(capsys, "detect", "-c", "demo", *sets, "--images", str(first), "--quiet")
    assert rc == 0, err


def test_print_has_no_bare_nan(capsys):
    from sepnms.cli import _print

    _print({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2}

