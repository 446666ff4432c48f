"""The second stage, MAttNet (``grounding``: ``sepnms ground``)."""
from __future__ import annotations

from typing import Literal, Optional

from sepnms.config.fields import Dropout, IoU, NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Section


class GroundingConfig(Section):
    """The second stage: MAttNet for box comprehension (``sepnms ground``; METHOD.md "Second stage").

    Defaults are the released MAttNet's (``paper``); the ``demo`` preset shrinks the sizes.  The
    visual inputs come from the detector's C4 head maps (``paths.head_feats_dir``, ``model.feat_*``)
    and its layer4 (``model.head_*`` sizes), frozen.
    """

    word_embedding_size: PosInt = 512
    word_vec_size: PosInt = 512
    rnn_hidden_size: PosInt = 512
    jemb_dim: PosInt = 512
    word_drop_out: Dropout = 0.5
    jemb_drop_out: Dropout = 0.1
    visual_drop_out: Dropout = 0.2
    visual_init_norm: PosFloat = 20.0
    num_cxt: PosInt = 5
    """Same-category neighbours of the location module and context objects of the relation module."""
    vocab_min_count: NonNegInt = 5
    """Training tokens kept when their count is strictly greater than this (MAttNet: > 5)."""
    max_length: Optional[PosInt] = None
    """Token limit; None = MAttNet's: 10 for refcoco / refcoco+, 20 for refcocog."""
    num_atts: PosInt = 50
    att_weight: NonNegFloat = 1.0
    """Weight of the attribute BCE; used only when ``paths.data_json`` carries ``att_wds`` labels."""
    margin: NonNegFloat = 0.1
    visual_rank_weight: NonNegFloat = 1.0
    lang_rank_weight: NonNegFloat = 1.0
    visual_sample_ratio: Prob = 0.3
    """Probability of a same-category visual / language negative (when the image has one)."""
    layer4_source: Literal["maskrcnn", "detector", "random"] = "maskrcnn"
    """``maskrcnn``: the detector's layer4 from ``paths.maskrcnn_checkpoint``; ``detector``: from the
    checkpoint ``detect`` runs (``paths.detector_checkpoint``, else ``paths.maskrcnn_checkpoint``) -
    the demo's choice, its world's trained detector; ``random``: a seeded random layer4.  Frozen
    either way."""
    lr: PosFloat = 4e-4
    betas: tuple[Dropout, Dropout] = (0.8, 0.999)
    eps: PosFloat = 1e-8
    batch_images: PosInt = 15
    seq_per_ref: PosInt = 3
    grad_clip: PosFloat = 0.1
    lr_decay_start: NonNegInt = 8000
    lr_decay_every: PosInt = 8000
    lr_decay: IoU = 0.1
    max_iters: PosInt = 30000
    """The bound of a run (with ``early_stop_patience`` it may stop before)."""
    eval_every: PosInt = 2000
    early_stop_patience: Optional[PosInt] = None
    """Stop after this many validations in a row (every ``eval_every`` iterations) that do not raise
    the best validation accuracy; ``best.pt`` keeps the best weights.  None = run ``max_iters``."""
    checkpoint_every: PosInt = 500
    train_split: str = "train"
    val_split: str = "val"
    val_max_sentences: Optional[PosInt] = None
    shuffle_images: bool = False
    """False: the training images in one fixed order (ascending id), epoch after epoch, as MAttNet
    (its loader never reshuffles); True: a seeded permutation per epoch."""
    gt_accuracy: Literal["index", "iou"] = "index"
    """Accuracy on ground-truth boxes (``ground eval`` method ``gt`` and the validation that picks
    ``best.pt``): ``index`` = the chosen object is the referent (MAttNet's ``eval_easy_utils``);
    ``iou`` = IoU >= 0.5 with the referent's box, as for detections (not MAttNet's rule: two
    overlapping annotations can both pass)."""
    feature_cache_images: PosInt = 64
    """Images whose frozen pool5 / fc7 grids stay in memory (LRU)."""
