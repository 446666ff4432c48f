"""Typed, validated configuration.

A config is a YAML file (or a preset name, ``paper`` or ``demo``) plus ``--set key=value``
overrides.  Every path and hyperparameter the pipeline uses lives here; nothing is a constant
buried in code.  Unknown keys are refused with the nearest valid key suggested.

Relative paths in a config file are resolved against the directory of that file, so a world
directory (which carries its own ``config.yaml``) can be moved as a whole.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sepnms.errors import ConfigError

PRESETS = ("paper", "demo")
DATASET_SPLIT_BYS = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("umd", "google")}


# ---------------------------------------------------------------------------------------
# numeric types with their bounds declared once (tests/test_config_bounds.py walks the whole
# model and fails on a numeric field without them).  Integers are strict (a bool or 2.5 is not a
# count); floats are finite (NaN and infinity are refused everywhere).

PosInt = Annotated[int, Field(ge=1, strict=True)]
"""A count or size: 1, 2, ..."""
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
"""0, 1, 2, ..."""
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite value > 0 (learning rates, scales, steps)."""
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite value >= 0 (weights of loss terms, margins)."""
Prob = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A probability or fraction in [0, 1]."""
Dropout = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
"""A dropout rate (or an Adam beta) in [0, 1)."""
IoU = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
"""An IoU threshold (or a decay factor) in (0, 1]."""
Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]
"""An 8-bit pixel value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsConfig(_Section):
    """Input files.  ``None`` means "not supplied"; a stage that needs it says so."""

    refer_root: Optional[Path] = None
    """``<refer_root>/<dataset>/refs(<split_by>).p`` and ``instances.json``."""
    images_dir: Optional[Path] = None
    """Folder of the COCO train2014 images (``COCO_train2014_%012d.jpg``); default
    ``<refer_root>/images/mscoco/images/train2014``."""
    rpn_boxes: Optional[Path] = None
    rpn_box_scores: Optional[Path] = None
    head_feats_dir: Optional[Path] = None
    data_json: Optional[Path] = None
    glove: Optional[Path] = None
    """GloVe vectors: a text file (``word v1 ... vD`` per line) or a ``.npy`` matrix with a
    word list beside it (see ``sepnms.io.glove``)."""
    text_encoder: Optional[Path] = None
    """A BERT-family model folder loadable by ``transformers`` ``from_pretrained``."""
    maskrcnn_checkpoint: Optional[Path] = None
    """MAttNet's Mask R-CNN checkpoint; its ``resnet.layer4.*`` tensors initialise the head."""
    detector_checkpoint: Optional[Path] = None
    """MAttNet's Mask R-CNN res101 state dict (``res101_mask_rcnn_iter_1250000_cpu.pth``) run by
    ``sepnms detect`` and by ``features.source: images``; default ``paths.maskrcnn_checkpoint``."""
    clip_checkpoint: Optional[Path] = None
    """OpenAI-layout CLIP checkpoint (``RN101.pt``) or open_clip state dict."""
    clip_heads: Optional[Path] = None
    """CLIP-dagger heads; default ``<workdir>/clip/heads.pt``."""
    captions: Optional[Path] = None
    """COCO-format captions file for CLIP-dagger fine-tuning."""
    captions_images_dir: Optional[Path] = None


class PrepareConfig(_Section):
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


class ModelConfig(_Section):
    feat_channels: PosInt = 1024
    feat_stride: PosInt = 16
    pooling: Literal["crop", "roi_align"] = "crop"
    pool_size: PosInt = 7
    head_mid_channels: PosInt = 512
    head_out_channels: PosInt = 2048
    head_blocks: PosInt = 3
    word_dim: PosInt = 300
    gru_hidden: PosInt = 256
    hidden_dim: PosInt = 1024
    embed_dim: PosInt = 512
    text_dim: PosInt = 768
    attn_dropout: Dropout = 0.5
    score_dropout: Dropout = 0.5
    text_dropout: Dropout = 0.1
    temperature: PosFloat = 0.06
    bn_xavier_init: bool = False
    """Parity flag: the released code Xavier-initialises BatchNorm scales too."""


class TextConfig(_Section):
    max_length: PosInt = 10
    pooling: Literal["mean_all", "masked_mean"] = "mean_all"
    batch_size: PosInt = 64
    build_tiny_encoder: bool = False
    """Demo only: build a small random BERT-family encoder in the workdir when no
    ``paths.text_encoder`` is given (no pretrained BERT can be downloaded here)."""
    tiny_hidden: PosInt = 64
    tiny_layers: PosInt = 2
    tiny_heads: PosInt = 2


class TrainConfig(_Section):
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


class FusionConfig(_Section):
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


class EvaluateConfig(_Section):
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


class ProposeConfig(_Section):
    flush_every: PosInt = 64
    """``propose`` writes a part file (``<split>.parts/part-<first image>.h5``) every this many
    images; an interrupted run resumes after the last part written."""


class ShowConfig(_Section):
    """``sepnms show``: qualitative figures, one PNG per expression (``<workdir>/show/<split>/``)."""

    methods: list[str] = Field(default_factory=lambda: ["det", "refnms", "sepnms"])
    """Fused methods drawn side by side (those without a fused table are skipped unless named
    on the command line)."""
    split: Optional[str] = None
    """Default: the first of ``evaluate.splits``."""
    n: PosInt = 40
    select: Literal["all", "hits", "misses", "disagree"] = "all"
    """``hits`` / ``misses``: the last method hits / misses the referent; ``disagree``: the
    methods' hit/miss differ."""
    panel_px: Annotated[int, Field(ge=32, strict=True)] = 384
    """Longer side of each panel, in pixels."""
    dpi: Annotated[int, Field(ge=10, strict=True)] = 100
    max_labels: NonNegInt = 12
    demo_n: NonNegInt = 4
    """``sepnms demo`` writes this many figures per evaluated split (``disagree`` selection: the
    first expressions on which the methods' outcomes differ); the gallery links to them."""


class GalleryConfig(_Section):
    """``sepnms gallery``: one static HTML page over an evaluation (``<workdir>/gallery/index.html``)."""

    methods: Optional[list[str]] = None
    """Default: every method ``evaluate`` scored (``M@X`` rows of metrics.json included)."""
    splits: Optional[list[str]] = None
    """Default: ``evaluate.splits``."""
    visible: Optional[list[str]] = None
    """Methods whose boxes are shown when the page opens (the others have their toggle off).
    Default: ``show.methods``."""
    card_px: Annotated[int, Field(ge=120, strict=True)] = 360
    """Width of a card on a wide screen, in CSS pixels (the image scales with it)."""
    page_size: PosInt = 60
    """Cards per page of the page's pager."""


class ClipConfig(_Section):
    arch: str = "RN101"
    """open_clip model name, or ``tiny`` (a small ModifiedResNet CLIP built from ``tiny_*``)."""
    embed_dim: PosInt = 512
    layer3_channels: PosInt = 1024
    image_size: PosInt = 224
    freeze_backbone: bool = True
    gamma1: PosFloat = 4.0
    gamma2: PosFloat = 5.0
    gamma3: PosFloat = 10.0
    batch_size: PosInt = 48
    epochs: PosInt = 150
    lr: PosFloat = 2e-4
    lr_decay: IoU = 0.98
    lr_min: NonNegFloat = 2e-5
    betas: tuple[Dropout, Dropout] = (0.5, 0.999)
    resize: PosInt = 355
    crop: PosInt = 299
    ctx_threshold: Prob = 0.08
    score_scale: PosFloat = 10.0
    referent_iou: IoU = 0.9
    bgr_parity: bool = False
    """Parity flag: the released code feeds BGR crops to CLIP by mistake."""
    score_proposals: bool = False
    """Make ``propose`` score every candidate crop with CLIP-dagger (needed by ``sep+clip``)."""
    amp: bool = False
    """Mixed precision (float16 autocast) for CLIP-dagger inference in ``clip-ctx`` and
    ``propose`` on CUDA; ignored on CPU.  (Fine-tuning follows ``train.amp``.)"""
    max_steps: Optional[PosInt] = None
    tiny_width: PosInt = 16
    tiny_layers: tuple[PosInt, PosInt, PosInt, PosInt] = (1, 1, 1, 1)
    tiny_text_width: PosInt = 64
    tiny_text_layers: PosInt = 2
    tiny_text_heads: PosInt = 2
    tiny_context_length: PosInt = 32
    tiny_vocab_size: PosInt = 49408

    @model_validator(mode="after")
    def _check_crop(self) -> "ClipConfig":
        if self.crop > self.resize:
            raise ValueError(f"clip.crop ({self.crop}) must not exceed clip.resize ({self.resize}): a random crop of the resized image")
        return self


class DetectorConfig(_Section):
    """MAttNet's Mask R-CNN res101 (C4) at test time (``sepnms.detection``; paper values)."""

    width: PosInt = 64
    """Stem channels; layer1..4 have 1, 2, 4, 8 x width mid channels and 4x that out (64: ResNet-101)."""
    blocks: tuple[PosInt, PosInt, PosInt, PosInt] = (3, 4, 23, 3)
    rpn_channels: PosInt = 512
    num_classes: Annotated[int, Field(ge=2, strict=True)] = 81
    anchor_scales: list[PosFloat] = Field(default_factory=lambda: [4.0, 8.0, 16.0, 32.0], min_length=1)
    anchor_ratios: list[PosFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    feat_stride: PosInt = 16
    pixel_means: tuple[Pixel, Pixel, Pixel] = (102.9801, 115.9465, 122.7717)
    """BGR means subtracted before resizing."""
    test_scale: PosInt = 600
    """Short side of the resized image."""
    test_max_size: PosInt = 1000
    """Long side cap of the resized image."""
    rpn_pre_nms_top_n: PosInt = 6000
    rpn_post_nms_top_n: PosInt = 300
    rpn_nms_thresh: IoU = 0.7
    bbox_stds: tuple[PosFloat, PosFloat, PosFloat, PosFloat] = (0.1, 0.1, 0.2, 0.2)
    pool_size: PosInt = 7
    det_nms: IoU = 0.3
    det_score: Prob = 0.65
    det_lower_step: IoU = 0.1
    det_order: Literal["py2", "py3"] = "py2"
    """Order of ``detect``'s ``dets.json`` (and so its ``det_id`` = ``h5_id``): MAttNet's
    ``run_detect.py`` walks ``refer.Imgs`` and, per image, ``cls_to_dets`` (class name -> boxes in
    NMS order).  ``py2``: those dicts' CPython 2.7 iteration order, as MAttNet's released
    detections were written; ``py3``: the same script under Python 3 (images in instances.json
    order, classes by category id)."""
    batch_images: PosInt = 1
    """Images of the same resized size run through the trunk together."""
    roi_chunk: PosInt = 300
    """RoIs per pass through layer4."""
    num_workers: NonNegInt = 0
    """Image-decoding loader workers of ``detect``."""
    flush_every: PosInt = 64
    """``detect`` writes a part file every this many images."""
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Autocast dtype on CUDA (ignored on CPU)."""


class ImagesConfig(_Section):
    """Every image read (``sepnms.io.images.read_image``: detect, predict, show, gallery, clip-ctx,
    clip-finetune, ``features.source: images``, CLIP-dagger proposal scores)."""

    max_pixels: PosInt = 40_000_000
    """Largest width x height decoded (from the file's header, before decoding): a small file can
    declare a huge image.  COCO's largest are 640 x 640."""


class FeaturesConfig(_Section):
    """Where the C4 maps of train / propose / benchmarks come from."""

    source: Literal["h5", "images"] = "h5"
    """``h5``: MAttNet head files in ``paths.head_feats_dir``; ``images``: computed from the image
    with the detector trunk (``paths.detector_checkpoint``), no 150 GB cache needed."""
    cache_images: PosInt = 64
    """Maps kept in memory (LRU) per process."""


class WorldConfig(_Section):
    n_images: PosInt = 160
    image_size: Annotated[int, Field(ge=32, strict=True)] = 256
    min_objects: PosInt = 4
    max_objects: PosInt = 7
    sentences_per_ref: PosInt = 2
    split_fractions: dict[str, Prob] = Field(
        default_factory=lambda: {"train": 0.6, "val": 0.14, "testA": 0.13, "testB": 0.13}
    )
    image_format: Literal["jpg", "png"] = "jpg"
    quality_fit_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5
    """Share of the world's images the linear probes of ``quality.json`` are fit on (the rest score them)."""
    quality_score_thresh: Dropout = 0.05
    """Class-score threshold of the detections scored by COCOeval (py-faster-rcnn test_net's 0.05)."""

    @model_validator(mode="after")
    def _check_objects(self) -> "WorldConfig":
        if self.min_objects > self.max_objects:
            raise ValueError(f"world.min_objects ({self.min_objects}) must not exceed world.max_objects ({self.max_objects})")
        return self


class WorldDetectorConfig(_Section):
    """Training of the world's detector (``sepnms world train-detector``; docs/METHOD.md "The world's
    detector"): RPN + box-head losses (py-faster-rcnn's targets) on scenes generated on the fly
    from ``train_seed`` (a seed no demo or test world uses), plus an attribute head (colour, size)
    on the box features as in bottom-up attention detectors - the head is not saved."""

    checkpoint: Optional[Path] = None
    """The trained checkpoint the world uses; None = the one shipped in the package."""
    train_seed: NonNegInt = 9_000_017
    """Scenes of training step s come from ``numpy.random.default_rng([train_seed, s])``."""
    steps: PosInt = 3500
    batch_images: PosInt = 2
    lr: PosFloat = 2e-3
    """AdamW learning rate (linear warm-up, then cosine decay to ``lr * lr_final``)."""
    lr_final: Prob = 0.02
    warmup_steps: NonNegInt = 200
    weight_decay: NonNegFloat = 1e-4
    rpn_batch: PosInt = 256
    """Anchors sampled per image (py-faster-rcnn RPN_BATCHSIZE)."""
    rpn_fg_fraction: Prob = 0.5
    rpn_fg_iou: IoU = 0.7
    rpn_bg_iou: IoU = 0.3
    rpn_train_pre_nms_top_n: PosInt = 2000
    rpn_train_post_nms_top_n: PosInt = 300
    roi_batch: PosInt = 64
    """RoIs sampled per image for the box head (fg IoU >= roi_fg_iou, bg below it)."""
    roi_fg_fraction: Prob = 0.25
    roi_fg_iou: IoU = 0.5
    attr_weight: NonNegFloat = 0.5
    """Weight of the colour + size cross-entropies on foreground RoIs (0 = off)."""
    bn_calibration_images: NonNegInt = 64
    """Images whose statistics replace the BatchNorm running averages at the end (precise BN)."""
    log_every: PosInt = 50
    checkpoint_every: NonNegInt = 500
    """Write the (BN-calibrated) checkpoint every this many steps as well (0 = only at the end)."""
    threads: PosInt = 1
    """torch CPU threads while training."""


class GroundingConfig(_Section):
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


class Config(_Section):
    preset: Literal["paper", "demo"] = "paper"
    dataset: Literal["refcoco", "refcoco+", "refcocog"] = "refcoco"
    split_by: str = "unc"
    workdir: Path = Path("work")
    seed: NonNegInt = 0
    device: str = "cpu"
    paths: PathsConfig = Field(default_factory=PathsConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    propose: ProposeConfig = Field(default_factory=ProposeConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    show: ShowConfig = Field(default_factory=ShowConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    world_detector: WorldDetectorConfig = Field(default_factory=WorldDetectorConfig)
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)

    @model_validator(mode="after")
    def _check_dataset(self) -> "Config":
        valid = DATASET_SPLIT_BYS[self.dataset]
        if self.split_by not in valid:
            raise ValueError(
                f"split_by {self.split_by!r} is not valid for dataset {self.dataset!r}; "
                f"choose one of {list(valid)}"
            )
        return self

    # -- derived values -------------------------------------------------------------
    @property
    def dataset_tag(self) -> str:
        """``refcoco_unc``-style tag used in file names."""
        return f"{self.dataset}_{self.split_by}"

    def refs_path(self) -> Path:
        return self._need("refer_root") / self.dataset / f"refs({self.split_by}).p"

    def instances_path(self) -> Path:
        return self._need("refer_root") / self.dataset / "instances.json"

    def images_dir(self) -> Path:
        if self.paths.images_dir is not None:
            return self.paths.images_dir
        return self._need("refer_root") / "images" / "mscoco" / "images" / "train2014"

    def _need(self, key: str) -> Path:
        value = getattr(self.paths, key)
        if value is None:
            raise ConfigError(f"config key paths.{key} is not set; this stage needs it")
        return value

    def need_path(self, key: str) -> Path:
        """The value of ``paths.<key>``, or a ConfigError naming the key."""
        return self._need(key)

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the given sections (all if none), to detect stale outputs."""
        data = self.model_dump(mode="json")
        if sections:
            data = {s: data[s] for s in sections}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------
# loading


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    text = resources.files("sepnms.presets").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        full = f"{prefix}{name}"
        keys.append(full)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, full + "."))
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _valid_keys(Config), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _origin(loc: str, overrides: list[str]) -> str:
    """`` (from --set KEY=VALUE)`` when the offending key came from an override, else ``''``."""
    for item in reversed(overrides):  # the last override of a key is the one in force
        key = item.split("=", 1)[0].strip()
        if loc and (key == loc or key.startswith(loc + ".")):
            return f" (from --set {item})"
    return ""


def _format_validation_error(err: ValidationError, source: str, overrides: Optional[list[str]] = None) -> str:
    """One line: ``invalid config (<source>): <problem>[; <problem> ...]``."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        origin = _origin(loc, overrides or [])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key {loc!r}{_suggest(loc)}{origin}")
        else:
            problems.append(f"{loc or '<root>'}{origin}: {e['msg']}")
    return f"invalid config ({source}): " + "; ".join(problems)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict."""
    data = json.loads(json.dumps(data, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _parse_value(value)
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative paths of a config file absolute against ``base`` (its folder)."""
    paths = data.get("paths") or {}
    for key, value in list(paths.items()):
        if isinstance(value, str) and value and not Path(value).is_absolute():
            paths[key] = str((base / value).resolve())
    wd = data.get("workdir")
    if isinstance(wd, str) and not Path(wd).is_absolute():
        data["workdir"] = str((base / wd).resolve())


def load_config(
    source: str | Path | None = None,
    overrides: Optional[list[str]] = None,
) -> Config:
    """Load a config from a preset name or a YAML path, then apply overrides.

    A YAML file may name ``preset:``; its values are merged over that preset.
    """
    overrides = overrides or []
    src = str(source) if source is not None else "paper"
    if src in PRESETS:
        data = preset_dict(src)
        data["preset"] = src
    else:
        path = Path(src)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (or use a preset: {list(PRESETS)})")
        try:
            user = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                              f"{exc.start}): not a YAML config") from None
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())  # one line
            raise ConfigError(f"config file {path} is not valid YAML: {detail}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        preset = user.get("preset", "paper")
        data = _deep_merge(preset_dict(preset), user)
        _resolve_paths(data, path.resolve().parent)
    data = apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, src, overrides)) from None


def save_config(cfg: Config, path: Path) -> None:
    from sepnms.io.atomic import atomic_write_text

    atomic_write_text(path, cfg.to_yaml())
