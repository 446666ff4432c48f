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
    (["show", "--ids", "-2"], ["--ids", ">= 0"]),
    (["encode-text", "--flush-every", "0"], ["--flush-every", ">= 1"]),
    (["export", "--method", "x", "--top-n", "-1"], ["--top-n", ">= 0"]),
    (["show", "--n", "ten"], ["argument --n", "'ten'"]),
], ids=["show --n 0", "show --n -3", "show --ids -2", "--flush-every 0", "--top-n -1", "show --n ten"])
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
    from sepnms.cli.output import print_json as _print

    _print({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2}



# =======================================================================================
# 2. images through one gate (sepnms.io.images.read_image)


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` 8-bit grey pixels, with a few bytes of
    (deflated zero) data: small on disk, huge once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * (width + 1) * 4)  # the first 4 rows; the rest is missing
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size,needle", [((60000, 60000), "refused before decoding"),
                                         ((12000, 12000), "over the bound of 40000000 (images.max_pixels)")],
                         ids=["60000x60000", "12000x12000"])
def test_declared_huge_image_is_refused_before_decoding(tmp_path, capsys, size, needle):
    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80)})
    bomb = _png_declaring(folder / "img_000006.png", *size)
    assert bomb.stat().st_size < 100_000
    rc, out, err = run(capsys, "detect", "-c", "demo", *_detect_sets(tmp_path, ckpt), "--images", str(folder), "--quiet")
    assert_one_clear_error(rc, out, err, "detect", bomb, needle)
    assert not (tmp_path / "w" / "detect" / "rpn_boxes.pkl").exists()


def test_image_whose_resized_side_would_be_0(tmp_path, capsys):
    from PIL import Image

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80)})
    Image.fromarray(np.full((1, 4000, 3), 128, np.uint8)).save(folder / "img_000006.png")
    rc, out, err = run(capsys, "detect", "-c", "demo", *_detect_sets(tmp_path, ckpt), "--images", str(folder), "--quiet")
    assert_one_clear_error(rc, out, err, "detect", "img_000006.png", "4000x1", "a side of 0")


def test_every_mode_and_bit_depth_is_converted(tmp_path):
    from PIL import Image

    from sepnms.io.images import read_image

    ramp16 = (np.arange(48, dtype=np.uint32).reshape(6, 8) * 1365).astype(np.uint16)  # 0 .. 64155
    Image.fromarray(ramp16).save(tmp_path / "grey16.png")
    got = read_image(tmp_path / "grey16.png")
    expected = np.rint(ramp16 / 257.0).astype(np.uint8)  # 65535 -> 255
    assert got.shape == (6, 8, 3) and np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 2], expected)
    assert got.min() == 0 and 0 < got[2, 3, 0] < 255  # not the all-white image PIL's convert("RGB") gives
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # alpha dropped, colour kept
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]
    Image.fromarray(np.full((4, 5), 77, np.uint8), "L").convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png")[0, 0].tolist() == [77, 77, 77]
    Image.fromarray(np.full((3, 3), 0.5, np.float32), "F").save(tmp_path / "float.tiff")
    assert read_image(tmp_path / "float.tiff")[0, 0].tolist() == [128, 128, 128]
    bw = Image.new("1", (2, 1))
    bw.putpixel((0, 0), 1)
    bw.save(tmp_path / "bw.png")
    assert read_image(tmp_path / "bw.png")[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_image_of_another_size_than_the_dataset_record(tmp_path):
    from types import SimpleNamespace

    from sepnms.config import load_config
    from sepnms.data.head_features import check_image_inputs
    from sepnms.errors import InputError

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80)})
    sizes = {5: (80, 60)}
    refdb = SimpleNamespace(images={5: {"file_name": "img_000005.png"}}, image_size=lambda i: sizes[i])
    cfg = load_config("demo", TINY_SETS + [f"paths.detector_checkpoint={ckpt}", f"paths.images_dir={folder}",
                                           "features.source=images"])
    check_image_inputs(cfg, refdb)  # the recorded 80 x 60
    sizes[5] = (81, 60)
    with pytest.raises(InputError, match=r"img_000005.png: image is 80x60 but the dataset records 81x60"):
        check_image_inputs(cfg, refdb)


def test_every_image_read_goes_through_the_gate():
    """No module but ``io/images.py`` (and the world, which writes images) opens an image file."""
    src = Path(__file__).resolve().parents[1] / "src" / "sepnms"
    offenders = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        if rel == "io/images.py" or rel.startswith("world/"):
            continue
        text = path.read_text()
        for needle in ("Image.open(", "cv2.imread(", "imageio.", "decode_image(", "read_file("):
            if needle in text:
                offenders.append(f"{rel}: {needle}")
    assert not offenders, offenders


# =======================================================================================
# 3. every file we read, one schema; 4. weights and outputs finite; 5. nothing earlier lost
#    (the second stage: MAttNet trained once on the tiny world)

GROUND_SMALL = ["grounding.word_embedding_size=16", "grounding.word_vec_size=16", "grounding.rnn_hidden_size=16",
                "grounding.jemb_dim=16", "grounding.num_atts=4", "grounding.batch_images=3", "grounding.max_iters=4",
                "grounding.eval_every=2", "grounding.checkpoint_every=2", "grounding.val_max_sentences=8",
                "evaluate.splits=[val]"]
GROUND_SETS = sum((["--set", s] for s in GROUND_SMALL), [])


@pytest.fixture(scope="module")
def grounded(tiny_world, trained, tmp_path_factory):
    """A trained workdir with MAttNet trained and evaluated (gt) on val: ground/ and eval/metrics.json."""
    import shutil

    from conftest import TINY
    from sepnms.config import load_config
    from sepnms.engine.ground.train import train_grounding
    from sepnms.engine.ground.evaluate import evaluate_grounding

    work = tmp_path_factory.mktemp("grounded") / "work"
    shutil.copytree(trained, work)
    cfg = load_config(tiny_world / "config.yaml", TINY + GROUND_SMALL + [f"workdir={work}"])
    train_grounding(cfg, resume=False, progress=False)
    evaluate_grounding(cfg, ["gt"], ["val", "testA"], progress=False)
    return work


def ground(capsys, tiny_world, work, *extra):
    from test_bad_inputs import cli

    return cli(capsys, "ground", tiny_world, work, *GROUND_SETS, *extra)


def _val_sentence(work: Path) -> tuple[int, int]:
    refdb = json.loads((work / "prepare" / "refdb.json").read_text())
    e = next(e for e in refdb["expressions"] if e["split"] == "val")
    return int(e["sent_id"]), int(e["image_id"])


def _dets_fault(fault: str, sid: int, iid: int, path: Path) -> str:
    entry = {"sent_id": sid, "image_id": iid, "box": [1, 2, 30, 40], "category_id": 1, "fin_score": 0.5}
    if fault == "nesting 200000 deep":
        path.write_text("[" * 200000 + "]" * 200000)
        return "nested too deeply"
    bad = {"score list": ("fin_score", [0.5], "[0].fin_score"), "score null": ("fin_score", None, "[0].fin_score"),
           "score string": ("fin_score", "0.5", "[0].fin_score"), "sent_id Infinity": ("sent_id", float("inf"), "[0].sent_id"),
           "sent_id 0.5": ("sent_id", 0.5, "[0].sent_id"), "sent_id true": ("sent_id", True, "[0].sent_id"),
           "image_id abc": ("image_id", "abc", "[0].image_id"), "category abc": ("category_id", "abc", "[0].category_id"),
           "negative width": ("box", [1, 2, -30, 40], "negative width")}
    entries = [dict(entry)]
    if fault == "duplicated entry":
        entries.append(dict(entry))
        needle = "[1] repeats [0]"
    elif fault == "another dataset":
        entries[0]["sent_id"] = 987654321
        needle = "not in this dataset"
    else:
        key, value, needle = bad[fault]
        entries[0][key] = value
    path.write_text(json.dumps(entries))
    return needle


DETS_FAULTS = ["score list", "score null", "score string", "sent_id Infinity", "sent_id 0.5", "sent_id true",
               "image_id abc", "category abc", "negative width", "duplicated entry", "nesting 200000 deep",
               "another dataset"]


@pytest.mark.parametrize("fault", DETS_FAULTS)
def test_ground_eval_detection_file_schema(tiny_world, grounded, tmp_path, capsys, fault):
    from test_bad_inputs import copy_work

    work = copy_work(grounded, tmp_path)
    before = snapshot(work)
    dets = tmp_path / "mine.json"
    needle = _dets_fault(fault, *_val_sentence(work), dets)
    rc, out, err = ground(capsys, tiny_world, work, "eval", "--methods", "gt", "--splits", "val", "--dets", str(dets))
    assert_one_clear_error(rc, out, err, "ground", dets, needle)
    assert snapshot(work) == before


@pytest.mark.parametrize("fault", ["score null", "sent_id Infinity", "negative width", "duplicated entry",
                                   "nesting 200000 deep"])
def test_evaluate_dets_uses_the_same_schema(tiny_world, prepared, tmp_path, capsys, fault):
    from test_bad_inputs import cli, copy_work

    work = copy_work(prepared, tmp_path)
    before = snapshot(work)
    dets = tmp_path / "mine.json"
    needle = _dets_fault(fault, *_val_sentence(work), dets)
    rc, out, err = cli(capsys, "evaluate", tiny_world, work, "--dets", str(dets))
    assert_one_clear_error(rc, out, err, "evaluate", dets, needle)
    assert snapshot(work) == before


@pytest.mark.parametrize("name", ["gt", "twice"])
def test_ground_eval_dets_name_collisions_are_refused(tiny_world, grounded, tmp_path, capsys, name):
    from test_bad_inputs import copy_work

    work = copy_work(grounded, tmp_path)
    before = snapshot(work)
    sid, iid = _val_sentence(work)
    good = [{"sent_id": sid, "image_id": iid, "box": [1, 2, 30, 40], "category_id": 1, "fin_score": 0.5}]
    files = [tmp_path / "gt.json"] if name == "gt" else [tmp_path / "a" / "x.json", tmp_path / "b" / "x.json"]
    for f in files:
        f.parent.mkdir(exist_ok=True)
        f.write_text(json.dumps(good))
    rc, out, err = ground(capsys, tiny_world, work, "eval", "--splits", "val", "--dets", *map(str, files))
    assert_one_clear_error(rc, out, err, "ground", files[-1], "method name", "rename")
    assert snapshot(work) == before


def test_ground_eval_of_some_rows_keeps_the_others(tiny_world, grounded, tmp_path, capsys):
    from test_bad_inputs import copy_work

    work = copy_work(grounded, tmp_path)
    earlier = json.loads((work / "ground" / "metrics.json").read_text())
    assert set(earlier["gt"]) == {"val", "testA"}
    rc, out, err = ground(capsys, tiny_world, work, "eval", "--methods", "gt", "--splits", "val")
    assert rc == 0, err
    now = json.loads((work / "ground" / "metrics.json").read_text())
    assert now["gt"]["testA"] == earlier["gt"]["testA"] and set(now["gt"]) == {"val", "testA"}
    hits = json.loads((work / "ground" / "hits.json").read_text())
    assert set(hits["gt"]) == {"val", "testA"}
    merged = json.loads((work / "eval" / "metrics.json").read_text())
    assert merged["gt"]["testA"]["downstream_accuracy"] == earlier["gt"]["testA"]["downstream_accuracy"]


@pytest.mark.parametrize("content,needle", [
    (b"[1, 2]", "top level is a JSON list"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"gt": [1]}', "gt: Input should be a valid dictionary"),
], ids=["a list", "not UTF-8", "rows not objects"])
def test_ground_eval_refuses_a_damaged_metrics_json(tiny_world, grounded, tmp_path, capsys, content, needle):
    from test_bad_inputs import copy_work

    work = copy_work(grounded, tmp_path)
    metrics = work / "eval" / "metrics.json"
    metrics.write_bytes(content)
    before = snapshot(work)
    rc, out, err = ground(capsys, tiny_world, work, "eval", "--methods", "gt", "--splits", "val")
    assert_one_clear_error(rc, out, err, "ground", metrics, needle)
    assert snapshot(work) == before


def _edit_checkpoint(path: Path, fault: str) -> str:
    import torch

    ck = torch.load(path, weights_only=True)
    if fault == "no grounding_config":
        del ck["grounding_config"]
        needle = "grounding_config: Field required"
    elif fault == "string config":
        ck["grounding_config"] = "jemb_dim=16"
        needle = "grounding_config: Input should be a valid dictionary"
    elif fault == "another shape":
        key = next(k for k, v in ck["model"].items() if v.dim() == 2)
        ck["model"][key] = torch.zeros(ck["model"][key].shape[0] + 1, ck["model"][key].shape[1])
        needle = "does not fit the model"
    elif fault == "NaN weight":
        key = next(k for k, v in ck["model"].items() if v.is_floating_point())
        ck["model"][key] = ck["model"][key].clone()
        ck["model"][key].view(-1)[0] = float("nan")
        needle = "NaN or Inf value(s)"
    else:
        raise AssertionError(fault)
    torch.save(ck, path)
    return needle


@pytest.mark.parametrize("fault", ["no grounding_config", "string config", "another shape", "NaN weight"])
def test_ground_checkpoint_schema(tiny_world, grounded, tmp_path, capsys, fault):
    from test_bad_inputs import copy_work

    work = copy_work(grounded, tmp_path)
    ckpt = work / "models" / "mattnet" / "best.pt"
    needle = _edit_checkpoint(ckpt, fault)
    before = snapshot(work)
    rc, out, err = ground(capsys, tiny_world, work, "eval", "--methods", "gt", "--splits", "val")
    assert_one_clear_error(rc, out, err, "ground", ckpt, needle)
    assert snapshot(work) == before


def test_ground_train_no_resume_keeps_the_old_checkpoints_when_it_diverges(tiny_world, grounded, tmp_path, capsys):
    from test_bad_inputs import copy_work

    work = copy_work(grounded, tmp_path)
    run = work / "models" / "mattnet"
    before = {p.name: p.read_bytes() for p in (run / "best.pt", run / "last.pt")}
    rc, out, err = ground(capsys, tiny_world, work, "train", "--no-resume", "--set", "grounding.lr=1e37")
    assert_one_clear_error(rc, out, err, "ground", "ground train diverged", "grounding.lr", "nothing of this state was saved")
    assert {p.name: p.read_bytes() for p in (run / "best.pt", run / "last.pt")} == before


# ---------------------------------------------------------------------------------------
# 4. weights dense, finite, with BatchNorm variances >= 0; outputs finite before they replace


@pytest.mark.parametrize("fault,needle", [
    ("negative running_var", "negative variance"),
    ("sparse", "sparse_coo tensor"),
    ("meta", "meta tensor"),
    ("3e38", "non-finite outputs"),
])
def test_first_stage_weights_that_cannot_work(tiny_world, trained, tmp_path, capsys, fault, needle):
    import torch

    from test_bad_inputs import cli
    from test_bad_inputs_2 import _proposed

    work, table, earlier = _proposed(tiny_world, trained, tmp_path, capsys)
    best = work / "models" / "sepnms" / "best.pt"
    ck = torch.load(best, weights_only=True)
    state = ck["model"]
    if fault == "negative running_var":
        key = next(k for k in state if k.endswith("running_var"))
        state[key] = -state[key].abs() - 1
    elif fault == "sparse":
        key = next(k for k, v in state.items() if v.dim() == 2)
        state[key] = state[key].to_sparse()
    elif fault == "meta":
        key = next(k for k, v in state.items() if v.dim() == 2)
        state[key] = torch.empty(state[key].shape, device="meta")
    else:
        for k, v in state.items():
            if v.is_floating_point() and not k.endswith(("running_var", "running_mean")):
                state[k] = torch.full_like(v, 3e38)
    torch.save(ck, best)
    rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
    assert_one_clear_error(rc, out, err, "propose", best, needle)
    assert table.read_bytes() == earlier


@pytest.mark.parametrize("fault", ["3e38", "NaN"])
def test_detector_weights_whose_outputs_are_not_finite(tmp_path, capsys, fault):
    """Finite weights that overflow, and a NaN weight: refused, and the earlier detect outputs stay."""
    import torch

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80)})
    sets = _detect_sets(tmp_path, ckpt)
    rc, out, err = run(capsys, "detect", "-c", "demo", *sets, "--images", str(folder), "--quiet")
    assert rc == 0, err
    before = snapshot(tmp_path / "w")
    state = torch.load(ckpt, weights_only=True)
    for k, v in state.items():
        if v.is_floating_point() and k.endswith("weight"):
            state[k] = torch.full_like(v, 3e38) if fault == "3e38" else v.clone().fill_(float("nan"))
    torch.save(state, ckpt)
    rc, out, err = run(capsys, "detect", "-c", "demo", *sets, "--images", str(folder), "--quiet")
    needle = "non-finite outputs" if fault == "3e38" else "NaN or Inf value(s)"
    assert_one_clear_error(rc, out, err, "detect", ckpt, needle)
    final = lambda snap: {k: v for k, v in snap.items() if ".parts/" not in k}  # noqa: E731 (the resume folder may start)
    assert final(snapshot(tmp_path / "w")) == final(before)
