"""``sepnms clip-ctx``: context ("critical") objects by the CLIP-dagger rule (METHOD.md "Context
labels: the ctxdb").

For every image of the refer dataset: crop every annotated object's box, encode the crops ONCE;
encode every expression of the image once; score = ``clip.score_scale`` x cosine; softmax over the
image's objects; objects with p >= ``clip.ctx_threshold`` are critical; critical objects with IoU >
``clip.referent_iou`` to the referent are the referent, the rest context.  The raw cosines and
probabilities are stored so the threshold can be swept without re-encoding.
"""
from __future__ import annotations

import hashlib
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
from sepnms.data.ctxdb import CtxDB, ctxdb_path, save_ctxdb, split_critical
from sepnms.errors import InputError, OutputExistsError
from sepnms.io.refer import Refer, xywh_to_xyxy

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
    return [int(a) for a, p in zip(ann_ids, np.asarray(prob_row).tolist()) if p >= threshold]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(path, "image not found (check paths.images_dir / paths.refer_root)")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - truncated or not an image
        raise InputError(path, f"not a readable image ({type(exc).__name__}: {str(exc)[:200]})") from None


def clip_ctx(cfg: Config, overwrite: bool = False, progress: bool = True,
             refer: Optional[Refer] = None, dagger: Optional[CLIPDagger] = None) -> dict[str, Any]:
    """Write ``<workdir>/prepare/ctxdb_clip.json``; returns a summary.

    ``refer`` / ``dagger`` may be given (already loaded); by default they come from the config
    (``load_refer(cfg)`` and :func:`sepnms.clip.model.load_dagger`).
    """
    c = cfg.clip
    out = ctxdb_path(cfg.workdir, "clip")
    heads = default_heads_path(cfg)
    params: dict[str, Any] = {
        "ctx_threshold": c.ctx_threshold, "score_scale": c.score_scale, "referent_iou": c.referent_iou,
        "bgr_parity": c.bgr_parity, "image_size": c.image_size, "arch": c.arch,
        "fingerprint": cfg.fingerprint("dataset", "split_by", "paths", "clip"),
    }
    if dagger is None:
        params["heads"] = str(heads)
        if heads.is_file():
            params["heads_sha256"] = _file_digest(heads)
            full = heads.parent / full_state_name(heads)
            if full.is_file():
                params["full_sha256"] = _file_digest(full)
    if out.is_file() and not overwrite:
        import json

        try:
            old = json.loads(out.read_text()).get("params", {})
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if old != params:
            raise OutputExistsError(f"{out} holds CLIP context labels of another configuration or other "
                                    "CLIP-dagger weights; pass --overwrite to replace them")
    if refer is None:
        from sepnms.engine.prepare import load_refer

        refer = load_refer(cfg)
    if dagger is None:
        dagger = load_dagger(cfg)
    dagger.eval()
    images_dir = cfg.images_dir()

    entries: dict[int, dict[str, Any]] = {}
    n_ctx = n_ref = n_images = 0
    t0 = time.perf_counter()
    image_ids = sorted(refer.refs_by_image)
    for iid in tqdm(image_ids, desc="clip-ctx", disable=not progress):
        anns = refer.anns_by_image.get(iid, [])
        refs = refer.refs_by_image[iid]
        sents = [(ref, s) for ref in refs for s in ref["sentences"]]
        if not anns or not sents:
            continue
        image = _open_image(images_dir / refer.img_by_id[iid]["file_name"])
        ann_ids = [int(a["id"]) for a in anns]
        boxes = np.asarray([xywh_to_xyxy(a["bbox"]) for a in anns], dtype=np.float64)
        cos, prob = label_image(dagger, image, boxes, [s["sent"] for _, s in sents], c.score_scale,
                                c.image_size, c.bgr_parity)
        n_images += 1
        for row, (ref, sent) in enumerate(sents):
            critical = critical_ann_ids(ann_ids, prob[row], c.ctx_threshold)
            ref_ids, ctx_ids, ctx_boxes = split_critical(refer, ref, critical, c.referent_iou)
            n_ctx += len(ctx_ids)
            n_ref += len(ref_ids)
            entries[int(sent["sent_id"])] = {
                "ref_ann_ids": ref_ids, "ctx_ann_ids": ctx_ids, "ctx_boxes": ctx_boxes,
                "scores": {"ann_ids": ann_ids, "cos": [round(float(v), 6) for v in cos[row]],
                           "prob": [round(float(v), 6) for v in prob[row]]},
            }
    save_ctxdb(out, CtxDB("clip", entries, params))
    summary = {"ctxdb": str(out), "images": n_images, "expressions": len(entries),
               "context_objects": n_ctx, "referent_matches": n_ref,
               "mean_context_per_expression": n_ctx / max(len(entries), 1),
               "seconds": time.perf_counter() - t0}
    log.info("clip-ctx: %d expressions, %.2f context objects each", len(entries), summary["mean_context_per_expression"])
    return summary
