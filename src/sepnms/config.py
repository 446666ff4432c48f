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
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from sepnms.errors import ConfigError

PRESETS = ("paper", "demo")
DATASET_SPLIT_BYS = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("umd", "google")}


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
    class_prob_threshold: float = Field(0.05, ge=0, lt=1)
    threshold_step: float = Field(0.005, gt=0)
    min_candidates_train: int = Field(32, ge=1)
    min_candidates_test: int = Field(1, ge=1)
    vocab_min_count: int = Field(2, ge=1)
    vocab_splits: Literal["all", "train"] = "all"
    """Whose tokens make the GloVe vocabulary (count >= ``vocab_min_count``, in GloVe): ``all`` =
    every split's expressions, Ref-NMS's rule and the released models' (GloVe is frozen, so nothing
    is trained on test data); ``train`` = ``train.train_split`` only."""
    spacy_model: str = "en_core_web_sm"
    noun_pos: list[str] = Field(default_factory=lambda: ["NOUN", "NUM", "PRON", "PROPN"])
    glove_sim_threshold: float = Field(0.4, ge=-1, le=1)
    referent_iou: float = 0.9


class ModelConfig(_Section):
    feat_channels: int = 1024
    feat_stride: int = 16
    pooling: Literal["crop", "roi_align"] = "crop"
    pool_size: int = 7
    head_mid_channels: int = 512
    head_out_channels: int = 2048
    head_blocks: int = 3
    word_dim: int = 300
    gru_hidden: int = 256
    hidden_dim: int = 1024
    embed_dim: int = 512
    text_dim: int = 768
    attn_dropout: float = 0.5
    score_dropout: float = 0.5
    text_dropout: float = 0.1
    temperature: float = 0.06
    bn_xavier_init: bool = False
    """Parity flag: the released code Xavier-initialises BatchNorm scales too."""


class TextConfig(_Section):
    max_length: int = Field(10, ge=1)
    pooling: Literal["mean_all", "masked_mean"] = "mean_all"
    batch_size: int = Field(64, ge=1)
    build_tiny_encoder: bool = False
    """Demo only: build a small random BERT-family encoder in the workdir when no
    ``paths.text_encoder`` is given (no pretrained BERT can be downloaded here)."""
    tiny_hidden: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 2


class TrainConfig(_Section):
    model: Literal["sepnms", "refnms"] = "sepnms"
    ctx_source: Literal["glove", "clip"] = "glove"
    rois_per_expression: int = Field(32, ge=1)
    max_referent: int = Field(4, ge=1)
    max_positive: int = Field(21, ge=1)
    pos_iou: float = Field(0.5, gt=0, le=1)
    max_tokens: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(5, ge=1)
    max_steps: Optional[int] = Field(None, ge=1)
    lr_head: float = Field(2e-4, gt=0)
    lr_new: float = Field(5e-4, gt=0)
    lr_gru: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(1, ge=0)
    min_lr_ratio: float = Field(0.01, gt=0, le=1)
    eval_every: int = Field(1000, ge=1)
    early_stop_patience: Optional[PositiveInt] = None
    """Stop after this many validations in a row (every ``eval_every`` steps) that do not lower the
    best validation loss; ``best.pt`` keeps the best weights.  ``epochs`` (and ``max_steps``) bound
    the run; None = train every epoch."""
    checkpoint_every: int = Field(200, ge=1)
    num_workers: int = Field(0, ge=0)
    train_split: str = "train"
    val_split: str = "val"
    val_max_expressions: Optional[int] = Field(None, ge=1)
    amp: bool = False


class FusionConfig(_Section):
    rule: Literal["det", "refnms", "sep", "sep+clip"] = "sep"
    k: float = Field(2.0, ge=0)
    ref_cut: float = Field(0.03, ge=0, le=1)
    nms_iou: float = Field(0.3, gt=0, le=1)
    clip_term: Literal["objects", "candidates"] = "objects"
    """The CLIP term of ``sep+clip``: softmax over the image's unique confident detections
    (``objects``) or over all candidate crops (``candidates``, ~1/M); docs/METHOD.md."""
    clip_scale: float = Field(10.0, gt=0)
    clip_object_det: float = Field(0.5, ge=0, le=1)
    clip_object_nms: float = Field(0.5, gt=0, le=1)


class EvaluateConfig(_Section):
    splits: list[str] = Field(default_factory=lambda: ["val", "testA", "testB"])
    target_proposals: float = Field(9.0, gt=0)
    """The conf of every method is chosen so that about this many proposals per expression
    remain (the paper keeps about 8-10)."""
    conf_grid_size: int = Field(200, ge=2)
    hit_iou: float = Field(0.5, gt=0, le=1)
    bootstrap_samples: int = Field(2000, ge=100)
    """Resamples of the 95 % bootstrap interval given beside every rate."""
    bootstrap_seed: int = 0
    top_n_export: int = Field(0, ge=0)
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
    flush_every: int = Field(64, ge=1)
    """``propose`` writes a part file (``<split>.parts/part-<first image>.h5``) every this many
    images; an interrupted run resumes after the last part written."""


class ShowConfig(_Section):
    """``sepnms show``: qualitative figures, one PNG per expression (``<workdir>/show/<split>/``)."""

    methods: list[str] = Field(default_factory=lambda: ["det", "refnms", "sepnms"])
    """Fused methods drawn side by side (those without a fused table are skipped unless named
    on the command line)."""
    split: Optional[str] = None
    """Default: the first of ``evaluate.splits``."""
    n: int = Field(40, ge=1)
    select: Literal["all", "hits", "misses", "disagree"] = "all"
    """``hits`` / ``misses``: the last method hits / misses the referent; ``disagree``: the
    methods' hit/miss differ."""
    panel_px: int = Field(384, ge=32)
    """Longer side of each panel, in pixels."""
    dpi: int = Field(100, ge=10)
    max_labels: int = Field(12, ge=0)


class GalleryConfig(_Section):
    """``sepnms gallery``: one static HTML page over an evaluation (``<workdir>/gallery/index.html``)."""

    methods: Optional[list[str]] = None
    """Default: ``show.methods``."""
    splits: Optional[list[str]] = None
    """Default: ``evaluate.splits``."""
    max_thumbnails: Optional[int] = Field(None, ge=0)
    """Draw at most this many card images (None: one per expression); every expression still
    gets a card with its outcomes."""
    thumb_px: int = Field(160, ge=32)
    """Longer side of each panel of a thumbnail, in pixels."""
    page_size: int = Field(60, ge=1)
    """Cards per page of the page's pager."""


class ClipConfig(_Section):
    arch: str = "RN101"
    """open_clip model name, or ``tiny`` (a small ModifiedResNet CLIP built from ``tiny_*``)."""
    embed_dim: int = 512
    layer3_channels: int = 1024
    image_size: int = 224
    freeze_backbone: bool = True
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0
    batch_size: int = Field(48, ge=1)
    epochs: int = Field(150, ge=1)
    lr: float = Field(2e-4, gt=0)
    lr_decay: float = Field(0.98, gt=0, le=1)
    lr_min: float = Field(2e-5, ge=0)
    betas: tuple[float, float] = (0.5, 0.999)
    resize: int = 355
    crop: int = 299
    ctx_threshold: float = 0.08
    score_scale: float = 10.0
    referent_iou: float = 0.9
    bgr_parity: bool = False
    """Parity flag: the released code feeds BGR crops to CLIP by mistake."""
    score_proposals: bool = False
    """Make ``propose`` score every candidate crop with CLIP-dagger (needed by ``sep+clip``)."""
    amp: bool = False
    """Mixed precision (float16 autocast) for CLIP-dagger inference in ``clip-ctx`` and
    ``propose`` on CUDA; ignored on CPU.  (Fine-tuning follows ``train.amp``.)"""
    max_steps: Optional[int] = None
    tiny_width: int = 16
    tiny_layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    tiny_text_width: int = 64
    tiny_text_layers: int = 2
    tiny_text_heads: int = 2
    tiny_context_length: int = 32
    tiny_vocab_size: int = 49408


class DetectorConfig(_Section):
    """MAttNet's Mask R-CNN res101 (C4) at test time (``sepnms.detection``; paper values)."""

    width: int = Field(64, ge=1)
    """Stem channels; layer1..4 have 1, 2, 4, 8 x width mid channels and 4x that out (64: ResNet-101)."""
    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)
    rpn_channels: int = Field(512, ge=1)
    num_classes: int = 81
    anchor_scales: list[float] = Field(default_factory=lambda: [4.0, 8.0, 16.0, 32.0])
    anchor_ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    feat_stride: int = 16
    pixel_means: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    """BGR means subtracted before resizing."""
    test_scale: int = 600
    """Short side of the resized image."""
    test_max_size: int = 1000
    """Long side cap of the resized image."""
    rpn_pre_nms_top_n: int = 6000
    rpn_post_nms_top_n: int = 300
    rpn_nms_thresh: float = 0.7
    bbox_stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    pool_size: int = 7
    det_nms: float = 0.3
    det_score: float = 0.65
    det_lower_step: float = 0.1
    batch_images: int = Field(1, ge=1)
    """Images of the same resized size run through the trunk together."""
    roi_chunk: int = Field(300, ge=1)
    """RoIs per pass through layer4."""
    num_workers: int = Field(0, ge=0)
    """Image-decoding loader workers of ``detect``."""
    flush_every: int = Field(64, ge=1)
    """``detect`` writes a part file every this many images."""
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Autocast dtype on CUDA (ignored on CPU)."""


class FeaturesConfig(_Section):
    """Where the C4 maps of train / propose / benchmarks come from."""

    source: Literal["h5", "images"] = "h5"
    """``h5``: MAttNet head files in ``paths.head_feats_dir``; ``images``: computed from the image
    with the detector trunk (``paths.detector_checkpoint``), no 150 GB cache needed."""
    cache_images: int = Field(64, ge=1)
    """Maps kept in memory (LRU) per process."""


class WorldConfig(_Section):
    n_images: int = 160
    image_size: int = 256
    min_objects: int = 4
    max_objects: int = 7
    sentences_per_ref: int = 2
    n_proposals: int = 60
    split_fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.6, "val": 0.14, "testA": 0.13, "testB": 0.13}
    )
    image_format: Literal["jpg", "png"] = "jpg"


class GroundingConfig(_Section):
    """The second stage: MAttNet for box comprehension (``sepnms ground``; METHOD.md "Second stage").

    Defaults are the released MAttNet's (``paper``); the ``demo`` preset shrinks the sizes.  The
    visual inputs come from the detector's C4 head maps (``paths.head_feats_dir``, ``model.feat_*``)
    and its layer4 (``model.head_*`` sizes), frozen.
    """

    word_embedding_size: int = 512
    word_vec_size: int = 512
    rnn_hidden_size: int = 512
    jemb_dim: int = 512
    word_drop_out: float = 0.5
    jemb_drop_out: float = 0.1
    visual_drop_out: float = 0.2
    visual_init_norm: float = 20.0
    num_cxt: int = 5
    """Same-category neighbours of the location module and context objects of the relation module."""
    vocab_min_count: int = 5
    """Training tokens kept when their count is strictly greater than this (MAttNet: > 5)."""
    max_length: Optional[int] = None
    """Token limit; None = MAttNet's: 10 for refcoco / refcoco+, 20 for refcocog."""
    num_atts: int = 50
    att_weight: float = 1.0
    """Weight of the attribute BCE; used only when ``paths.data_json`` carries ``att_wds`` labels."""
    margin: float = 0.1
    visual_rank_weight: float = 1.0
    lang_rank_weight: float = 1.0
    visual_sample_ratio: float = 0.3
    """Probability of a same-category visual / language negative (when the image has one)."""
    layer4_source: Literal["maskrcnn", "random"] = "maskrcnn"
    """``maskrcnn``: the detector's layer4 from ``paths.maskrcnn_checkpoint``; ``random``: a seeded
    random layer4 (the demo's choice: the world's config sets no ``paths.maskrcnn_checkpoint``, and its
    first-stage heads start from random weights too).  Frozen either way."""
    lr: float = 4e-4
    betas: tuple[float, float] = (0.8, 0.999)
    eps: float = 1e-8
    batch_images: int = 15
    seq_per_ref: int = 3
    grad_clip: float = 0.1
    lr_decay_start: int = 8000
    lr_decay_every: int = 8000
    lr_decay: float = 0.1
    max_iters: PositiveInt = 30000
    """The bound of a run (with ``early_stop_patience`` it may stop before)."""
    eval_every: PositiveInt = 2000
    early_stop_patience: Optional[PositiveInt] = None
    """Stop after this many validations in a row (every ``eval_every`` iterations) that do not raise
    the best validation accuracy; ``best.pt`` keeps the best weights.  None = run ``max_iters``."""
    checkpoint_every: PositiveInt = 500
    train_split: str = "train"
    val_split: str = "val"
    val_max_sentences: Optional[int] = None
    feature_cache_images: int = 64
    """Images whose frozen pool5 / fc7 grids stay in memory (LRU)."""


class Config(_Section):
    preset: Literal["paper", "demo"] = "paper"
    dataset: Literal["refcoco", "refcoco+", "refcocog"] = "refcoco"
    split_by: str = "unc"
    workdir: Path = Path("work")
    seed: int = 0
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
    world: WorldConfig = Field(default_factory=WorldConfig)
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
            user = yaml.safe_load(path.read_text()) or {}
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
