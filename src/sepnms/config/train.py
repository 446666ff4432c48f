"""Training of the first stage (``train``: ``sepnms train``)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field

from sepnms.config.fields import IoU, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class TrainConfig(Section):
    model: Literal["sepnms", "refnms"] = "sepnms"
    ctx_source: Literal["glove", "clip"] = "glove"
    rois_per_expression: PosInt = 32
    max_referent: PosInt = 4
    max_positive: PosInt = 21
    pos_iou: IoU = 0.5
    max_tokens: PosInt = 10
    batch_size: PosInt = 32
    epochs: PosInt = 5
    max_steps: Optional[PosInt] = None
    lr_head: PosFloat = 2e-4
    lr_new: PosFloat = 5e-4
    lr_gru: PosFloat = 5e-4
    weight_decay: NonNegFloat = 1e-3
    plateau_factor: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5
    plateau_patience: NonNegInt = 1
    min_lr_ratio: IoU = 0.01
    eval_every: PosInt = 1000
    early_stop_patience: Optional[PosInt] = None
    """Stop after this many validations in a row (every ``eval_every`` steps) that do not lower the
    best validation loss; ``best.pt`` keeps the best weights.  ``epochs`` (and ``max_steps``) bound
    the run; None = train every epoch."""
    checkpoint_every: PosInt = 200
    num_workers: NonNegInt = 0
    train_split: str = "train"
    val_split: str = "val"
    val_max_expressions: Optional[PosInt] = None
    amp: bool = False
