"""Information fusion and class-wise NMS (METHOD.md, "Inference and information fusion").

Per expression, each candidate carries ``S_det`` (detector class probability), ``r`` (sigmoid of
the ref-relatedness logit, column ``ref_score``), ``x`` (sigmoid of the ctx-relatedness logit,
column ``ctx_score``) and optionally ``clip`` (CLIP-dagger relatedness of the proposal crop,
column ``clip_score``).  A fusion rule turns them into one score ``S``:

- ``det``:      S = S_det
- ``refnms``:   S = x * S_det                                  (the Ref-NMS baseline)
- ``sep``:      S = x * S_det + k * r * S_det, the ref term set to 0 where r * S_det < ref_cut
- ``sep+clip``: S = (x + r + clip) * S_det, ``clip`` per ``fusion.clip_term``: ``objects`` (default)
  = a softmax over the image's unique confident detections, each candidate taking its best-matching
  object's value (:func:`sepnms.clip.proposals.object_clip_term`); ``candidates`` = the softmax
  over all M candidate crops (column ``clip_score``), which is about 1/M.

Then class-wise NMS on ``S`` (IoU threshold ``nms_iou``) keeps the candidate list.  The per-branch
columns are kept so another fusion can be re-applied offline.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torchvision.ops import batched_nms

from sepnms.config import FusionConfig
from sepnms.errors import ConfigError
from sepnms.io.proposals import ExpressionCandidates, ProposalTable
from sepnms.rules import ref_term_after_cut

RULES = ("det", "refnms", "sep", "sep+clip")

# which branch inputs each rule needs, by ``fuse_scores`` argument name
RULE_INPUTS: dict[str, tuple[str, ...]] = {
    "det": (),
    "refnms": ("ctx",),
    "sep": ("ctx", "ref"),
    "sep+clip": ("ctx", "ref", "clip"),
}

# candidate-table column holding each branch input
INPUT_COLUMNS = {"ref": "ref_score", "ctx": "ctx_score", "clip": "clip_score"}
INPUT_NAMES = {"ref": "ref-relatedness", "ctx": "ctx-relatedness", "clip": "CLIP-dagger relatedness"}

FUSED_COLUMN = "score"


class MissingScoreError(ConfigError, ValueError):
    """A fusion rule needs a branch score the candidates do not carry."""


def _as_vector(name: str, value, m: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape[0] != m:
        raise ValueError(f"{name} has {arr.shape[0]} values, expected {m} (one per candidate)")
    return arr


def fuse_scores(
    rule: str,
    det,
    ref=None,
    ctx=None,
    clip=None,
    k: float = 2.0,
    ref_cut: float = 0.03,
) -> np.ndarray:
    """Fused score ``S`` of each candidate under ``rule``.

    Args:
        rule: one of ``det``, ``refnms``, ``sep``, ``sep+clip``.
        det: [M] detector probability ``S_det``.
        ref: [M] ref-relatedness ``r`` (sigmoid), needed by ``sep`` and ``sep+clip``.
        ctx: [M] ctx-relatedness ``x`` (sigmoid), needed by every rule but ``det``.
        clip: [M] CLIP-dagger relatedness, needed by ``sep+clip``.
        k: weight of the ref term in ``sep``.
        ref_cut: in ``sep``, the ref term is dropped (0) for candidates with ``r * S_det < ref_cut``.

    Returns:
        [M] float32 fused scores.

    Raises:
        ValueError (:class:`MissingScoreError`) naming the missing input; ValueError for an
        unknown rule or mismatched lengths.
    """
    if rule not in RULE_INPUTS:
        raise ValueError(f"unknown fusion rule {rule!r}; choose one of {list(RULES)}")
    det = np.asarray(det, dtype=np.float64).reshape(-1)
    m = det.shape[0]
    given = {"ref": ref, "ctx": ctx, "clip": clip}
    for name in RULE_INPUTS[rule]:
        if given[name] is None:
            raise MissingScoreError(
                f"fusion rule {rule!r} needs the {INPUT_NAMES[name]} score ({name}, column "
                f"{INPUT_COLUMNS[name]!r}), which is missing"
                + (" (enable clip.score_proposals when proposing)" if name == "clip" else "")
            )
    inputs = {n: _as_vector(n, given[n], m) for n in RULE_INPUTS[rule]}

    if rule == "det":
        fused = det
    elif rule == "refnms":
        fused = inputs["ctx"] * det
    elif rule == "sep":
        ref_term = inputs["ref"] * det
        ref_term = ref_term_after_cut(ref_term, ref_cut)
        fused = inputs["ctx"] * det + k * ref_term
    else:  # sep+clip
        fused = (inputs["ctx"] + inputs["ref"] + inputs["clip"]) * det
    return fused.astype(np.float32)


def classwise_nms(box: np.ndarray, score: np.ndarray, cls_idx: np.ndarray, iou: float) -> np.ndarray:
    """Class-wise NMS (``torchvision.ops.batched_nms``).

    Args:
        box: [M, 4] xyxy.
        score: [M].
        cls_idx: [M] class of each box; boxes of different classes never suppress each other.
        iou: a box is dropped when its IoU with a higher-scoring kept box of its class is > iou.

    Returns:
        [K] int64 indices of the kept boxes, by descending score (ties: lower index first).
    """
    box = np.asarray(box, dtype=np.float32).reshape(-1, 4)
    score = np.asarray(score, dtype=np.float32).reshape(-1)
    cls_idx = np.asarray(cls_idx).reshape(-1)
    m = box.shape[0]
    if score.shape[0] != m or cls_idx.shape[0] != m:
        raise ValueError(f"box {box.shape}, score {score.shape} and cls_idx {cls_idx.shape} disagree")
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    # Present the boxes already in (descending score, index) order so ties are resolved
    # deterministically, then map back.
    order = np.lexsort((np.arange(m), -score))
    keep = batched_nms(
        torch.from_numpy(box[order]),
        torch.from_numpy(score[order]),
        torch.from_numpy(cls_idx[order].astype(np.int64)),
        float(iou),
    ).numpy()
    kept = order[np.sort(keep)]  # positions in ``order`` are already score-descending
    return kept.astype(np.int64)


def _branch_inputs(cand: ExpressionCandidates) -> dict[str, Optional[np.ndarray]]:
    return {name: cand.scores.get(col) for name, col in INPUT_COLUMNS.items()}


def clip_input(cand: ExpressionCandidates, fusion_cfg: FusionConfig) -> Optional[np.ndarray]:
    """The ``clip`` input of ``sep+clip`` for one expression's M candidates ([M], or None when the
    table has no CLIP-dagger columns), following ``fusion.clip_term``."""
    if fusion_cfg.clip_term == "candidates":
        return cand.scores.get(INPUT_COLUMNS["clip"])
    cos = cand.scores.get("clip_cos")
    if cos is None:
        return None
    from sepnms.clip.proposals import object_clip_term

    return object_clip_term(cand.box, cand.det_score, cos, fusion_cfg.clip_scale, fusion_cfg.clip_object_det,
                            fusion_cfg.clip_object_nms)


def fuse_expression(
    cand: ExpressionCandidates,
    rule: str,
    k: float = 2.0,
    ref_cut: float = 0.03,
    nms_iou: float = 0.3,
    clip: Optional[np.ndarray] = None,
) -> ExpressionCandidates:
    """Fuse one expression's candidates and apply class-wise NMS.

    Args:
        cand: M candidates (box [M,4], cls_idx [M], det_score [M], scores with the branch
            columns the rule needs).
        clip: [M] the ``clip`` input, replacing the ``clip_score`` column (see :func:`clip_input`).

    Returns:
        The K kept candidates, by descending fused score, with ``scores['score']`` [K] (float32)
        added (replacing any earlier fused column) and the per-branch columns kept.
    """
    try:
        inputs = _branch_inputs(cand)
        if clip is not None:
            inputs["clip"] = clip
        fused = fuse_scores(rule, cand.det_score, k=k, ref_cut=ref_cut, **inputs)
    except MissingScoreError as exc:
        raise MissingScoreError(f"sent_id {cand.sent_id}: {exc}") from None
    keep = classwise_nms(cand.box, fused, cand.cls_idx, nms_iou)
    out = cand.take(keep)
    out.scores = {**out.scores, FUSED_COLUMN: fused[keep].astype(np.float32)}
    return out


def fuse_table(table: ProposalTable, fusion_cfg: FusionConfig) -> ProposalTable:
    """Apply :func:`fuse_expression` to every expression of a split.

    Returns a table with stage ``fused`` whose attrs add ``fusion_rule``, ``fusion_k``,
    ``fusion_ref_cut`` and ``fusion_nms_iou`` (as strings) to the input table's attrs.
    """
    rule = fusion_cfg.rule
    if rule not in RULE_INPUTS:
        raise ValueError(f"unknown fusion rule {rule!r}; choose one of {list(RULES)}")
    present = set(table.score_columns())
    for name in RULE_INPUTS[rule]:
        col = INPUT_COLUMNS[name]
        if table.expressions and col not in present:
            hint = " (run propose with clip.score_proposals=true)" if name == "clip" else ""
            raise MissingScoreError(
                f"fusion rule {rule!r} needs column {col!r} ({INPUT_NAMES[name]}), but the "
                f"{table.split} candidate table has only {sorted(present)}{hint}"
            )
    exprs = [
        fuse_expression(e, rule, fusion_cfg.k, fusion_cfg.ref_cut, fusion_cfg.nms_iou,
                        clip_input(e, fusion_cfg) if rule == "sep+clip" else None)
        for e in table.expressions
    ]
    attrs = dict(table.attrs)
    attrs.update(
        fusion_rule=rule,
        fusion_k=repr(float(fusion_cfg.k)),
        fusion_ref_cut=repr(float(fusion_cfg.ref_cut)),
        fusion_nms_iou=repr(float(fusion_cfg.nms_iou)),
    )
    if rule == "sep+clip":
        attrs["fusion_clip_term"] = fusion_cfg.clip_term
    return ProposalTable(table.split, "fused", exprs, attrs)
