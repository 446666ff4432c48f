"""The second stage's accuracy as MAttNet counts it, per sentence (``sentence_hits``) and over a
split with its bootstrap interval (``accuracy_of``): on ground-truth boxes the chosen object is
the referent (``eval_easy_utils``), on other candidates IoU >= 0.5 with the referent's box
(inclusive pixels, ``eval_dets_utils``)."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from sepnms.errors import InputError
from sepnms.evaluation.downstream import compute_iou_inclusive
from sepnms.evaluation.stats import bootstrap_ci
from sepnms.grounding.candidates import CandidateSet
from sepnms.grounding.data import GroundingData


def _xywh(box_xyxy) -> list[float]:
    b = [float(v) for v in box_xyxy]
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def sentence_hits(data: GroundingData, sent_ids: Iterable[int], sets: dict[int, CandidateSet],
                  chosen: dict[int, Optional[int]], gt_rule: str = "index", iou: float = 0.5) -> list[float]:
    """1.0 / 0.0 per sentence (no set or no choice = wrong).  On a ground-truth set (``ann_ids``)
    with ``gt_rule = 'index'``: the chosen object is the referent (MAttNet's ``eval_easy_utils``);
    otherwise IoU >= ``iou`` between the chosen candidate (``CandidateSet.xywh``) and the referent's
    box (MAttNet's ``computeIoU``, inclusive pixels)."""
    if gt_rule not in ("index", "iou"):
        raise ValueError(f"gt_rule must be 'index' or 'iou', not {gt_rule!r}")
    sent_to_ref = {s: r for r, ref in data.refs.items() for s in ref["sent_ids"]}
    hits = []
    for sid in sent_ids:
        ref = data.refs[sent_to_ref[sid]]
        img = data.images[ref["image_id"]]
        cs, k = sets.get(sid), chosen.get(sid)
        if cs is None or k is None:
            hits.append(0.0)
        elif cs.ann_ids is not None and gt_rule == "index":
            hits.append(1.0 if int(cs.ann_ids[k]) == img.ann_ids[ref["ann_index"]] else 0.0)
        else:
            hits.append(1.0 if compute_iou_inclusive(cs.xywh(k), _xywh(img.boxes[ref["ann_index"]])) >= iou else 0.0)
    return hits


def accuracy_of(data: GroundingData, split: str, sets: dict[int, CandidateSet], chosen: dict[int, Optional[int]],
                gt_rule: str = "index", iou: float = 0.5) -> dict[str, Any]:
    """MAttNet's accuracy over every sentence of ``split`` (missing = wrong; ``sentence_hits``),
    with its interval."""
    hits = sentence_hits(data, data.sent_ids(split), sets, chosen, gt_rule, iou)
    if not hits:
        raise InputError(None, f"split {split!r} has no sentence")
    ci = bootstrap_ci(hits)
    return {"downstream_accuracy": float(np.mean(hits)), "downstream_accuracy_ci": list(ci) if ci else None,
            "downstream_n": len(hits), "hits": hits}
