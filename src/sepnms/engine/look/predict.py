"""One-image inference: ``sepnms.Predictor`` and ``sepnms predict``.

``Predictor.predict(image, expression)`` scores the candidate pool of one image for one free-form
expression through the functions ``propose`` uses (:func:`sepnms.engine.propose.roi_inputs`,
:func:`~sepnms.engine.propose.relatedness_scores`), then fuses and applies class-wise NMS as
``fuse`` does and selects at the method's conf as ``evaluate`` does.  So for an expression of the
dataset its scores equal the rows of ``<workdir>/proposals/<model>/<split>.h5``.

``image`` is an image id of the prepared dataset (its candidate pool and head features are read
from the workdir) or an image file: then the detector (``sepnms.detection``,
``paths.detector_checkpoint``) gives the candidate pool (``prepare``'s initial filter at test
time) and the C4 map.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from sepnms.config import Config, load_config
from sepnms.errors import ConfigError, InputError, SepNMSError

#: models a Predictor can load: run name -> (model type, train.ctx_source)
MODELS = {"sepnms": ("sepnms", "glove"), "refnms": ("refnms", "glove"), "sepnms_clipctx": ("sepnms", "clip"),
          "refnms_clipctx": ("refnms", "clip")}

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(expression: str) -> list[str]:
    """Lower-cased word tokens of a free-form expression (punctuation dropped), as in refer's
    ``tokens``."""
    return _TOKEN.findall(expression.lower())


@dataclass
class Proposal:
    """One candidate of an image, scored for one expression.

    ``box`` xyxy in original-image pixels; ``det_score`` S_det; ``ref_score`` / ``ctx_score``
    sigmoids of the branch logits (``ref_score`` None for Ref-NMS); ``clip_score`` only when
    CLIP-dagger scoring is on; ``fused_score`` S of the fusion rule; ``kept``: survives class-wise
    NMS and is selected at the method's conf (the top-1 always is).
    """

    box: tuple[float, float, float, float]
    category: str
    cls_idx: int
    det_score: float
    ref_score: Optional[float]
    ctx_score: float
    fused_score: float
    kept: bool
    clip_score: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def workdir_config(workdir: Path, model: str = "sepnms") -> Config:
    """The config of a work directory: ``<workdir>/config.yaml`` when there is one (the demo's
    output folder has one), else the config recorded in ``models/<model>/best.pt``."""
    workdir = Path(workdir)
    if (workdir / "config.yaml").is_file():
        return load_config(workdir / "config.yaml")
    from sepnms.engine.checkpoint import load_checkpoint

    ckpt_path = workdir / "models" / model / "best.pt"
    if not ckpt_path.is_file():
        raise InputError(workdir, f"neither config.yaml nor models/{model}/best.pt here: not a trained work directory")
    data = load_checkpoint(ckpt_path).get("config")
    if not isinstance(data, dict):
        raise InputError(ckpt_path, "the checkpoint records no config; use Predictor.from_config")
    try:
        return Config.model_validate({**data, "workdir": str(workdir.resolve())})
    except Exception as exc:  # pydantic ValidationError: an old or foreign config
        raise InputError(ckpt_path, f"the recorded config is not valid here: {' '.join(str(exc).split())[:300]}") from None


class Predictor:
    """Proposals of a trained model for (image, expression) pairs.

    Build with :meth:`from_workdir` or :meth:`from_config`; it loads the config, the vocabulary
    and GloVe rows, the trained model (``best.pt``), the sentence encoder (Sep-NMS) and, when
    ``clip.score_proposals`` is on, CLIP-dagger.
    """

    def __init__(self, cfg: Config, model: str = "sepnms", rule: Optional[str] = None):
        from sepnms.distributed import resolve_device
        from sepnms.data.head_features import HeadCache
        from sepnms.data.workspace import Workspace
        from sepnms.engine.propose import load_trained

        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
        model_type, ctx_source = MODELS[model]
        cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)}, deep=True)
        cfg.train.ctx_source = ctx_source
        self.cfg, self.name, self.model_type = cfg, model, model_type
        self.rule = rule or ("refnms" if model_type == "refnms" else cfg.fusion.rule)
        self.ws = Workspace.open(cfg, need_text=False)
        self.model = load_trained(cfg, self.ws, model_type)
        self.heads = HeadCache.for_config(cfg, self.ws.refdb, size=4)
        self.encoder = None
        if model_type == "sepnms":
            from sepnms.engine.encode_text import encoder_dir
            from sepnms.text.sentence_encoder import load_encoder

            self.encoder = load_encoder(encoder_dir(cfg), cfg.device)
        self.dagger = None
        if self.rule == "sep+clip" or cfg.clip.score_proposals:
            from sepnms.clip.model import load_dagger

            self.dagger = load_dagger(cfg, device=cfg.device)
        from sepnms.engine.fuse import STANDARD_METHODS
        from sepnms.evaluation.outcomes import category_names, method_conf

        # the conf evaluate chose for the standard method of this model and rule, if it has run
        method = next((m.name for m in STANDARD_METHODS if (m.model, m.rule) == (model, self.rule)), None)
        self.conf = method_conf(cfg, method) if method else None
        self.categories = category_names(cfg)
        self._det = None  # the detector, loaded for the first image file

    @classmethod
    def from_config(cls, cfg: Config | str | Path, model: str = "sepnms", rule: Optional[str] = None,
                    overrides: Optional[list[str]] = None) -> "Predictor":
        """From a Config, a config YAML path or a preset name (plus ``--set``-style overrides)."""
        if not isinstance(cfg, Config):
            cfg = load_config(cfg, overrides)
        return cls(cfg, model, rule)

    @classmethod
    def from_workdir(cls, workdir: str | Path, model: str = "sepnms", rule: Optional[str] = None) -> "Predictor":
        """From a work directory (or the demo's output folder): see :func:`workdir_config`."""
        return cls(workdir_config(Path(workdir), model), model, rule)

    # -----------------------------------------------------------------------------------
    def image_id(self, image: int | str | Path) -> Optional[int]:
        """The dataset image id ``image`` names, or None for an image file; an InputError for an
        unknown id or a path that is no file."""
        text = str(image).strip()
        refdb_path = Path(self.cfg.workdir) / "prepare" / "refdb.json"
        if isinstance(image, (int, np.integer)) or re.fullmatch(r"\d+", text):
            iid = int(text)
            if iid not in self.ws.refdb.images:
                some = ", ".join(map(str, sorted(self.ws.refdb.images)[:5]))
                raise InputError(refdb_path, f"image id {iid} is not in the dataset "
                                             f"({len(self.ws.refdb.images)} images; e.g. {some})")
            return iid
        if Path(text).is_file():
            return None
        raise InputError(text, "neither an image id of the dataset nor an existing image file")

    def _inputs(self, image: int | str | Path):
        """(candidates, head [1, C, Hf, Wf], scale, width, height) of a dataset image (the prepared
        pool and C4 map) or of an image file (the detector: MAttNet's candidate pool rule at test
        time, ``prepare.min_candidates_test``, and its C4 map)."""
        iid = self.image_id(image)
        if iid is not None:
            head, scale = self.heads.get(iid)
            w, h = self.ws.refdb.image_size(iid)
            return self.ws.candidates.get(iid), head, scale, w, h
        from sepnms.data.candidates import initial_filter
        from sepnms.detection.preprocess import preprocess
        from sepnms.data.head_features import read_detector_image

        path = Path(str(image).strip())
        model, dc, p = self._detector(), self.cfg.detector, self.cfg.prepare  # first: says what is missing
        bgr = read_detector_image(self.cfg, path)
        h, w = bgr.shape[:2]
        blob, info = preprocess(bgr, dc.pixel_means, dc.test_scale, dc.test_max_size, device=self.cfg.device)
        dets, c4 = model.detect(blob, info[None], [(h, w)])
        cand = initial_filter(dets[0].boxes.float().cpu().numpy(), dets[0].scores.float().cpu().numpy(),
                              p.class_prob_threshold, p.threshold_step, p.min_candidates_test, -1, path)
        return cand, c4.float().cpu(), float(info[2]), w, h

    def _detector(self):
        if self._det is None:
            from sepnms.detection.checkpoint import load_detector
            from sepnms.data.head_features import check_channels, detector_checkpoint

            ckpt = detector_checkpoint(self.cfg)
            if not ckpt.is_file():
                raise InputError(ckpt, "detector checkpoint not found (paths.detector_checkpoint); an image file "
                                       "needs the detector")
            check_channels(self.cfg)
            self._det = load_detector(ckpt, self.cfg.detector, self.cfg.device)
        return self._det

    def image(self, image: int | str | Path) -> np.ndarray:
        """[H, W, 3] uint8 RGB pixels of a dataset image or an image file."""
        from sepnms.data.images import load_image
        from sepnms.io.images import read_image

        iid = self.image_id(image)
        if iid is not None:
            return load_image(self.cfg, self.ws.refdb, iid)
        return read_image(str(image).strip(), max_pixels=self.cfg.images.max_pixels)

    @torch.no_grad()
    def score(self, image: int | str | Path, expression: str):
        """The scored candidate pool: an ``ExpressionCandidates`` (sent_id -1) with the columns of
        the proposal tables (``ref_score``, ``ctx_score``, optionally ``clip_score``)."""
        from sepnms.engine.propose import add_clip_scores, pack_scores, relatedness_scores, roi_inputs

        if not isinstance(expression, str) or not expression.strip():
            raise SepNMSError("the expression is empty")
        cfg, dev = self.cfg, self.cfg.device
        cand, head, scale, w, h = self._inputs(image)
        iid = cand.image_id
        feats, loc = roi_inputs(self.model, head, scale, cand.box, float(w), float(h), dev)
        expr = {"sent_id": -1, "ref_id": -1, "image_id": iid, "sent": expression, "tokens": tokenize(expression)}
        text = None
        if self.encoder is not None:
            from sepnms.text.sentence_encoder import encode_sentences

            tok, enc = self.encoder
            text = encode_sentences(tok, enc, [expression], cfg.text.max_length, cfg.text.pooling, 1, dev)
        ref, ctx = relatedness_scores(self.model, feats, loc, [self.ws.word_ids(expr["tokens"], None)], text, dev)
        scored = pack_scores([expr], cand, ref, ctx)
        if self.dagger is not None:
            if self.image_id(image) is None:
                raise SepNMSError("CLIP-dagger scoring (clip.score_proposals / rule sep+clip) of an image file is "
                                  "not supported; use a dataset image id or another rule")
            add_clip_scores(cfg, self.dagger, self.ws, iid, cand, [expr], scored)
        return scored[0]

    def predict(self, image: int | str | Path, expression: str) -> list[Proposal]:
        """Every candidate of ``image`` scored for ``expression``, by descending fused score;
        ``kept`` marks the proposals the method keeps (class-wise NMS, then the conf of
        ``evaluate`` when it has run, else every NMS survivor)."""
        from sepnms.models.fusion import classwise_nms, clip_input, fuse_scores
        from sepnms.evaluation.metrics import select_by_conf

        ec = self.score(image, expression)
        f = self.cfg.fusion
        fused = fuse_scores(self.rule, ec.det_score, ref=ec.scores.get("ref_score"), ctx=ec.scores.get("ctx_score"),
                            clip=clip_input(ec, f), k=f.k, ref_cut=f.ref_cut)
        nms_kept = classwise_nms(ec.box, fused, ec.cls_idx, f.nms_iou)
        conf = -np.inf if self.conf is None else self.conf
        kept = set(nms_kept[select_by_conf(fused[nms_kept], conf)].tolist())
        order = np.argsort(-fused.astype(np.float64), kind="stable")

        def opt(col: str, i: int) -> Optional[float]:
            return float(ec.scores[col][i]) if col in ec.scores else None

        return [Proposal(tuple(float(v) for v in ec.box[i]), self.categories.get(int(ec.cls_idx[i]), str(ec.cls_idx[i])),
                         int(ec.cls_idx[i]), float(ec.det_score[i]), opt("ref_score", i), float(ec.scores["ctx_score"][i]),
                         float(fused[i]), int(i) in kept, opt("clip_score", i))
                for i in order]

    def figure(self, image: int | str | Path, expression: str, out: Path,
               proposals: Optional[list[Proposal]] = None) -> Path:
        """Draw the kept proposals of ``expression`` on ``image`` (one panel, as ``sepnms show``)."""
        from sepnms.evaluation.figures import Panel, draw_expression

        props = [p for p in (proposals if proposals is not None else self.predict(image, expression)) if p.kept]
        panel = Panel(self.name, np.asarray([p.box for p in props], np.float64).reshape(-1, 4),
                      [p.category for p in props], np.asarray([p.fused_score for p in props]))
        sc = self.cfg.show
        return draw_expression(self.image(image), expression, None,
                               np.zeros((0, 4)), [panel], out, panel_px=sc.panel_px, dpi=sc.dpi,
                               max_labels=sc.max_labels)
