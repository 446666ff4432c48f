"""``sepnms detect``: MAttNet's Mask R-CNN over the dataset's images (or any folder of images).

Writes under ``<workdir>/detect/``, in the layouts the rest of the ecosystem reads:

* ``rpn_boxes.pkl``: ``{image_id: float32 [N, 324]}`` = N (<= 300) RPN proposals' class-specific
  xyxy boxes (81 classes x 4, column 0 background), original-image pixels;
* ``rpn_box_scores.pkl``: ``{image_id: float32 [N, 81]}`` softmax class probabilities
  (Ref-NMS's files; ``prepare`` reads them through ``paths.rpn_boxes`` / ``paths.rpn_box_scores``);
* ``dets.json``: MAttNet's own detections (per class NMS 0.3, score >= 0.65, the threshold lowered
  by 0.1 until an image has one): ``{det_id, h5_id, box: [x, y, w, h] with w = x2 - x1 + 1,
  image_id, category_id, category_name, score}``, in ``run_detect.py``'s order (images as
  ``refer.Imgs``, then class by class, each class's boxes by NMS order; ``detector.det_order``
  picks the CPython 2.7 dict order of MAttNet's released files or Python 3's), ``det_id = h5_id``
  counting up in that order;
* with ``--save-head float16|float32``: ``head_feats/<image_id>.h5`` (``head`` [1, C, H'/16, W'/16],
  ``im_info``), MAttNet's head-feature layout (``paths.head_feats_dir``).

Work is written in part files every ``detector.flush_every`` images (resumable, ``--shard i/n``,
torchrun), then merged (``sepnms merge detect``).  Images of one resized size are batched
(``detector.batch_images``) and decoded in loader workers (``detector.num_workers``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sepnms.config import Config
from sepnms.detection.checkpoint import load_detector
from sepnms.detection.dets import mattnet_detections
from sepnms.detection.preprocess import preprocess
from sepnms.engine.image_features import autocast, detector_checkpoint, read_detector_image
from sepnms.errors import ConfigError, InputError
from sepnms.io.atomic import atomic_path, atomic_write_json
from sepnms.io.finite import check_finite
from sepnms.io.head_feats import write_head
from sepnms.io.images import coco_file_name, image_ids_in_folder
from sepnms.io.parts import PartFiles, chunked, describe_missing, file_digest, h5_attr_keys, shard_keys
from sepnms.io.rpn import load_rpn, write_rpn

SAVE_HEAD = ("none", "float16", "float32")


def detect_dir(cfg: Config) -> Path:
    return Path(cfg.workdir) / "detect"


def detect_paths(cfg: Config) -> dict[str, Path]:
    """The final outputs of ``detect``."""
    d = detect_dir(cfg)
    return {"rpn_boxes": d / "rpn_boxes.pkl", "rpn_box_scores": d / "rpn_box_scores.pkl",
            "dets": d / "dets.json", "head_feats_dir": d / "head_feats"}


def image_files(cfg: Config, images_dir: Optional[Path] = None) -> dict[int, Path]:
    """{image_id: file}: every file of ``images_dir`` (ids from the names), or the images of the
    dataset's refs (``file_name`` in ``cfg.images_dir()``)."""
    if images_dir is not None:
        return image_ids_in_folder(images_dir)
    from sepnms.data.refdb import load_refer

    refer = load_refer(cfg)
    folder = cfg.images_dir()
    return {iid: folder / (refer.img_by_id.get(iid, {}).get("file_name") or coco_file_name(iid))
            for iid in sorted(refer.refs_by_image)}


def category_names(cfg: Config) -> list[tuple[int, str]]:
    """(COCO id, name) of detector classes 1..80: the refer instances' categories when configured
    (as MAttNet maps them), else the standard COCO list."""
    if cfg.paths.refer_root is not None and cfg.instances_path().is_file():
        from sepnms.data.refdb import load_refer

        names = load_refer(cfg).cat_name
        if len(names) == 80:
            return [(cid, names[cid]) for cid in sorted(names)]
    from sepnms.world.content import COCO_CATEGORIES

    return [(cid, name) for cid, name, _ in sorted(COCO_CATEGORIES)]


class _Images(Dataset):
    """Decoded + preprocessed images (in loader workers): (image_id, blob, im_info, (h, w))."""

    def __init__(self, files: dict[int, Path], ids: list[int], cfg: Config):
        self.files, self.ids, self.dc, self.cfg = files, ids, cfg.detector, cfg

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        iid = self.ids[i]
        try:
            bgr = read_detector_image(self.cfg, self.files[iid])
        except InputError as err:  # handed to the main process whole (a worker would wrap it in a traceback)
            return iid, None, None, err.problem
        blob, info = preprocess(bgr, self.dc.pixel_means, self.dc.test_scale, self.dc.test_max_size)
        return iid, blob, info, bgr.shape[:2]


def _fingerprint(cfg: Config, ckpt: Path, save_head: str, source: str) -> str:
    key = {"detector": cfg.fingerprint("detector"), "weights": file_digest(ckpt), "save_head": save_head,
           "source": source}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _parts(cfg: Config, fingerprint: str) -> PartFiles:
    return PartFiles(detect_paths(cfg)["rpn_boxes"], ".h5", fingerprint,
                     lambda p: h5_attr_keys(p, "meta_images", "detect"))


def _write_part(path: Path, results: dict[int, dict[str, np.ndarray]]) -> None:
    """One part: per image ``boxes/<id>`` [N, 324], ``scores/<id>`` [N, 81], ``dets/<id>`` [M, 6]
    (x1, y1, x2, y2, score, class index); attr ``meta_images``."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["meta_images"] = ",".join(str(i) for i in results)
            for iid, r in results.items():
                for key in ("boxes", "scores", "dets"):
                    f.create_dataset(f"{key}/{iid}", data=r[key])


def dets_image_order(cfg: Config, ids: list[int], images_dir: Optional[Path] = None) -> list[int]:
    """The images of ``dets.json`` in ``run_detect.py``'s ``refer.Imgs.items()`` order: the
    instances file's image order (a folder: ascending id) under Python 3, that dict's CPython 2.7
    order for ``detector.det_order = py2``."""
    order = sorted(ids)
    if images_dir is None:
        from sepnms.data.refdb import load_refer

        mine = set(ids)
        order = [iid for iid in load_refer(cfg).img_by_id if iid in mine]
        order += sorted(mine - set(order))
    if cfg.detector.det_order == "py2":
        from sepnms.detection.py2_order import py2_dict_order

        order = py2_dict_order(order)
    return order


def dets_class_order(cfg: Config, categories: list[tuple[int, str]]) -> list[int]:
    """Detector class indices (1..80) in the order of ``cls_to_dets.items()`` (keyed by class name)."""
    if cfg.detector.det_order == "py2":
        from sepnms.detection.py2_order import py2_dict_order

        rank = {name: i for i, name in enumerate(py2_dict_order([name for _, name in categories]))}
        return sorted(range(1, len(categories) + 1), key=lambda c: rank[categories[c - 1][1]])
    return list(range(1, len(categories) + 1))


def write_merged(parts: list[Path], boxes_tmp: Path, paths: dict[str, Path], order: list[int],
                 categories: list[tuple[int, str]], dets_order: Optional[list[int]] = None) -> None:
    """Join the parts: the scores pickle and dets.json first (atomic each), the boxes pickle last
    at ``boxes_tmp`` (renamed onto ``rpn_boxes.pkl`` by PartFiles).  ``dets.json`` lists the images
    in ``dets_order`` (default ``order``), each image's rows as the part holds them."""
    boxes, scores, dets = {}, {}, {}
    for part in parts:
        with h5py.File(part, "r") as f:
            for iid in (int(v) for v in str(f.attrs["meta_images"]).split(",") if v):
                boxes[iid], scores[iid], dets[iid] = f[f"boxes/{iid}"][()], f[f"scores/{iid}"][()], f[f"dets/{iid}"][()]
    entries = []
    for iid in dets_order or order:
        for x1, y1, x2, y2, sc, cls in dets[iid].tolist():
            cid, name = categories[int(cls) - 1]
            entries.append({"det_id": len(entries), "h5_id": len(entries), "box": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                            "image_id": iid, "category_id": cid, "category_name": name, "score": sc})
    atomic_write_json(paths["dets"], entries)
    from sepnms.io import safe_pickle

    safe_pickle.dump(paths["rpn_box_scores"], {iid: scores[iid] for iid in order})
    safe_pickle.dump(boxes_tmp, {iid: boxes[iid] for iid in order})


def _run_batch(model, items: list, cfg: Config, device: str, save_head: str, head_dir: Path,
               class_order: list[int]) -> dict[int, dict]:
    dc = cfg.detector
    blob = torch.cat([b for _, b, _, _ in items]).to(device, non_blocking=True)
    infos = torch.stack([i for _, _, i, _ in items])
    with autocast(device, dc.amp), torch.no_grad():
        dets, c4 = model.detect(blob, infos, [tuple(int(v) for v in hw) for _, _, _, hw in items])
    out = {}
    for k, ((iid, _, info, _), d) in enumerate(zip(items, dets)):
        boxes, scores = d.boxes.float().cpu().numpy(), d.scores.float().cpu().numpy()
        check_finite({"boxes": boxes, "scores": scores}, f"detect, image_id {iid}", detector_checkpoint(cfg))
        kept = mattnet_detections(boxes, scores, dc.det_nms, dc.det_score, dc.det_lower_step, class_order)
        rows = np.array([[*x.box, x.score, x.class_index] for x in kept], np.float32).reshape(-1, 6)
        out[iid] = {"boxes": boxes.reshape(len(boxes), -1), "scores": scores, "dets": rows}
        if save_head != "none":
            write_head(head_dir, iid, c4[k:k + 1].float().cpu().numpy(), info.numpy(), np.dtype(save_head))
    return out


def detect(cfg: Config, images_dir: Optional[Path] = None, save_head: str = "none", progress: bool = True,
           shard: tuple[int, int] = (0, 1), flush_every: Optional[int] = None, merge: bool = True) -> dict[str, Any]:
    """Run the detector over the images; returns the output paths (or the parts folder while
    other shards are missing).  See the module docstring for the files."""
    if save_head not in SAVE_HEAD:
        raise ConfigError(f"--save-head must be one of {list(SAVE_HEAD)}, not {save_head!r}")
    from sepnms.distributed import resolve_device

    device = resolve_device(cfg.device)
    dc = cfg.detector
    flush_every = flush_every or dc.flush_every
    ckpt = detector_checkpoint(cfg)
    files = image_files(cfg, images_dir)
    source = str(Path(images_dir).resolve()) if images_dir is not None else cfg.dataset_tag
    parts = _parts(cfg, _fingerprint(cfg, ckpt, save_head, source))
    paths = detect_paths(cfg)
    check_source(paths, source, images_dir)
    model = load_detector(ckpt, dc, device)
    categories = category_names(cfg)
    if len(categories) != dc.num_classes - 1:
        raise ConfigError(f"detector.num_classes {dc.num_classes} but {len(categories)} categories known")
    class_order = dets_class_order(cfg, categories)
    done = parts.begin()
    mine = shard_keys(files, shard)
    chunks = list(chunked(mine, flush_every, done))
    todo = [iid for c in chunks for iid in c]
    loader = DataLoader(_Images(files, todo, cfg), batch_size=None, shuffle=False, num_workers=dc.num_workers,
                        pin_memory=device.startswith("cuda"))
    stream = iter(loader)
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="detect", unit="img", disable=not progress)
    for chunk in chunks:
        items = [next(stream) for _ in chunk]
        for iid, blob, _, problem in items:
            if blob is None:
                raise InputError(files[iid], problem)
        by_shape: dict[tuple, list] = {}
        for it in items:
            by_shape.setdefault(tuple(it[1].shape), []).append(it)
        results: dict[int, dict] = {}
        for group in by_shape.values():
            for s in range(0, len(group), dc.batch_images):
                results.update(_run_batch(model, group[s:s + dc.batch_images], cfg, device, save_head,
                                          paths["head_feats_dir"], class_order))
                bar.update(len(group[s:s + dc.batch_images]))
        _write_part(parts.part_path(chunk), {iid: results[iid] for iid in chunk})
    bar.close()
    if merge and _merge(parts, sorted(files), paths, categories, dets_image_order(cfg, list(files), images_dir),
                        source):
        return {k: str(v) for k, v in paths.items() if k != "head_feats_dir" or save_head != "none"}
    return {"parts": str(parts.folder)}


def _merge(parts: PartFiles, order: list[int], paths: dict[str, Path], categories, dets_order: list[int],
           source: str = "") -> bool:
    done = parts.merge(order, lambda ps, tmp: write_merged(ps, tmp, paths, order, categories, dets_order))
    if done and source:
        atomic_write_json(_source_path(paths), {"source": source})
    return done


def _source_path(paths: dict[str, Path]) -> Path:
    """``detect/source.json``: whose images the outputs beside it are (the dataset tag or a folder)."""
    return paths["rpn_boxes"].with_name("source.json")


def check_source(paths: dict[str, Path], source: str, images_dir: Optional[Path]) -> None:
    """Refuse to replace the detect outputs of other images (``detect --images D`` over the
    dataset's, or the reverse): nothing earlier is lost silently."""
    if not paths["rpn_boxes"].is_file():
        return
    marker = _source_path(paths)
    try:
        earlier = json.loads(marker.read_text()).get("source") if marker.is_file() else None
    except (OSError, ValueError, AttributeError):
        earlier = "<unreadable source.json>"
    if earlier == source or (earlier is None and images_dir is None):
        return
    what = f"the images of {earlier}" if earlier else "the dataset's images (or of another run)"
    raise InputError(paths["rpn_boxes"], f"holds the detections of {what}; detecting "
                     f"{'--images ' + str(images_dir) if images_dir is not None else 'the dataset'} here would replace "
                     "them. Use another workdir (--set workdir=...), or move the detect folder away first")


def merge_detect(cfg: Config, images_dir: Optional[Path] = None, save_head: str = "none") -> dict[str, str]:
    """``sepnms merge detect``: join the parts of every shard (an InputError names what is missing)."""
    ckpt = detector_checkpoint(cfg)
    files = image_files(cfg, images_dir)
    source = str(Path(images_dir).resolve()) if images_dir is not None else cfg.dataset_tag
    parts = _parts(cfg, _fingerprint(cfg, ckpt, save_head, source))
    paths = detect_paths(cfg)
    if not parts.exists() and not parts.final.is_file():
        raise InputError(parts.folder, "no detect parts: run `sepnms detect` first")
    if parts.exists():
        check_source(paths, source, images_dir)
    if not _merge(parts, sorted(files), paths, category_names(cfg), dets_image_order(cfg, list(files), images_dir),
                  source):
        raise InputError(parts.folder, describe_missing(parts, parts.missing(files)))
    return {k: str(v) for k, v in paths.items() if k != "head_feats_dir" or save_head != "none"}


# ---------------------------------------------------------------------------------------
# --compare


def match_rows_by_box(ours: np.ndarray, ref: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Pair the rows of two images' box arrays ([N, ...] and [M, ...], e.g. [N, 324]) by their boxes:
    greedily, the pair with the smallest max-abs coordinate difference first, each row used once
    (min(N, M) pairs).  Returns (our row indices, reference row indices), ordered by our row."""
    a = np.asarray(ours, np.float64).reshape(len(ours), -1)
    b = np.asarray(ref, np.float64).reshape(len(ref), -1)
    if not len(a) or not len(b):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cost = np.concatenate([np.abs(a[i:i + chunk, None, :] - b[None]).max(2) for i in range(0, len(a), chunk)])
    used_a, used_b = np.zeros(len(a), bool), np.zeros(len(b), bool)
    pairs = []
    for flat in np.argsort(cost, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(b))
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = used_b[j] = True
        pairs.append((i, j))
        if len(pairs) == min(len(a), len(b)):
            break
    pairs.sort()
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def compare_rpn(ours_boxes: Path, ours_scores: Path, ref_boxes: Path, ref_scores: Path) -> dict[str, Any]:
    """How closely our detector output matches reference pickles (e.g. Ref-NMS's released
    ``rpn_boxes.pkl`` / ``rpn_box_scores.pkl``) over the images both hold.

    Rows are matched by box (``match_rows_by_box``), not by position: a reordering of near-tied
    proposals is no difference, and an image with a row more or less still compares the rest.
    Returns counts (rows matched, unmatched on each side, matched at another position) and max /
    99th-percentile / median absolute differences over the matched rows of the class probabilities
    and of the box coordinates (pixels), plus the fraction of matched rows whose boxes (all 81
    classes) agree within 1 px.
    """
    ours, ref = load_rpn(ours_boxes, ours_scores), load_rpn(ref_boxes, ref_scores)
    common = sorted(set(ours.boxes) & set(ref.boxes) & set(ours.scores) & set(ref.scores))
    if not common:
        raise InputError(ref_boxes, f"no image_id in common with {ours_boxes}")
    same = [i for i in common if ours.boxes[i].shape[0] == ref.boxes[i].shape[0]]
    sds, bds, moved, only_ours, only_ref = [], [], 0, 0, 0
    for iid in common:
        ob, rb = ours.boxes[iid], ref.boxes[iid]
        oi, ri = match_rows_by_box(ob, rb)
        sds.append(np.abs(ours.scores[iid][oi] - ref.scores[iid][ri]).reshape(len(oi), -1).max(1, initial=0.0))
        bds.append(np.abs(ob[oi] - rb[ri]).reshape(len(oi), -1).max(1, initial=0.0))
        moved += int((oi != ri).sum())
        only_ours += len(ob) - len(oi)
        only_ref += len(rb) - len(ri)
    sd, bd = np.concatenate(sds), np.concatenate(bds)
    stat = lambda a, q: float(np.percentile(a, q)) if a.size else None  # noqa: E731
    return {
        "images_ours": len(ours.boxes), "images_reference": len(ref.boxes), "images_common": len(common),
        "images_same_rows": len(same), "rows_compared": int(sd.size), "rows_only_ours": only_ours,
        "rows_only_reference": only_ref, "rows_matched_elsewhere": moved,
        "score_abs_diff": {"max": stat(sd, 100), "p99": stat(sd, 99), "median": stat(sd, 50)},
        "box_abs_diff_px": {"max": stat(bd, 100), "p99": stat(bd, 99), "median": stat(bd, 50)},
        "rows_boxes_within_1px": float((bd <= 1.0).mean()) if bd.size else None,
    }
