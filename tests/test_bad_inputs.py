"""The bad-input matrix (docs/BAD_INPUTS.md): one test per fault, through the real entry point.

Every faulty input is built on a copy of the tiny world (the session fixture stays intact).  For
each fault the test checks what the user sees (return code 2 and one clear stderr line naming the
file and the problem, no traceback) and that nothing was written half-way: the stage's outputs
are absent, or - where a run is repeated over earlier outputs - unchanged byte for byte, and no
temp file (``.*.tmp``) is left anywhere.  Faults that are not errors (boxes outside the image, an
expression without known words, an image without annotations) are checked against what the docs
promise.  The last part covers untrusted files: checkpoints with code in them, shell commands,
and writes outside the work directory.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY
from sepnms.cli import main

SETS = sum((["--set", o] for o in TINY), [])
SRC = Path(__file__).resolve().parents[1] / "src" / "sepnms"


# ---------------------------------------------------------------------------------------
# helpers


def copy_world(tiny_world: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "world"
    shutil.copytree(tiny_world, dst)
    return dst


def copy_work(cfg_or_dir, tmp_path: Path, name: str = "work") -> Path:
    src = Path(getattr(cfg_or_dir, "workdir", cfg_or_dir))
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def cli(capsys, command: str, world: Path, work: Path, *extra: str) -> tuple[int, str, str]:
    """Run ``sepnms <command>`` on ``world``'s config with workdir ``work``."""
    capsys.readouterr()
    rc = main([command, "--config", str(world / "config.yaml"), "--set", f"workdir={work}", "--quiet", *SETS, *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_clear_error(rc: int, out: str, err: str, command: str, *needles) -> str:
    """rc 2, nothing on stdout, and stderr exactly one line ``sepnms <command>: error: ...``
    holding every needle (the file and the problem); no traceback."""
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"sepnms {command}: error: "), line
    for needle in needles:
        assert str(needle) in line, f"{needle!r} not in {line!r}"
    assert out == ""
    if os.environ.get("SEPNMS_MATRIX_DUMP"):  # docs/BAD_INPUTS.md quotes these lines
        with open(os.environ["SEPNMS_MATRIX_DUMP"], "a") as fh:
            fh.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "line": line}) + "\n")
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


PREPARE_OUTPUTS = ["candidates.h5", "ctxdb_glove.json", "manifest.json", "refdb.json", "summary.json",
                   "vocab.json", "word_vectors.npy"]


def image_ids(world: Path) -> list[int]:
    return sorted(int(p.stem) for p in (world / "head_feats").glob("*.h5"))


def refs_path(world: Path) -> Path:
    return world / "refer" / "refcoco" / "refs(unc).p"


def instances_path(world: Path) -> Path:
    return world / "refer" / "refcoco" / "instances.json"


def load_refs(world):
    from sepnms.io.refer import load_refs as _load

    return _load(refs_path(world))


def write_refs(world, refs):
    from sepnms.io.refer import write_refs as _write

    _write(refs_path(world), refs)


def rpn_paths(world: Path) -> tuple[Path, Path]:
    return world / "rpn" / "rpn_boxes.pkl", world / "rpn" / "rpn_box_scores.pkl"


def load_rpn_dicts(world):
    from sepnms.io import safe_pickle

    bp, sp = rpn_paths(world)
    return safe_pickle.load(bp), safe_pickle.load(sp)


def write_rpn_dicts(world, boxes, scores):
    from sepnms.io import safe_pickle

    bp, sp = rpn_paths(world)
    safe_pickle.dump(bp, boxes)
    safe_pickle.dump(sp, scores)


def image_sizes(world: Path) -> dict[int, tuple[int, int]]:
    data = json.loads((world / "prepro" / "data.json").read_text())
    return {int(i["image_id"]): (int(i["width"]), int(i["height"])) for i in data["images"]}


@pytest.fixture
def prepared_copy(prepared, tmp_path):
    """A copy of the prepared workdir and its byte snapshot (to prove a failed re-run left it alone)."""
    work = copy_work(prepared, tmp_path)
    return work, snapshot(work)


def assert_prepare_untouched(work: Path, before: dict[str, str], tmp_path: Path) -> None:
    assert snapshot(work) == before
    assert sorted(before) and all(f"prepare/{name}" in before for name in PREPARE_OUTPUTS)
    assert temp_files(tmp_path) == []


def assert_no_proposals_written(work: Path, before: dict[str, str], tmp_path: Path) -> None:
    """A failed propose: every earlier file unchanged, no table and no part file (propose's
    bookkeeping - its lock file and the parts folder's meta.json - may appear)."""
    after = snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before
    assert [k for k in after if k not in before and (k.endswith(".h5") or "part-" in k)] == []
    assert temp_files(tmp_path) == []

def val_image(work: Path) -> int:
    refdb = json.loads((work / "prepare" / "refdb.json").read_text())
    return sorted(int(e["image_id"]) for e in refdb["expressions"] if e["split"] == "val")[0]


# =======================================================================================
# prepare: refer, detector, head features


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_truncated_or_corrupt_head_feats(tiny_world, prepared_copy, tmp_path, capsys, how):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    bad = world / "head_feats" / f"{image_ids(world)[-1]}.h5"  # not the first: prepare opens every file
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\x89HDF\r\n" + os.urandom(200))
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", bad, "unreadable HDF5 (truncated or corrupt?)")
    assert_prepare_untouched(work, before, tmp_path)


def test_missing_head_feats(tiny_world, tmp_path, capsys):
    world = copy_world(tiny_world, tmp_path)
    gone = world / "head_feats" / f"{image_ids(world)[3]}.h5"
    gone.unlink()
    work = tmp_path / "work"
    rc, out, err = cli(capsys, "prepare", world, work)
    assert_one_clear_error(rc, out, err, "prepare", gone, "head features missing for 1 of 24 images")
    assert files_under(work) == [] and temp_files(tmp_path) == []


def test_head_wrong_channel_count_for_the_model(tiny_world, prepared_copy, tmp_path, capsys):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    first = world / "head_feats" / f"{image_ids(world)[0]}.h5"
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite", "--set", "model.feat_channels=1024")
    assert_one_clear_error(rc, out, err, "prepare", first,
                           "'head' has 64 channels but the model expects 1024 (model.feat_channels)")
    assert_prepare_untouched(work, before, tmp_path)


def test_head_wrong_channel_count_in_one_file(tiny_world, prepared_copy, tmp_path, capsys):
    from sepnms.io.head_feats import read_head, write_head

    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    iid = image_ids(world)[-1]
    head, im_info = read_head(world / "head_feats", iid)
    write_head(world / "head_feats", iid, head[:, :32], im_info)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", world / "head_feats" / f"{iid}.h5",
                           "'head' has 32 channels but the model expects 64")
    assert_prepare_untouched(work, before, tmp_path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_head_feats_at_prepare(tiny_world, prepared_copy, tmp_path, capsys, value):
    from sepnms.io.head_feats import read_head, write_head

    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    iid = image_ids(world)[0]  # prepare reads the first file whole
    head, im_info = read_head(world / "head_feats", iid)
    head[0, 5, 1, 2] = value
    write_head(world / "head_feats", iid, head, im_info)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", world / "head_feats" / f"{iid}.h5", "'head' holds NaN or Inf values")
    assert_prepare_untouched(work, before, tmp_path)


def test_non_finite_head_feats_at_propose(tiny_world, trained, tmp_path, capsys):
    """Values of the other files are checked when read: propose refuses, and writes no table."""
    from sepnms.io.head_feats import read_head, write_head

    work = copy_work(trained, tmp_path)
    before = snapshot(work)
    world = copy_world(tiny_world, tmp_path)
    iid = val_image(work)
    head, im_info = read_head(world / "head_feats", iid)
    head[0, 0, 0, 0] = np.nan
    write_head(world / "head_feats", iid, head, im_info)
    rc, out, err = cli(capsys, "propose", world, work, "--splits", "val")
    assert_one_clear_error(rc, out, err, "propose", world / "head_feats" / f"{iid}.h5", "'head' holds NaN or Inf values")
    assert_no_proposals_written(work, before, tmp_path)


def test_failed_propose_rerun_leaves_no_stale_or_mixed_table(tiny_world, trained, tmp_path, capsys):
    """A finished table, then a re-run that fails on its second image: the split's table is
    absent or the earlier one byte for byte, never a mix, and no part or temp file is left."""
    from sepnms.io.head_feats import read_head, write_head

    work = copy_work(trained, tmp_path)
    world = copy_world(tiny_world, tmp_path)
    rc, out, err = cli(capsys, "propose", world, work, "--splits", "val")
    assert rc == 0, err
    table = work / "proposals" / "sepnms" / "val.h5"
    earlier = table.read_bytes()
    refdb = json.loads((work / "prepare" / "refdb.json").read_text())
    second = sorted({int(e["image_id"]) for e in refdb["expressions"] if e["split"] == "val"})[1]
    head, im_info = read_head(world / "head_feats", second)
    head[0, 1, 0, 0] = np.inf
    write_head(world / "head_feats", second, head, im_info)
    rc, out, err = cli(capsys, "propose", world, work, "--splits", "val", "--set", "propose.flush_every=1")
    assert_one_clear_error(rc, out, err, "propose", world / "head_feats" / f"{second}.h5", "'head' holds NaN or Inf")
    assert (not table.exists()) or table.read_bytes() == earlier
    assert temp_files(tmp_path) == []
    # the part of the image before the fault may stay (a re-run resumes from it), nothing else
    parts = sorted(p.name for p in (work / "proposals" / "sepnms").rglob("part-*"))
    assert parts in ([], [f"part-{sorted(int(e['image_id']) for e in refdb['expressions'] if e['split'] == 'val')[0]:012d}.h5"])


@pytest.mark.parametrize("which,value,problem", [
    ("scores", np.nan, "NaN or Inf among the class probabilities"),
    ("scores", np.inf, "NaN or Inf among the class probabilities"),
    ("boxes", np.inf, "NaN or Inf among the box coordinates"),
    ("boxes", np.nan, "NaN or Inf among the box coordinates"),
])
def test_non_finite_detector_output(tiny_world, prepared_copy, tmp_path, capsys, which, value, problem):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    boxes, scores = load_rpn_dicts(world)
    iid = image_ids(world)[7]
    if which == "scores":
        scores[iid] = np.array(scores[iid], np.float32)
        scores[iid][3, 17] = value
    else:
        boxes[iid] = np.array(boxes[iid], np.float32).reshape(-1, 81, 4)
        boxes[iid][2, 40, 1] = value
    write_rpn_dicts(world, boxes, scores)
    bp, sp = rpn_paths(world)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", sp if which == "scores" else bp, f"image_id {iid}: {problem}")
    assert_prepare_untouched(work, before, tmp_path)


@pytest.mark.parametrize("how", ["zero scores", "zero-area boxes"])
def test_image_with_no_candidates_at_any_threshold(tiny_world, prepared_copy, tmp_path, capsys, how):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    boxes, scores = load_rpn_dicts(world)
    iid = image_ids(world)[5]
    if how == "zero scores":
        s = np.zeros_like(np.asarray(scores[iid], np.float32))
        s[:, 0] = 1.0  # all background
        scores[iid] = s
    else:
        b = np.array(boxes[iid], np.float32).reshape(-1, 81, 4)
        b[..., 2] = b[..., 0]  # x2 == x1: zero width
        boxes[iid] = b
    write_rpn_dicts(world, boxes, scores)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", rpn_paths(world)[0], f"image_id {iid}: no candidate at any threshold")
    assert_prepare_untouched(work, before, tmp_path)


@pytest.mark.parametrize("fault,problem", [
    ("boxes [N, 80, 4]", "is not reshapeable to [N, 81, 4]"),
    ("scores [N, 80]", "expected [N, 81]"),
    ("one row less of scores", "score rows but"),
    ("truncated pickle", "not a readable pickle"),
])
def test_rpn_arrays_with_the_wrong_shape(tiny_world, prepared_copy, tmp_path, capsys, fault, problem):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    boxes, scores = load_rpn_dicts(world)
    bp, sp = rpn_paths(world)
    iid = image_ids(world)[2]
    n = np.asarray(scores[iid]).shape[0]
    assert n % 81 != 0  # else [N, 80, 4] would be reshapeable
    named = bp
    if fault == "boxes [N, 80, 4]":
        boxes[iid] = np.asarray(boxes[iid], np.float32).reshape(n, 81, 4)[:, 1:]
    elif fault == "scores [N, 80]":
        scores[iid] = np.asarray(scores[iid], np.float32)[:, 1:]
        named = sp
    elif fault == "one row less of scores":
        scores[iid] = np.asarray(scores[iid], np.float32)[:-1]
        named = sp
    write_rpn_dicts(world, boxes, scores)
    if fault == "truncated pickle":
        data = bp.read_bytes()
        bp.write_bytes(data[: len(data) // 3])
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    line = assert_one_clear_error(rc, out, err, "prepare", named, problem)
    if fault != "truncated pickle":
        assert f"image_id {iid}" in line
    assert_prepare_untouched(work, before, tmp_path)


def test_boxes_outside_inverted_or_zero_area_are_clipped_or_dropped(tiny_world, tmp_path, capsys):
    """Not an error: prepare clips boxes to the image, drops those of zero area after clipping
    and counts the dropped (box, class) pairs above the threshold as ``invalid_boxes_dropped``."""
    from sepnms.data.candidates import CandidateStore

    world = copy_world(tiny_world, tmp_path)
    boxes, scores = load_rpn_dicts(world)
    sizes = image_sizes(world)
    iid = image_ids(world)[4]
    # the clean world has no box outside its image; a real detector's clipped boxes can be flat
    # (zero width or height): those above the threshold count as dropped too (rows 0-3 of image
    # iid are overwritten below, so not counted here)
    flat_above = 0
    for i, b in boxes.items():
        b = np.asarray(b, np.float32).reshape(-1, 81, 4)[:, 1:]
        w, h = sizes[i]
        assert (b[..., 0] >= 0).all() and (b[..., 1] >= 0).all() and (b[..., 2] <= w).all() and (b[..., 3] <= h).all()
        flat = (b[..., 2] <= b[..., 0]) | (b[..., 3] <= b[..., 1])
        above = np.asarray(scores[i], np.float32)[:, 1:] > 0.05
        if i == iid:
            flat, above = flat[4:], above[4:]
        flat_above += int((flat & above).sum())
    w, h = sizes[iid]
    b = np.array(boxes[iid], np.float32).reshape(-1, 81, 4)
    s = np.array(scores[iid], np.float32)
    rows = {
        0: [30, 40, 10, 80],             # inverted (x2 < x1): dropped
        1: [50, 50, 50, 90],             # zero width: dropped
        2: [w + 10, 5, w + 60, 40],      # wholly right of the image: zero area after clipping, dropped
        3: [-20, -30, 25, h + 100],      # partly outside: clipped to [0, 0, 25, h], kept
    }
    for r, box in rows.items():
        b[r, 7] = box
        s[r] = 0.0
        s[r, 0] = 0.1
        s[r, 7] = 0.9  # class 7 only, far above the 0.05 threshold
    boxes[iid], scores[iid] = b, s
    write_rpn_dicts(world, boxes, scores)
    work = tmp_path / "work"
    rc, out, err = cli(capsys, "prepare", world, work)
    assert rc == 0, err
    summary = json.loads((work / "prepare" / "summary.json").read_text())
    assert summary["invalid_boxes_dropped"] == 3 + flat_above
    pool = CandidateStore(work / "prepare" / "candidates.h5").get(iid)
    assert (pool.box[:, 0] >= 0).all() and (pool.box[:, 2] <= w).all() and (pool.box[:, 3] <= h).all()
    assert ((pool.box[:, 2] > pool.box[:, 0]) & (pool.box[:, 3] > pool.box[:, 1])).all()
    cls7 = pool.box[(pool.cls_idx == 7) & np.isclose(pool.det_score, 0.9)]
    assert cls7.tolist() == [[0.0, 0.0, 25.0, float(h)]]


def test_expression_without_known_tokens_is_counted(tiny_world, prepared, tmp_path, capsys):
    """Not an error: its words all map to ``<unk>`` (id 0); prepare's summary counts it."""
    from sepnms.data.workspace import Workspace

    assert json.loads((Path(prepared.workdir) / "prepare" / "summary.json").read_text())[
        "expressions_without_known_tokens"] == 0
    world = copy_world(tiny_world, tmp_path)
    refs = load_refs(world)
    ref = next(r for r in refs if r["split"] == "val")
    sent = ref["sentences"][0]
    sent.update(tokens=["zzqx", "blorf", "qwv"], raw="Zzqx blorf qwv", sent="zzqx blorf qwv")
    write_refs(world, refs)
    work = tmp_path / "work"
    rc, out, err = cli(capsys, "prepare", world, work)
    assert rc == 0, err
    assert json.loads((work / "prepare" / "summary.json").read_text())["expressions_without_known_tokens"] == 1
    from sepnms.config import load_config

    ws = Workspace.open(load_config(world / "config.yaml", TINY + [f"workdir={work}"]), need_text=False)
    expr = ws.refdb.by_sent[int(sent["sent_id"])]
    assert expr["tokens"] == ["zzqx", "blorf", "qwv"]
    assert ws.word_ids(expr["tokens"], 12) == [0, 0, 0]
    assert ws.word_ids([], 12) == [0]  # an empty expression reads as one <unk>


def test_expression_without_known_tokens_is_scored_with_unk(tiny_world, trained, tmp_path, capsys):
    """propose scores it like the same expression written with ``<unk>`` tokens: present in the
    table, finite, and different from the scores of its real words."""
    from sepnms.io.proposals import read_proposals

    def propose_with_tokens(name, tokens):
        work = copy_work(trained, tmp_path, name)
        refdb_path = work / "prepare" / "refdb.json"
        refdb = json.loads(refdb_path.read_text())
        expr = next(e for e in refdb["expressions"] if e["split"] == "val")
        if tokens is not None:
            expr["tokens"] = tokens
        refdb_path.write_text(json.dumps(refdb))
        rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
        assert rc == 0, err
        return int(expr["sent_id"]), read_proposals(work / "proposals" / "sepnms" / "val.h5").by_sent_id()

    sid, unknown = propose_with_tokens("unknown", ["zzqx", "blorf"])
    _, unk = propose_with_tokens("unk", ["<unk>", "<unk>"])
    _, real = propose_with_tokens("real", None)
    a, b, c = unknown[sid], unk[sid], real[sid]
    assert len(a) == len(c) > 0
    for col in ("ctx_score", "ref_score"):
        assert np.isfinite(a.scores[col]).all()
        np.testing.assert_array_equal(a.scores[col], b.scores[col])
    assert not np.array_equal(a.scores["ctx_score"], c.scores["ctx_score"])  # the words do matter


def test_image_without_annotations_or_refs_is_ignored(tiny_world, tmp_path, capsys):
    """Not an error: an image of instances.json that no ref names (say one with no annotations)
    needs no detections or features and does not enter the refdb."""
    world = copy_world(tiny_world, tmp_path)
    inst = json.loads(instances_path(world).read_text())
    inst["images"].append({"id": 999999, "file_name": "COCO_train2014_000000999999.jpg", "height": 100, "width": 80})
    instances_path(world).write_text(json.dumps(inst))
    work = tmp_path / "work"
    rc, out, err = cli(capsys, "prepare", world, work)
    assert rc == 0, err
    refdb = json.loads((work / "prepare" / "refdb.json").read_text())
    assert len(refdb["images"]) == 24 and "999999" not in refdb["images"]


def test_image_whose_annotations_are_missing(tiny_world, prepared_copy, tmp_path, capsys):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    refs = load_refs(world)
    iid = int(refs[0]["image_id"])
    inst = json.loads(instances_path(world).read_text())
    inst["annotations"] = [a for a in inst["annotations"] if int(a["image_id"]) != iid]
    instances_path(world).write_text(json.dumps(inst))
    n_refs = sum(1 for r in refs if int(r["image_id"]) == iid)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", refs_path(world), f"{n_refs} of {len(refs)} refs",
                           f"name ann_ids absent from {instances_path(world)}", "instances.json lacks some annotations")
    assert_prepare_untouched(work, before, tmp_path)


def test_duplicate_sent_ids(tiny_world, prepared_copy, tmp_path, capsys):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    refs = load_refs(world)
    dup = int(refs[0]["sentences"][0]["sent_id"])
    refs[5]["sentences"][-1]["sent_id"] = dup
    write_refs(world, refs)
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", refs_path(world), f"duplicate sent_id {dup} (ref_id {refs[5]['ref_id']})")
    assert_prepare_untouched(work, before, tmp_path)


@pytest.mark.parametrize("how,problem", [
    ("ann ids of another dataset", "{n} of {n} refs (100%) name ann_ids absent from"),
    ("same ann ids, other objects", "refs disagree with their annotation in"),
])
def test_refs_and_instances_of_different_datasets(tiny_world, prepared_copy, tmp_path, capsys, how, problem):
    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    inst = json.loads(instances_path(world).read_text())
    if how == "ann ids of another dataset":
        for a in inst["annotations"]:
            a["id"] = int(a["id"]) + 10_000_000
    else:  # the ids exist, but name other images' objects
        ids = [a["id"] for a in inst["annotations"]]
        for a, new in zip(inst["annotations"], ids[1:] + ids[:1]):
            a["id"] = new
    instances_path(world).write_text(json.dumps(inst))
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    problem = problem.format(n=len(load_refs(world)))  # every ref of the world
    assert_one_clear_error(rc, out, err, "prepare", refs_path(world), problem, "refs and instances are from different datasets")
    assert_prepare_untouched(work, before, tmp_path)


def test_malicious_rpn_pickle_is_refused(tiny_world, prepared_copy, tmp_path, capsys):
    """The restricted unpickler at the CLI (its cases: tests/test_safe_pickle.py)."""
    import pickle

    work, before = prepared_copy
    world = copy_world(tiny_world, tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    bp, _ = rpn_paths(world)
    bp.write_bytes(pickle.dumps({1594: Payload()}, protocol=2))
    rc, out, err = cli(capsys, "prepare", world, work, "--overwrite")
    assert_one_clear_error(rc, out, err, "prepare", bp, "refused to load", "mkdir")
    assert not marker.exists()
    assert_prepare_untouched(work, before, tmp_path)


def test_prepare_interrupted_while_writing_is_not_taken_for_finished(tiny_world, prepared_copy, tmp_path, capsys,
                                                                     monkeypatch):
    """Interrupted while writing its outputs, prepare leaves every earlier file as it was (all
    are written to temp files first); interrupted among the final renames (a mix of new and old
    files), it leaves no manifest: later stages refuse the folder, and a plain re-run of prepare
    completes it."""
    import sepnms.engine.prepare as prep
    from sepnms.io import atomic

    work, before = prepared_copy
    fingerprint = json.loads((work / "prepare" / "manifest.json").read_text())["fingerprint"]
    real_save, real_replace = prep.save_candidates, atomic.os.replace

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "save_candidates", interrupted)
    rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite", "--set", "prepare.vocab_min_count=1000")
    assert rc == 130 and "interrupted" in err
    assert snapshot(work) == before and temp_files(tmp_path) == []  # inside a writer: nothing changed

    monkeypatch.setattr(prep, "save_candidates", real_save)
    renames = []

    def replace_then_stop(src, dst):
        if renames and Path(dst).name == "candidates.h5":
            raise KeyboardInterrupt
        renames.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_then_stop)
    rc, out, err = cli(capsys, "prepare", tiny_world, work, "--overwrite", "--set", "prepare.vocab_min_count=1000")
    assert rc == 130 and "interrupted" in err
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    after = snapshot(work)
    assert "prepare/manifest.json" not in after
    assert after["prepare/vocab.json"] != before["prepare/vocab.json"]  # new, beside old candidates: a mix
    assert after["prepare/candidates.h5"] == before["prepare/candidates.h5"]
    rc, out, err = cli(capsys, "train", tiny_world, work)
    assert_one_clear_error(rc, out, err, "train", work / "prepare", "incomplete: `sepnms prepare` did not finish")
    rc, out, err = cli(capsys, "prepare", tiny_world, work)  # no manifest: not refused, and completes
    assert rc == 0, err
    final = snapshot(work)
    manifest = final.pop("prepare/manifest.json")
    assert manifest and final == {k: v for k, v in before.items() if k != "prepare/manifest.json"}  # the same files
    assert json.loads((work / "prepare" / "manifest.json").read_text())["fingerprint"] == fingerprint


# =======================================================================================
# scored tables


def test_non_finite_scores_in_a_scored_table(prepared, tmp_path, capsys, tiny_world):
    from sepnms.io.proposals import ExpressionCandidates, ProposalTable, write_proposals

    work = copy_work(prepared, tmp_path)
    box = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    exprs = [ExpressionCandidates(s, 0, 1, box, np.array([1, 1], np.int32), np.array([0.9, 0.8], np.float32),
                                  {"ctx_score": np.array([0.5, v], np.float32), "ref_score": np.array([0.5, 0.5], np.float32)})
             for s, v in ((10, 0.3), (11, np.nan))]
    table = work / "proposals" / "sepnms" / "val.h5"
    write_proposals(table, ProposalTable("val", "scored", exprs))
    before = snapshot(work)
    rc, out, err = cli(capsys, "fuse", tiny_world, work, "--model", "sepnms", "--rule", "sep", "--splits", "val")
    assert_one_clear_error(rc, out, err, "fuse", table, "column 'ctx_score' holds NaN or Inf (first at sent_id 11)")
    assert snapshot(work) == before and not (work / "fused").exists()
    assert temp_files(tmp_path) == []


# =======================================================================================
# checkpoints


def _paper_checkpoint(src: Path, dst: Path) -> None:
    """``src`` relabelled as a checkpoint of the paper preset (its model config)."""
    from sepnms.config import load_config

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["preset"] = "paper"
    ckpt["model_config"] = load_config("paper").model.model_dump(mode="json")
    torch.save(ckpt, dst)


@pytest.mark.parametrize("fault", ["refnms model", "paper preset", "other model config"])
def test_checkpoint_of_another_preset_or_model_type(tiny_world, trained, tmp_path, capsys, fault):
    work = copy_work(trained, tmp_path)
    best = work / "models" / "sepnms" / "best.pt"
    extra: list[str] = ["--splits", "val"]
    if fault == "refnms model":
        named = work / "models" / "refnms" / "best.pt"
        named.parent.mkdir()
        shutil.copyfile(best, named)
        extra += ["--model", "refnms"]
        problem = "checkpoint of a 'sepnms' model, expected 'refnms'"
    elif fault == "paper preset":
        named = best
        _paper_checkpoint(best, best)
        problem = "checkpoint was trained with another model config (preset 'paper'; differs in ['feat_channels',"
    else:
        named = best
        extra += ["--set", "model.hidden_dim=32"]
        problem = "checkpoint was trained with another model config (preset 'demo'; differs in ['hidden_dim'])"
    before = snapshot(work)
    rc, out, err = cli(capsys, "propose", tiny_world, work, *extra)
    assert_one_clear_error(rc, out, err, "propose", named, problem)
    assert_no_proposals_written(work, before, tmp_path)


def test_resume_from_a_checkpoint_of_another_model_config(tiny_world, trained, tmp_path, capsys):
    work = copy_work(trained, tmp_path)
    before = snapshot(work)
    rc, out, err = cli(capsys, "train", tiny_world, work, "--set", "model.hidden_dim=32")
    assert_one_clear_error(rc, out, err, "train", work / "models" / "sepnms" / "last.pt",
                           "checkpoint was trained with another model config")
    assert snapshot(work) == before
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("how", ["truncated", "garbage"])
@pytest.mark.parametrize("command,which", [("propose", "best.pt"), ("train", "last.pt")])
def test_corrupt_checkpoint(tiny_world, trained, tmp_path, capsys, how, command, which):
    work = copy_work(trained, tmp_path)
    ckpt = work / "models" / "sepnms" / which
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if how == "truncated" else os.urandom(4096))
    before = snapshot(work)
    extra = ["--splits", "val"] if command == "propose" else []
    rc, out, err = cli(capsys, command, tiny_world, work, *extra)
    assert_one_clear_error(rc, out, err, command, ckpt, "not a loadable checkpoint")
    assert_no_proposals_written(work, before, tmp_path)  # the corrupt file is not replaced


# =======================================================================================
# config and outputs


@pytest.mark.parametrize("where", ["--set", "file"])
def test_unknown_config_key_suggests_the_nearest(tiny_world, tmp_path, capsys, where):
    world = copy_world(tiny_world, tmp_path)
    work = tmp_path / "work"
    extra: list[str] = []
    if where == "--set":
        extra = ["--set", "train.epoch=3"]
        problem = "unknown key 'train.epoch' (did you mean 'train.epochs'?) (from --set train.epoch=3)"
    else:
        text = (world / "config.yaml").read_text().replace("  eval_every:", "  eval_evry: 4\n  eval_every:")
        (world / "config.yaml").write_text(text)
        problem = "unknown key 'train.eval_evry' (did you mean 'train.eval_every'?)"
    rc, out, err = cli(capsys, "prepare", world, work, *extra)
    assert_one_clear_error(rc, out, err, "prepare", f"invalid config ({world / 'config.yaml'})", problem)
    assert not work.exists() and temp_files(tmp_path) == []


@pytest.mark.parametrize("command,change", [
    ("prepare", "prepare.vocab_min_count=1000"),
    ("encode-text", "text.max_length=8"),
])
def test_output_of_a_different_configuration_is_refused(tiny_world, prepared_copy, tmp_path, capsys, command, change):
    work, before = prepared_copy
    stage = "prepare" if command == "prepare" else "text"
    rc, out, err = cli(capsys, command, tiny_world, work, "--set", change)
    assert_one_clear_error(rc, out, err, command, work / stage, "holds outputs of a different configuration",
                           "pass --overwrite to replace them")
    assert snapshot(work) == before and temp_files(tmp_path) == []
    # asked to overwrite, it replaces them (and records the new configuration)
    old_manifest = json.loads((work / stage / "manifest.json").read_text())
    rc, out, err = cli(capsys, command, tiny_world, work, "--set", change, "--overwrite")
    assert rc == 0, err
    assert json.loads((work / stage / "manifest.json").read_text())["fingerprint"] != old_manifest["fingerprint"]
    if command == "prepare":  # no word is seen 1000 times: the vocabulary is <unk> alone
        assert json.loads((work / "prepare" / "vocab.json").read_text())["words"] == ["<unk>"]
    # and the same configuration again is not refused
    rc, out, err = cli(capsys, command, tiny_world, work, "--set", change)
    assert rc == 0, err
    assert temp_files(tmp_path) == []


# =======================================================================================
# untrusted files


class _MarkerPayload:
    """Unpickling it creates a marker folder (stands for any code a crafted file could run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"format": "sepnms-checkpoint", "model_type": "sepnms", "model": _MarkerPayload(marker)}, path)


def test_malicious_checkpoint_payload_really_runs_with_plain_torch_load(tmp_path):
    """Control: the payload is live, so the next test can fail."""
    path, marker = tmp_path / "evil.pt", tmp_path / "marker"
    _malicious_checkpoint(path, marker)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_malicious_checkpoint_is_refused(tmp_path):
    from sepnms.engine.checkpoint import load_checkpoint
    from sepnms.errors import InputError

    path, marker = tmp_path / "evil.pt", tmp_path / "marker"
    _malicious_checkpoint(path, marker)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "not a loadable checkpoint" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("fault,problem", [
    ("payload", "not a loadable checkpoint: refused, it references posix.mkdir, which is not a tensor or a plain "
                "container (loading it could run code; a checkpoint holds only weights)"),
    ("truncated", "not a loadable checkpoint: truncated or corrupt (not a complete torch zip archive)"),
    ("empty", "not a loadable checkpoint: truncated or corrupt (EOFError)"),
    ("garbage", "not a loadable checkpoint: not torch.save data (unreadable pickle stream)"),
])
def test_torch_load_weights_names_the_fault_in_one_line(tmp_path, trained, fault, problem):
    from sepnms.errors import InputError
    from sepnms.io.checkpoints import torch_load_weights

    path, marker = tmp_path / "x.pt", tmp_path / "marker"
    if fault == "payload":
        _malicious_checkpoint(path, marker)
    elif fault == "truncated":
        data = (trained / "models" / "sepnms" / "best.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif fault == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x80\x02" + bytes(range(200, 256)) * 4)
    with pytest.raises(InputError) as info:
        torch_load_weights(path)
    assert str(info.value) == f"{path}: {problem}"
    assert not marker.exists()
    # and a real checkpoint loads
    ckpt = torch_load_weights(trained / "models" / "sepnms" / "best.pt")
    assert ckpt["format"] == "sepnms-checkpoint" and ckpt["model_type"] == "sepnms"


def test_checkpoint_errors_do_not_advise_unsafe_loading(tiny_world, trained, tmp_path, capsys):
    work = copy_work(trained, tmp_path)
    best, marker = work / "models" / "sepnms" / "best.pt", tmp_path / "marker"
    _malicious_checkpoint(best, marker)
    rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
    line = assert_one_clear_error(rc, out, err, "propose", best, "refused, it references posix.mkdir",
                                  "loading it could run code")
    assert "weights_only" not in line and not marker.exists()


def test_malicious_checkpoint_at_the_cli(tiny_world, trained, tmp_path, capsys):
    work = copy_work(trained, tmp_path)
    best, marker = work / "models" / "sepnms" / "best.pt", tmp_path / "marker"
    _malicious_checkpoint(best, marker)
    rc, out, err = cli(capsys, "propose", tiny_world, work, "--splits", "val")
    assert_one_clear_error(rc, out, err, "propose", best, "not a loadable checkpoint")
    assert not marker.exists()
    assert [p for p in files_under(work) if p.endswith(".h5") and p.startswith("proposals/")] == []


_SHELL_CALLS = {("os", "system"), ("os", "popen"), ("os", "execl"), ("os", "execle"), ("os", "execlp"),
                ("os", "execv"), ("os", "execve"), ("os", "execvp"), ("os", "spawnl"), ("os", "spawnv"),
                ("os", "startfile"), ("pty", "spawn"), ("commands", "getoutput")}
_SUBPROCESS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


def shell_command_sites(source: str, filename: str = "<src>") -> list[str]:
    """Calls that run a shell or build a command line from a string: os.system/popen/exec*,
    any subprocess call with ``shell=True`` or a string (not a list) as the command, and
    eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        where = f"{filename}:{node.lineno}"
        if isinstance(f, ast.Name) and f.id in ("eval", "exec", "system", "popen"):
            found.append(f"{where} {f.id}()")
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            mod, name = f.value.id, f.attr
            if (mod, name) in _SHELL_CALLS:
                found.append(f"{where} {mod}.{name}()")
            if mod == "subprocess" and name in _SUBPROCESS:
                shell = any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                            for k in node.keywords)
                cmd = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
                stringy = isinstance(cmd, (ast.Constant, ast.JoinedStr, ast.BinOp)) or name in ("getoutput", "getstatusoutput")
                if shell or stringy:
                    found.append(f"{where} subprocess.{name}(shell={shell}, string command={stringy})")
    return found


def test_the_shell_scanner_catches_shell_commands():
    """Control: the scanner flags each pattern, so an empty result below means something."""
    bad = """
import os, subprocess
os.system("ls " + user)
subprocess.run(f"convert {path}", shell=True)
subprocess.check_output("tar xf " + name)
subprocess.Popen(["ls", path], shell=True)
eval(text)
os.popen(cmd)
"""
    assert len(shell_command_sites(bad)) == 6
    assert shell_command_sites("import subprocess\nsubprocess.run(['ls', path], check=True)\n") == []


def test_no_shell_command_is_built_anywhere_in_the_package():
    sources = sorted(SRC.rglob("*.py"))
    assert len(sources) > 30
    found = [hit for p in sources for hit in shell_command_sites(p.read_text(), str(p.relative_to(SRC)))]
    assert found == []


def test_pipeline_writes_only_inside_the_workdir(tiny_world, tmp_path, capsys, monkeypatch):
    """Every stage through the CLI: afterwards the world copy is unchanged byte for byte, the
    current folder is still empty and every new file lies under the workdir."""
    world = copy_world(tiny_world, tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    world_before = snapshot(world)
    before = set(files_under(tmp_path))
    work = tmp_path / "work"
    fast = ["--set", "train.max_steps=2", "--set", "train.val_max_expressions=4"]
    for command, extra in (("prepare", []), ("encode-text", []), ("train", fast), ("propose", []),
                           ("fuse", ["--rule", "sep", "--name", "sepnms"]), ("evaluate", []),
                           ("export", ["--method", "sepnms"])):
        rc, out, err = cli(capsys, command, world, work, *extra)
        assert rc == 0, (command, err)
    assert snapshot(world) == world_before
    assert os.listdir(cwd) == []
    new = set(files_under(tmp_path)) - before
    assert new and all(p.startswith("work/") for p in new), sorted(p for p in new if not p.startswith("work/"))
    assert (work / "export").is_dir() and (work / "eval" / "metrics.json").is_file()
    assert temp_files(tmp_path) == []


def test_safe_name():
    from sepnms.workdir import safe_name
    from sepnms.errors import ConfigError

    for ok in ("sepnms", "sepnms_clipctx", "ablation_glove_sep+clip", "m-1.v2"):
        assert safe_name(ok) == ok
    for bad in ("../../x", "..", ".", "a/b", "a\\b", "/abs", ".hidden", "", "x" * 101, "a\nb", "sp ace"):
        with pytest.raises(ConfigError, match="not a safe file name"):
            safe_name(bad, "method name")


def test_fuse_name_cannot_escape_the_workdir(tiny_world, prepared, tmp_path, capsys):
    from sepnms.io.proposals import ExpressionCandidates, ProposalTable, write_proposals

    work = tmp_path / "a" / "b" / "work"
    shutil.copytree(prepared.workdir, work)
    box = np.array([[0, 0, 10, 10]], np.float32)
    write_proposals(work / "proposals" / "sepnms" / "val.h5", ProposalTable("val", "scored", [
        ExpressionCandidates(1, 0, 1, box, np.array([1], np.int32), np.array([0.9], np.float32),
                             {"ctx_score": np.array([0.5], np.float32), "ref_score": np.array([0.5], np.float32)})]))
    before = set(files_under(tmp_path))
    rc, out, err = cli(capsys, "fuse", tiny_world, work, "--rule", "sep", "--name", "../../x", "--splits", "val")
    escaped = sorted(set(files_under(tmp_path)) - before)
    assert escaped == [] and not (tmp_path / "a" / "b" / "x").exists()
    assert_one_clear_error(rc, out, err, "fuse", "'../../x'", "not a safe file name")


def test_export_tag_cannot_escape_the_workdir(tiny_world, prepared, tmp_path, capsys):

    from sepnms.io.proposals import ExpressionCandidates, ProposalTable, write_proposals

    work = tmp_path / "a" / "b" / "work"
    shutil.copytree(prepared.workdir, work)
    (work / "eval").mkdir()
    (work / "eval" / "metrics.json").write_text(json.dumps({"m": {"val": {"conf": 0.1}}}))
    e = next(e for e in json.loads((work / "prepare" / "refdb.json").read_text())["expressions"] if e["split"] == "val")
    write_proposals(work / "fused" / "m" / "val.h5", ProposalTable("val", "fused", [
        ExpressionCandidates(e["sent_id"], e["ref_id"], e["image_id"], np.array([[0, 0, 10, 10]], np.float32),
                             np.array([1], np.int32), np.array([0.9], np.float32), {"score": np.array([0.9], np.float32)})]))
    before = set(files_under(tmp_path))
    rc, out, err = cli(capsys, "export", tiny_world, work, "--method", "m", "--tag", "../../../../x", "--splits", "val")
    escaped = sorted(p for p in set(files_under(tmp_path)) - before if not p.startswith("a/b/work/"))
    assert escaped == []
    assert_one_clear_error(rc, out, err, "export", "'../../../../x'", "not a safe file name")
