"""The candidate sets ``sepnms ground eval`` reads from the pipeline's outputs: the detector's
per-image detections under MAttNet's rule (``mattnet_det_sets``), the kept proposals of a fused
first-stage table at the conf ``evaluate`` chooses (``fused_sets``), and the set of a method
name (``candidate_sets``: ``gt``, ``mattnet_dets``, a fused method ``M`` or ``M@mattnet_dets``,
or a detection file).  The sets of the annotations and of a file are
:mod:`sepnms.grounding.candidates`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from sepnms.evaluation.budget import MATTNET_DETS, Budgets, split_method
from sepnms.evaluation.metrics import SCORE_COLUMN, select_by_conf
from sepnms.grounding.candidates import CandidateSet, file_sets, gt_sets
from sepnms.grounding.data import GroundingData
from sepnms.io.proposals import read_proposals
from sepnms.workdir import fused_path, safe_name


def mattnet_det_sets(budgets: Budgets, data: GroundingData, split: str) -> dict[int, CandidateSet]:
    """The detector's per-image detections under MAttNet's rule (per class NMS, score threshold)."""
    per_image: dict[int, CandidateSet] = {}
    out = {}
    for rid in data.ref_ids(split):
        iid = data.refs[rid]["image_id"]
        if iid not in per_image:
            dets = budgets.dets.of_image(iid)
            per_image[iid] = CandidateSet(iid, np.array([d.box for d in dets], np.float32).reshape(-1, 4),
                                          np.array([d.class_index for d in dets], np.int64), plus_one=True)
        for s in data.refs[rid]["sent_ids"]:
            out[s] = per_image[iid]
    return out


def fused_sets(budgets: Budgets, method: str, split: str) -> dict[int, CandidateSet]:
    """The kept proposals of a fused first-stage table, at the conf ``evaluate`` chooses for it:
    ``method`` is a fused method ``M`` or ``M@mattnet_dets`` (``M`` at the budget of MAttNet's
    detections; :mod:`sepnms.evaluation.budget`)."""
    base, _ = split_method(method)
    table = read_proposals(fused_path(budgets.cfg, safe_name(base, "method name"), split))
    conf = budgets.selection_conf(table, method, split)
    out = {}
    for e in table:
        keep = select_by_conf(e.scores[SCORE_COLUMN], conf)
        out[e.sent_id] = CandidateSet(e.image_id, np.asarray(e.box[keep], np.float32).reshape(-1, 4),
                                      np.asarray(e.cls_idx[keep], np.int64))
    return out


def candidate_sets(budgets: Budgets, data: GroundingData, method: str, split: str,
                   dets_files: Optional[dict[str, Path]] = None) -> dict[int, CandidateSet]:
    if dets_files and method in dets_files:
        return file_sets(dets_files[method], data, split)
    if method == "gt":
        return gt_sets(data, split)
    if method == MATTNET_DETS:
        return mattnet_det_sets(budgets, data, split)
    return fused_sets(budgets, method, split)
