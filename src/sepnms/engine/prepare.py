"""``sepnms prepare``: refer + detector output + GloVe -> vocab, refdb, candidates, GloVe ctxdb."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sepnms.config import Config
from sepnms.data.candidates import Candidates, clean_boxes, initial_filter, save_candidates
from sepnms.data.ctxdb import ctxdb_path, glove_ctxdb, save_ctxdb
from sepnms.data.refdb import build_refdb, load_refer, save_refdb
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_write_json, transaction
from sepnms.io.fs import ensure_free
from sepnms.io.glove import load_glove
from sepnms.io.head_feats import check_head_layout, head_path, read_head
from sepnms.io.mattnet_data import image_sizes, load_data_json
from sepnms.io.refer import Refer
from sepnms.io.rpn import RpnDetections, load_rpn
from sepnms.text.nouns import extract_nouns, load_spacy
from sepnms.text.vocab import build_vocab, save_vocab
from sepnms.workdir import check_stage, write_manifest

log = logging.getLogger(__name__)

#: the detector's object classes (MAttNet's Mask R-CNN: COCO's 80; class 0 is background)
NUM_COCO_CLASSES = 80


def load_detections(cfg: Config, image_ids: list[int]) -> RpnDetections:
    """The detector dumps, checked to cover ``image_ids`` with finite values (before any work)."""
    rpn = load_rpn(cfg.need_path("rpn_boxes"), cfg.need_path("rpn_box_scores"))
    rpn.check_covers(image_ids)
    for iid in image_ids:
        boxes, scores = rpn.get(iid)
        if not np.isfinite(scores[:, 1:]).all():
            raise InputError(rpn.scores_path, f"image_id {iid}: NaN or Inf among the class probabilities")
        if not np.isfinite(boxes[:, 1:]).all():
            raise InputError(rpn.boxes_path, f"image_id {iid}: NaN or Inf among the box coordinates")
    return rpn


def build_pools(cfg: Config, refer: Refer, image_split: dict[int, str], progress: bool,
                rpn: RpnDetections | None = None,
                sizes: dict[int, tuple[int, int]] | None = None) -> tuple[dict[int, Candidates], dict[str, int]]:
    """Initial filtering of every image's detections.

    Boxes are clipped to the image (``sizes``, default the instances' sizes); boxes of zero
    area after clipping (inverted, degenerate, or wholly outside) are dropped, and the
    (box, class) pairs above ``class_prob_threshold`` so lost are counted as
    ``invalid_boxes_dropped``.
    """
    p = cfg.prepare
    if rpn is None:
        rpn = load_detections(cfg, sorted(image_split))
    pools: dict[int, Candidates] = {}
    dropped = 0
    for iid in tqdm(sorted(image_split), desc="candidates", disable=not progress):
        boxes, scores = rpn.get(iid)
        boxes, scores = boxes.copy(), scores.copy()
        w, h = sizes[iid] if sizes and iid in sizes else refer.image_size(iid)
        valid = clean_boxes(boxes.reshape(-1, 4), w, h).reshape(boxes.shape[:2])
        dropped += int((~valid[:, 1:] & (scores[:, 1:] > p.class_prob_threshold)).sum())
        scores[~valid] = 0.0
        split = image_split[iid]
        # validation images: the training minimum for the val loss, the test minimum marked within
        # (the released code builds its validation set like its training set)
        val = split == cfg.train.val_split
        min_count = p.min_candidates_train if split == cfg.train.train_split or val else p.min_candidates_test
        pools[iid] = initial_filter(boxes, scores, p.class_prob_threshold, p.threshold_step, min_count,
                                    image_id=iid, source=rpn.boxes_path,
                                    test_min_count=p.min_candidates_test if val else None)
        if len(pools[iid]) == 0:
            raise InputError(rpn.boxes_path, f"image_id {iid}: no candidate at any threshold (every class probability "
                                             f"in {Path(rpn.scores_path or 'the scores').name} is 0, or its box has no area inside the "
                                             f"{w}x{h} image)")
    return pools, {"invalid_boxes_dropped": dropped}


def check_head_feats(cfg: Config, image_ids: list[int], sizes: dict[int, tuple[int, int]] | None = None) -> None:
    """Every image has a head-feature file that opens as HDF5 with the expected layout and
    channel count, and (with ``sizes``: image id -> (W, H)) a map and ``im_info`` that fit the
    image at ``model.feat_stride`` (metadata and im_info only: cheap); the first one is read
    whole (finite values)."""
    folder = cfg.need_path("head_feats_dir")
    missing = [iid for iid in image_ids if not head_path(folder, iid).is_file()]
    if missing:
        raise InputError(head_path(folder, missing[0]),
                         f"head features missing for {len(missing)} of {len(image_ids)} images (first: image_id {missing[0]})")
    for iid in image_ids:
        check_head_layout(folder, iid, expect_channels=cfg.model.feat_channels,
                          image_size=sizes.get(iid) if sizes else None, stride=cfg.model.feat_stride)
    read_head(folder, image_ids[0], expect_channels=cfg.model.feat_channels)


def vocab_token_lists(cfg: Config, refdb) -> list[list[str]]:
    """The token lists the vocabulary is counted on (``prepare.vocab_splits``): every expression
    (``all``, Ref-NMS's rule) or those of ``train.train_split`` (``train``)."""
    if cfg.prepare.vocab_splits == "all":
        return [e["tokens"] for e in refdb.expressions]
    train_tokens = [e["tokens"] for e in refdb.split(cfg.train.train_split)]
    if not train_tokens:
        raise InputError(cfg.refs_path(), f"no expression in split {cfg.train.train_split!r}")
    return train_tokens


def prepare(cfg: Config, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the prepare stage.  Returns (and writes to ``prepare/summary.json``) the counts."""
    out = check_stage(cfg, "prepare", overwrite=overwrite)
    refer = load_refer(cfg)
    if len(refer.cat_name) != NUM_COCO_CLASSES:  # the detector's classes 1..80 map onto them (export needs it)
        raise InputError(cfg.instances_path(), f"{len(refer.cat_name)} categories; the detector's "
                                               f"{NUM_COCO_CLASSES} classes need all {NUM_COCO_CLASSES} COCO categories")
    sizes = image_sizes(load_data_json(cfg.paths.data_json)) if cfg.paths.data_json else None
    if sizes is not None:
        absent = [iid for iid in refer.refs_by_image if iid not in sizes]
        if absent:
            raise InputError(cfg.paths.data_json, f"image_id {absent[0]} of the refs is absent from its images list")
    refdb = build_refdb(refer, cfg.dataset_tag, sizes)
    image_split = {iid: img["split"] for iid, img in refdb.images.items()}
    rpn = load_detections(cfg, sorted(image_split))  # fail fast, before spaCy and GloVe
    if cfg.features.source == "h5":
        check_head_feats(cfg, sorted(image_split), {iid: (img["width"], img["height"]) for iid, img in refdb.images.items()})
    else:  # C4 maps computed from the images by the detector trunk
        from sepnms.data.head_features import check_image_inputs

        check_image_inputs(cfg, refdb)

    # GloVe: only the words we need (the 840B file is 5.6 GB)
    cat_words = {w for name in refer.cat_name.values() for w in name.lower().split()}
    all_tokens = {t for e in refdb.expressions for t in e["tokens"]}
    nlp = load_spacy(cfg.prepare.spacy_model)
    nouns = extract_nouns(nlp, [e["sent"] for e in refdb.expressions], cfg.prepare.noun_pos, progress=progress)
    nouns_by_sent = {int(e["sent_id"]): n for e, n in zip(refdb.expressions, nouns)}
    noun_words = {n for ns in nouns for n in ns}
    glove = load_glove(cfg.need_path("glove"), all_tokens | cat_words | noun_words)
    if not glove:
        raise InputError(cfg.paths.glove, "none of the dataset's words were found in this GloVe file")
    dim = int(next(iter(glove.values())).shape[0])
    if dim != cfg.model.word_dim:
        raise InputError(cfg.paths.glove, f"vectors are {dim}-d but model.word_dim is {cfg.model.word_dim}")

    vocab, matrix = build_vocab(vocab_token_lists(cfg, refdb), glove, cfg.prepare.vocab_min_count)
    pools, pool_stats = build_pools(cfg, refer, image_split, progress, rpn, sizes)
    ctxdb = glove_ctxdb(refer, nouns_by_sent, glove, cfg.prepare.glove_sim_threshold, cfg.prepare.referent_iou)

    # Everything is computed; now write, all or nothing: every file goes to a temp file first
    # (a full disk or a read-only folder fails here, leaving the earlier outputs as they were),
    # then the manifest is removed and the temp files are renamed into place; the manifest comes
    # back last, so a run killed among the renames leaves a folder without manifest (incomplete),
    # never one whose manifest vouches for a mix of old and new files.
    n_cand = np.array([len(c) for c in pools.values()])
    n_ctx = np.array([len(e["ctx_ann_ids"]) for e in ctxdb.entries.values()])
    unknown = sum(1 for e in refdb.expressions if not any(t in vocab.index for t in e["tokens"]))
    summary = {
        "dataset": cfg.dataset_tag,
        "expressions": len(refdb.expressions),
        "expressions_per_split": {s: sum(1 for e in refdb.expressions if e["split"] == s)
                                  for s in sorted({e["split"] for e in refdb.expressions})},
        "images": len(refdb.images),
        "vocab_size": len(vocab),
        "candidates_per_image": {"mean": float(n_cand.mean()), "min": int(n_cand.min()), "max": int(n_cand.max())},
        "context_objects_per_expression": {"mean": float(n_ctx.mean()), "with_context": float((n_ctx > 0).mean())},
        "expressions_without_known_tokens": unknown,
        **pool_stats,
    }
    size = matrix.nbytes + sum(c.box.nbytes + c.cls_idx.nbytes + c.det_score.nbytes for c in pools.values())
    ensure_free(out / "candidates.h5", size + 400 * len(refdb.expressions), "prepare outputs")
    with transaction():
        save_vocab(out, vocab, matrix)
        save_refdb(out / "refdb.json", refdb)
        save_candidates(out / "candidates.h5", pools)
        save_ctxdb(ctxdb_path(cfg.workdir, "glove"), ctxdb)
        atomic_write_json(out / "summary.json", summary, indent=2)
        (out / "manifest.json").unlink(missing_ok=True)
    write_manifest(cfg, "prepare", out)
    return summary
