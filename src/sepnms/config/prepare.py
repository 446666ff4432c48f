"""``sepnms prepare`` (``prepare``): candidate sets, the GloVe vocabulary and the context labels."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sepnms.config.fields import IoU, PosFloat, PosInt, Section


class PrepareConfig(Section):
    class_prob_threshold: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.05
    threshold_step: PosFloat = 0.005
    min_candidates_train: PosInt = 32
    min_candidates_test: PosInt = 1
    vocab_min_count: PosInt = 2
    vocab_splits: Literal["all", "train"] = "all"
    """Whose tokens make the GloVe vocabulary (count >= ``vocab_min_count``, in GloVe): ``all`` =
    every split's expressions, Ref-NMS's rule and the released models' (GloVe is frozen, so nothing
    is trained on test data); ``train`` = ``train.train_split`` only."""
    spacy_model: str = "en_core_web_sm"
    noun_pos: list[str] = Field(default_factory=lambda: ["NOUN", "NUM", "PRON", "PROPN"])
    glove_sim_threshold: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 0.4
    referent_iou: IoU = 0.9
