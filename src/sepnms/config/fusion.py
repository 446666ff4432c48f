"""From the first stage's scores to the scored proposals: ``propose`` (writing them), ``fusion``
(the rule that fuses detector and relatedness scores) and ``evaluate`` (the recalls)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sepnms.config.fields import IoU, NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Section


class ProposeConfig(Section):
    flush_every: PosInt = 64
    """``propose`` writes a part file (``<split>.parts/part-<first image>.h5``) every this many
    images; an interrupted run resumes after the last part written."""


class FusionConfig(Section):
    rule: Literal["det", "refnms", "sep", "sep+clip"] = "sep"
    k: NonNegFloat = 2.0
    ref_cut: Prob = 0.03
    nms_iou: IoU = 0.3
    clip_term: Literal["objects", "candidates"] = "objects"
    """The CLIP term of ``sep+clip``: softmax over the image's unique confident detections
    (``objects``) or over all candidate crops (``candidates``, ~1/M); docs/METHOD.md."""
    clip_scale: PosFloat = 10.0
    clip_object_det: Prob = 0.5
    clip_object_nms: IoU = 0.5


class EvaluateConfig(Section):
    splits: list[str] = Field(default_factory=lambda: ["val", "testA", "testB"])
    target_proposals: PosFloat = 9.0
    """The conf of every method is chosen so that about this many proposals per expression
    remain (the paper keeps about 8-10)."""
    conf_grid_size: Annotated[int, Field(ge=2, strict=True)] = 200
    hit_iou: IoU = 0.5
    bootstrap_samples: Annotated[int, Field(ge=100, strict=True)] = 2000
    """Resamples of the 95 % bootstrap interval given beside every rate."""
    bootstrap_seed: NonNegInt = 0
    top_n_export: NonNegInt = 0
    """``export``: 0 = conf-selected at the conf chosen above (file ``..._0.json``, Ref-NMS's naming;
    give MAttNet ``--top-N 0``); N > 0 = the N best proposals per expression (``..._N.json``)."""
    mattnet_dets: bool = True
    """With the detector's output configured (``paths.rpn_boxes`` / ``rpn_box_scores``): also evaluate
    MAttNet's own detections (``mattnet_dets``) and every method at their budget (``M@mattnet_dets``:
    as many proposals per expression as ``mattnet_dets``, per split)."""
    ctx_source: str = "train"
    """Which ctxdb (``prepare/ctxdb_<source>.json``) gives the context boxes of the context
    recall: ``train`` (= train.ctx_source), ``glove``, ``clip``, or another written one (the demo
    writes ``mentions``, the world's ground truth)."""
