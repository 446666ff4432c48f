"""``sepnms clip-ctx``: context ("critical") objects by the CLIP-dagger rule (METHOD.md "Context
labels: the ctxdb").

For every image of the refer dataset: crop every annotated object's box, encode the crops ONCE;
encode every expression of the image once; score = ``clip.score_scale`` x cosine; softmax over the
image's objects; objects with p >= ``clip.ctx_threshold`` are critical; critical objects with IoU >
``clip.referent_iou`` to the referent are the referent, the rest context.  The raw cosines and
probabilities are stored so the threshold can be swept without re-encoding.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sepnms.clip.crops import score_boxes
from sepnms.clip.model import CLIPDagger, default_heads_path, full_state_name, load_dagger
from sepnms.config import Config
from sepnms.data.ctxdb import CtxDB, ctxdb_path, load_ctxdb, save_ctxdb, split_critical
from sepnms.errors import InputError, OutputExistsError
from sepnms.io.atomic import atomic_write_json
from sepnms.io.finite import check_finite_tree
from sepnms.io.parts import PartFiles, chunked, describe_missing, file_digest, shard_keys
from sepnms.io.refer import Refer, xywh_to_xyxy
from sepnms.rules import is_critical_clip

log = logging.getLogger(__name__)


def label_image(dagger: CLIPDagger, image: Image.Image, ann_boxes, sentences: Sequence[str],
                score_scale: float = 10.0, image_size: Optional[int] = None,
                bgr_parity: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-dagger scores of one image's annotated objects for its expressions.

    Args:
        image: the RGB image (PIL; converted to RGB).
        ann_boxes: [N, 4] xyxy boxes of the image's annotated objects.
        sentences: the S expressions of the image.
    Returns:
        (cos [S, N], prob [S, N]) with prob = softmax over the N objects of ``score_scale * cos``.
    The N crops are encoded once whatever S is.
    """
    return score_boxes(dagger, image, ann_boxes, sentences, score_scale, image_size, bgr_parity)


def critical_ann_ids(ann_ids: Sequence[int], prob_row, threshold: float) -> list[int]:
    """The objects with probability >= ``threshold``."""
    return [int(a) for a, p in zip(ann_ids, np.asarray(prob_row).tolist()) if is_critical_clip(p, threshold)]


def _open_image(path: Path, max_pixels: int, expect_size: Optional[tuple[int, int]] = None) -> Image.Image:
    """The RGB image through the image gate (``io.images.read_image``)."""
    from sepnms.io.images import read_image

    if not path.is_file():
        raise InputError(path, "image not found (check paths.images_dir / paths.refer_root)")
    return Image.fromarray(read_image(path, max_pixels=max_pixels, expect_size=expect_size))


def clip_autocast(cfg: Config) -> contextlib.AbstractContextManager:
    """float16 autocast for CLIP-dagger inference when ``clip.amp`` is set and the device is CUDA;
    a no-op otherwise (CPU runs stay float32)."""
    if cfg.clip.amp and str(cfg.device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _params(cfg: Config, dagger: Optional[CLIPDagger]) -> dict[str, Any]:
    """What the labels depend on (stored in the ctxdb; a different set refuses to overwrite)."""
    c = cfg.clip
    params: dict[str, Any] = {
        "ctx_threshold": c.ctx_threshold, "score_scale": c.score_scale, "referent_iou": c.referent_iou,
        "bgr_parity": c.bgr_parity, "image_size": c.image_size, "arch": c.arch,
        "fingerprint": cfg.fingerprint("dataset", "split_by", "paths", "clip"),
    }
    if dagger is None:
        heads = default_heads_path(cfg)
        params["heads"] = str(heads)
        if heads.is_file():
            params["heads_sha256"] = file_digest(heads)
            full = heads.parent / full_state_name(heads)
            if full.is_file():
                params["full_sha256"] = file_digest(full)
    return params


def _parts(cfg: Config, params: dict[str, Any], dagger: Optional[CLIPDagger] = None) -> PartFiles:
    """The part files of ``ctxdb_clip.json``: JSON ``{"images": [...], "entries": {...}}``."""
    key: dict[str, Any] = {"params": params}
    if dagger is not None:  # weights given in memory: fingerprint their values
        h = hashlib.sha256()
        for name, value in sorted(dagger.trainable_state_dict().items()):
            h.update(name.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        key["dagger"] = h.hexdigest()[:16]
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return PartFiles(ctxdb_path(cfg.workdir, "clip"), ".json", fingerprint, lambda p: _read_part(p)["images"])


def _read_part(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        data["images"], data["entries"]  # noqa: B018 - check the keys
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"unreadable clip-ctx part ({exc}); delete it and re-run clip-ctx") from None
    return data


def _summary(db: CtxDB, refer: Refer, seconds: float) -> dict[str, Any]:
    image_of = {int(s["sent_id"]): int(ref["image_id"]) for ref in refer.refs for s in ref["sentences"]}
    n_ctx = sum(len(e["ctx_ann_ids"]) for e in db.entries.values())
    return {"images": len({image_of[s] for s in db.entries if s in image_of}), "expressions": len(db.entries),
            "context_objects": n_ctx, "referent_matches": sum(len(e["ref_ann_ids"]) for e in db.entries.values()),
            "mean_context_per_expression": n_ctx / max(len(db.entries), 1), "seconds": seconds}


def _merge(parts: PartFiles, refer: Refer, params: dict[str, Any]) -> bool:
    def write(paths: list[Path], tmp: Path) -> None:
        entries: dict[int, dict[str, Any]] = {}
        for p in paths:
            entries.update({int(k): v for k, v in _read_part(p)["entries"].items()})
        save_ctxdb(tmp, CtxDB("clip", entries, params))

    return parts.merge(sorted(refer.refs_by_image), write)


def merge_clip_ctx(cfg: Config, refer: Optional[Refer] = None) -> dict[str, Any]:
    """Merge the part files of ``clip-ctx`` shards (``sepnms merge clip-ctx``, or rank 0 under
    torchrun) into ``ctxdb_clip.json``; an InputError names the missing images if incomplete."""
    if refer is None:
        from sepnms.data.refdb import load_refer

        refer = load_refer(cfg)
    params = _params(cfg, None)
    parts = _parts(cfg, params)
    if not parts.exists() and not parts.final.is_file():
        raise InputError(parts.folder, "no clip-ctx parts: run `sepnms clip-ctx` first")
    t0 = time.perf_counter()
    if not _merge(parts, refer, params):
        raise InputError(parts.folder, describe_missing(parts, parts.missing(refer.refs_by_image)))
    return {"ctxdb": str(parts.final), **_summary(load_ctxdb(parts.final), refer, time.perf_counter() - t0)}


def clip_ctx(cfg: Config, overwrite: bool = False, progress: bool = True,
             refer: Optional[Refer] = None, dagger: Optional[CLIPDagger] = None,
             shard: tuple[int, int] = (0, 1), flush_every: int = 64, merge: bool = True) -> dict[str, Any]:
    """Write ``<workdir>/prepare/ctxdb_clip.json``; returns a summary.

    ``refer`` / ``dagger`` may be given (already loaded); by default they come from the config
    (``load_refer(cfg)`` and :func:`sepnms.clip.model.load_dagger`).

    Images are labelled in chunks of ``flush_every``, each written as a part file
    (``ctxdb_clip.parts/part-<first image>.json``, atomic; see ``sepnms.io.parts``): a re-run after
    an interruption skips the images already done.  ``shard=(i, n)`` labels every n-th image only;
    with ``merge`` the parts are joined into the ctxdb once every image is covered.
    """
    out = ctxdb_path(cfg.workdir, "clip")
    params = _params(cfg, dagger)
    if out.is_file() and not overwrite:
        try:
            old = json.loads(out.read_text()).get("params", {})
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if old != params:
            raise OutputExistsError(f"{out} holds CLIP context labels of another configuration or other "
                                    "CLIP-dagger weights; pass --overwrite to replace them")
    if refer is None:
        from sepnms.data.refdb import load_refer

        refer = load_refer(cfg)
    parts = _parts(cfg, params, dagger)
    if dagger is None:
        dagger = load_dagger(cfg)
    dagger.eval()
    images_dir = cfg.images_dir()

    t0 = time.perf_counter()
    done = parts.begin()
    mine = shard_keys(refer.refs_by_image, shard)
    bar = tqdm(total=len(mine), initial=sum(1 for iid in mine if iid in done), desc="clip-ctx", disable=not progress)
    for chunk in chunked(mine, flush_every, done):
        entries: dict[int, dict[str, Any]] = {}
        for iid in chunk:
            entries.update(_label(cfg, dagger, refer, iid, images_dir))
            bar.update(1)
        check_finite_tree(entries, f"clip-ctx, image_ids {chunk[0]}..{chunk[-1]}", default_heads_path(cfg))
        atomic_write_json(parts.part_path(chunk), {"images": chunk, "entries": {str(k): v for k, v in entries.items()}})
    bar.close()
    if not (merge and _merge(parts, refer, params)):
        return {"parts": str(parts.folder), "images_this_shard": len(mine), "merged": False}
    summary = {"ctxdb": str(out), **_summary(load_ctxdb(out), refer, time.perf_counter() - t0)}
    log.info("clip-ctx: %d expressions, %.2f context objects each", summary["expressions"],
             summary["mean_context_per_expression"])
    return summary


def _label(cfg: Config, dagger: CLIPDagger, refer: Refer, iid: int, images_dir: Path) -> dict[int, dict[str, Any]]:
    """The ctxdb entries of one image's expressions (none if it has no annotation)."""
    c = cfg.clip
    anns = refer.anns_by_image.get(iid, [])
    refs = refer.refs_by_image[iid]
    sents = [(ref, s) for ref in refs for s in ref["sentences"]]
    if not anns or not sents:
        return {}
    rec = refer.img_by_id[iid]
    recorded = (int(rec["width"]), int(rec["height"])) if "width" in rec and "height" in rec else None
    image = _open_image(images_dir / rec["file_name"], cfg.images.max_pixels, recorded)
    ann_ids = [int(a["id"]) for a in anns]
    boxes = np.asarray([xywh_to_xyxy(a["bbox"]) for a in anns], dtype=np.float64)
    with clip_autocast(cfg):
        cos, prob = label_image(dagger, image, boxes, [s["sent"] for _, s in sents], c.score_scale,
                                c.image_size, c.bgr_parity)
    entries = {}
    for row, (ref, sent) in enumerate(sents):
        critical = critical_ann_ids(ann_ids, prob[row], c.ctx_threshold)
        ref_ids, ctx_ids, ctx_boxes = split_critical(refer, ref, critical, c.referent_iou)
        entries[int(sent["sent_id"])] = {
            "ref_ann_ids": ref_ids, "ctx_ann_ids": ctx_ids, "ctx_boxes": ctx_boxes,
            "scores": {"ann_ids": ann_ids, "cos": [round(float(v), 6) for v in cos[row]],
                       "prob": [round(float(v), 6) for v in prob[row]]},
        }
    return entries
