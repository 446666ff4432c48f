"""``sepnms ground train`` and ``sepnms ground eval``: the second stage (MAttNet) end to end.

``train``: MAttNet's recipe on the annotated objects of ``grounding.train_split`` (Adam, hinge
ranking with one visual and one language negative per sentence, value clipping of gradients,
``lr x decay ** ((it - start) / every)`` after ``start``); every ``eval_every`` iterations the
ground-truth-box accuracy on ``grounding.val_split`` is measured and the best weights kept as
``<workdir>/models/mattnet/best.pt`` (with ``grounding.early_stop_patience`` P, the run stops after P
validations in a row without a higher accuracy; ``max_iters`` bounds it); ``last.pt`` (every
``checkpoint_every``) resumes to the same result.  Seeded, TensorBoard, DistributedDataParallel under torchrun (each rank takes its own
images; the effective batch is ``WORLD_SIZE x batch_images``).

``eval``: for every sentence, score a candidate set with the trained MAttNet and pick the best
box; accuracy as MAttNet counts it, with a bootstrap interval: on ground-truth boxes the chosen
object is the referent (``eval_easy_utils``: ``pred_ann_id == ref ann_id``;
``grounding.gt_accuracy``), on other candidates IoU >= 0.5 with the referent's box (inclusive
pixels, ``eval_dets_utils``), a detection of the detector entering as MAttNet's ``dets.json`` holds
it (``w = x2 - x1 + 1``) and a file's box as the file holds it.
Candidate sets (methods): ``gt`` (the image's annotated objects), ``mattnet_dets`` (the detector's
per-image detections under MAttNet's rule), every fused first-stage table in ``<workdir>/fused``
(kept proposals at the conf ``evaluate`` chooses) and any detection file (``--dets``).
"""
from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from tqdm import tqdm

from sepnms.config import Config
from sepnms.engine.budget import AT_MATTNET_DETS, MATTNET_DETS, Budgets, has_mattnet_dets, split_method
from sepnms.distributed import rank_world, resolve_device
from sepnms.engine.checkpoint import load_weights
from sepnms.engine.ground_data import (AttributeVocab, BatchSampler, GroundingData, VisualFeatures, concat_tables,
                                       object_table, pad_labels)
from sepnms.errors import InputError
from sepnms.evaluation.downstream import compute_iou_inclusive
from sepnms.evaluation.stats import bootstrap_ci
from sepnms.grounding.features import object_geometry, xyxy_to_xywh
from sepnms.grounding.loss import attribute_loss, ranking_loss
from sepnms.grounding.mattnet import MAttNet, ObjectTable, build_mattnet
from sepnms.grounding.vocab import GroundingVocab, max_length_for
from sepnms.io.atomic import atomic_write_json
from sepnms.io.checkpoints import check_finite_state, torch_load_weights
from sepnms.io.schemas import (check_dets_cover, check_dets_names, grounding_checkpoint_schema, load_metrics,
                               merge_rows, validate)
from sepnms.training.loop import LoopSettings, Trainer, TrainingLoop, distributed_module, training_run
from sepnms.version import __version__
from sepnms.workdir import model_dir, safe_name

log = logging.getLogger(__name__)

CKPT_FORMAT = "sepnms-grounding-checkpoint"
MODEL_NAME = "mattnet"


def ground_dir(cfg: Config) -> Path:
    return Path(cfg.workdir) / "ground"


def learning_rate(g, it: int) -> float:
    """MAttNet's schedule: ``lr`` until ``lr_decay_start``, then ``lr * lr_decay ** ((it - start) / every)``."""
    if g.lr_decay_start > 0 and it > g.lr_decay_start:
        return g.lr * g.lr_decay ** ((it - g.lr_decay_start) / g.lr_decay_every)
    return g.lr


class _Flat(torch.nn.Module):
    """MAttNet with flat tensor arguments (what DistributedDataParallel wraps)."""

    def __init__(self, net: MAttNet):
        super().__init__()
        self.net = net

    def forward(self, pool5, fc7, lfeats, dif_lfeats, cxt_fc7, cxt_lfeats, cxt_mask, labels, obj_idx, sent_idx):
        out = self.net(ObjectTable(pool5, fc7, lfeats, dif_lfeats, cxt_fc7, cxt_lfeats, cxt_mask), labels, obj_idx,
                       sent_idx)
        return out.scores, out.att_scores


def _flat_args(objects: ObjectTable, labels, obj_idx, sent_idx, device: str) -> tuple:
    o = objects.to(device)
    return (o.pool5, o.fc7, o.lfeats, o.dif_lfeats, o.cxt_fc7, o.cxt_lfeats, o.cxt_mask, labels.to(device),
            obj_idx.to(device), sent_idx.to(device))


# ---------------------------------------------------------------------------------------
# checkpoints


def _meta(cfg: Config, vocab: GroundingVocab, att_words: list[str]) -> dict[str, Any]:
    return {"format": CKPT_FORMAT, "version": 1, "sepnms_version": __version__, "preset": cfg.preset,
            "grounding_config": cfg.grounding.model_dump(mode="json"),
            "pool5_dim": cfg.model.feat_channels, "fc7_dim": cfg.model.head_out_channels,
            "vocab": list(vocab.words), "att_words": list(att_words), "dataset": cfg.dataset}


_ARCH_KEYS = ("word_embedding_size", "word_vec_size", "rnn_hidden_size", "jemb_dim", "num_cxt", "num_atts")


def load_grounding_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """A MAttNet checkpoint of ours (weights only), checked against the config's sizes."""
    ckpt = torch_load_weights(path, "MAttNet checkpoint (run `sepnms ground train` first)")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise InputError(path, "not a sepnms MAttNet checkpoint")
    validate(grounding_checkpoint_schema(), ckpt, path, "MAttNet checkpoint")
    g = ckpt["grounding_config"]
    diff = [k for k in _ARCH_KEYS if g.get(k) != getattr(cfg.grounding, k)]
    if (ckpt["pool5_dim"], ckpt["fc7_dim"]) != (cfg.model.feat_channels, cfg.model.head_out_channels):
        diff.append("model.feat_channels/head_out_channels")
    if diff:
        raise InputError(path, f"checkpoint was trained with other sizes (differs in {diff}); use the config it was "
                               "trained with")
    return ckpt


def load_trained(cfg: Config, which: str = "best") -> tuple[MAttNet, GroundingVocab]:
    path = Path(which) if which not in ("best", "last") else model_dir(cfg, MODEL_NAME) / f"{which}.pt"
    ckpt = load_grounding_checkpoint(path, cfg)
    vocab = GroundingVocab.from_json({"words": ckpt["vocab"]}, path)
    net = build_mattnet(cfg.grounding, cfg.model, len(vocab))
    load_weights(net, ckpt, path)
    return net.eval(), vocab


# ---------------------------------------------------------------------------------------
# candidate sets and scoring


@dataclass
class CandidateSet:
    """The candidates one sentence is scored against: boxes [M, 4] xyxy, categories [M].

    ``ann_ids`` [M]: the annotated objects' ids when the candidates are the image's ground-truth
    boxes (then accuracy can be MAttNet's index rule); ``plus_one``: the boxes are detector
    detections whose ``[x, y, w, h]`` has ``w = x2 - x1 + 1`` (MAttNet's ``dets.json``), else
    ``w = x2 - x1`` (annotations: x2 = x + w; Ref-NMS-style files)."""

    image_id: int
    boxes: np.ndarray
    categories: np.ndarray
    ann_ids: Optional[list[int]] = None
    plus_one: bool = False

    def xywh(self, k: int) -> list[float]:
        """Candidate ``k`` as ``[x, y, w, h]``, the box the evaluation IoU reads."""
        x1, y1, x2, y2 = (float(v) for v in self.boxes[k])
        extra = 1.0 if self.plus_one else 0.0
        return [x1, y1, x2 - x1 + extra, y2 - y1 + extra]


@torch.no_grad()
def predict(net: MAttNet, vocab: GroundingVocab, feats: VisualFeatures, data: GroundingData,
            sets: dict[int, CandidateSet], cfg: Config, progress: bool = False, images_per_forward: int = 8,
            desc: str = "ground") -> dict[int, Optional[int]]:
    """``{sent_id: index of the chosen candidate (None for an empty candidate set)}`` for every
    sentence of ``sets``.

    Per image: the union of its sentences' boxes is pooled once (one read of the head map); each
    distinct candidate set gets its own geometry (neighbours and contexts are within the set)."""
    g, device = cfg.grounding, cfg.device
    net.eval().to(device)
    max_len = max_length_for(cfg.dataset, g.max_length)
    by_image: dict[int, list[int]] = {}
    for sid, s in sets.items():
        by_image.setdefault(int(s.image_id), []).append(sid)
    out: dict[int, Optional[int]] = {sid: None for sid, s in sets.items() if len(s.boxes) == 0}
    images = sorted(by_image)
    chunks = [images[i:i + images_per_forward] for i in range(0, len(images), images_per_forward)]
    for chunk in tqdm(chunks, desc=desc, disable=not progress):
        tables, rows_obj, rows_sent, owners, labels = [], [], [], [], []
        base = 0
        for iid in chunk:
            sids = [s for s in by_image[iid] if len(sets[s].boxes)]
            if not sids:
                continue
            img = data.images.get(iid)
            if img is None:
                raise InputError(None, f"image_id {iid} of a candidate set is not in the refer annotations")
            all_boxes = np.concatenate([sets[s].boxes for s in sids]).astype(np.float32)
            uniq, inverse = np.unique(all_boxes, axis=0, return_inverse=True)
            pool5, fc7 = feats.grids(iid, uniq)
            distinct: dict[tuple, int] = {}
            start = 0
            for s in sids:
                cs = sets[s]
                m = len(cs.boxes)
                inv = torch.as_tensor(inverse.reshape(-1)[start:start + m], dtype=torch.long, device=pool5.device)
                start += m
                key = (cs.boxes.astype(np.float32).tobytes(), np.asarray(cs.categories).tobytes())
                if key not in distinct:
                    geom = object_geometry(xyxy_to_xywh(cs.boxes), cs.categories, img.width, img.height, g.num_cxt)
                    tables.append(object_table(pool5[inv], fc7[inv], geom))
                    distinct[key] = base
                    base += m
                first = distinct[key]
                labels.append(vocab.encode(data.sentences.get(s, []), max_len))
                rows_obj += list(range(first, first + m))
                rows_sent += [len(labels) - 1] * m
                owners.append((s, first, m))
        if not tables:
            continue
        objects = concat_tables(tables)
        scores, _ = _Flat(net)(*_flat_args(objects, pad_labels(labels), torch.as_tensor(rows_obj),
                                           torch.as_tensor(rows_sent), device))
        scores = scores.cpu().numpy()
        pos = 0
        for s, first, m in owners:
            out[s] = int(np.argmax(scores[pos:pos + m]))
            pos += m
    return out


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


def gt_sets(data: GroundingData, split: str) -> dict[int, CandidateSet]:
    out = {}
    for rid in data.ref_ids(split):
        img = data.images[data.refs[rid]["image_id"]]
        cs = CandidateSet(img.image_id, img.boxes, img.categories, ann_ids=list(img.ann_ids))
        for s in data.refs[rid]["sent_ids"]:
            out[s] = cs
    return out


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
    detections; :mod:`sepnms.engine.budget`)."""
    from sepnms.engine.evaluate import fused_path
    from sepnms.evaluation.metrics import SCORE_COLUMN, select_by_conf
    from sepnms.io.proposals import read_proposals

    base, _ = split_method(method)
    table = read_proposals(fused_path(budgets.cfg, safe_name(base, "method name"), split))
    conf = budgets.selection_conf(table, method, split)
    out = {}
    for e in table:
        keep = select_by_conf(e.scores[SCORE_COLUMN], conf)
        out[e.sent_id] = CandidateSet(e.image_id, np.asarray(e.box[keep], np.float32).reshape(-1, 4),
                                      np.asarray(e.cls_idx[keep], np.int64))
    return out


def file_sets(path: Path, data: GroundingData, split: str) -> dict[int, CandidateSet]:
    """A MAttNet-style detection file: per sentence when its entries carry ``sent_id``, else per image."""
    from sepnms.io.mattnet_dets import MATTNET, detect_convention, read_dets

    dets = read_dets(path)
    per_sent: dict[int, list[dict]] = {}
    per_image: dict[int, list[dict]] = {}
    for i, d in enumerate(dets):
        if "image_id" not in d:
            raise InputError(path, f"entry {i} has no image_id")
        if "sent_id" in d:
            per_sent.setdefault(int(d["sent_id"]), []).append(d)
        else:
            per_image.setdefault(int(d["image_id"]), []).append(d)
    if per_sent and per_image:
        raise InputError(path, "some entries carry a sent_id and others do not (mixed per-sentence / per-image file)")
    check_dets_cover(path, per_sent, per_image, {s for ref in data.refs.values() for s in ref["sent_ids"]},
                     {int(ref["image_id"]) for ref in data.refs.values()})

    inclusive = detect_convention(dets) == MATTNET  # MAttNet's own file: x2 = x + w - 1, so w = x2 - x1 + 1

    def cset(iid: int, entries: list[dict]) -> CandidateSet:
        return CandidateSet(iid, np.array([d["box_xyxy"] for d in entries], np.float32).reshape(-1, 4),
                            np.array([int(d.get("category_id", 0)) for d in entries], np.int64), plus_one=inclusive)

    out = {}
    for rid in data.ref_ids(split):
        ref = data.refs[rid]
        for s in ref["sent_ids"]:
            if per_sent:
                entries = per_sent.get(s, [])
            else:
                entries = per_image.get(ref["image_id"], [])
            out[s] = cset(ref["image_id"], entries)
    return out


# ---------------------------------------------------------------------------------------
# training


class MAttNetTrainer(Trainer):
    """MAttNet's recipe (hinge ranking + attribute loss, value clipping, MAttNet's lr schedule, gt-box
    accuracy on the validation split): what is the second stage's own in the one loop."""

    def __init__(self, cfg: Config, net: MAttNet, vocab: GroundingVocab, att_vocab: Optional[AttributeVocab],
                 feats: VisualFeatures, data: GroundingData, val_sets: dict[int, "CandidateSet"], device: str):
        g = cfg.grounding
        self.cfg, self.g, self.net, self.vocab, self.att_vocab = cfg, g, net, vocab, att_vocab
        self.feats, self.data, self.val_sets, self.device = feats, data, val_sets, device
        self.optimizer = torch.optim.Adam(net.parameters(), lr=g.lr, betas=tuple(g.betas), eps=g.eps)
        self.meta = _meta(cfg, vocab, att_vocab.words if att_vocab else [])
        self.class_weights = torch.from_numpy(att_vocab.weights).to(device) if att_vocab else None
        self.step_module: torch.nn.Module = _Flat(net)
        self.sentences = 0

    def payload(self) -> dict[str, Any]:
        return {**self.meta, "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def read_last(self, path: Path) -> dict[str, Any]:
        ckpt = load_grounding_checkpoint(path, self.cfg)
        if ckpt["vocab"] != self.vocab.words:
            raise InputError(path, "this run was started on other training sentences (its vocabulary differs); "
                                   "start again with --no-resume")
        return ckpt

    def restore(self, ckpt: dict[str, Any], path: Path) -> None:
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])

    def loss(self, batch, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        g = self.g
        lr = learning_rate(g, state["iter"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        scores, att_scores = self.step_module(*_flat_args(batch.objects, batch.labels, batch.obj_idx, batch.sent_idx,
                                                          self.device))
        loss = ranking_loss(scores, g.margin, g.visual_rank_weight, g.lang_rank_weight)
        if self.att_vocab is not None:
            loss = loss + g.att_weight * attribute_loss(att_scores, batch.att_labels.to(self.device),
                                                        batch.att_select.to(self.device), self.class_weights)
        self.sentences += len(batch.pos_sent_ids)
        return loss, {"lr": lr}

    def before_optimizer_step(self) -> None:
        for p in self.net.parameters():
            if p.grad is not None:
                p.grad.clamp_(-self.g.grad_clip, self.g.grad_clip)

    def validate(self, state: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """Ground-truth-box accuracy on the validation sentences."""
        chosen = predict(self.net, self.vocab, self.feats, self.data, self.val_sets, self.cfg)
        acc = float(np.mean(sentence_hits(self.data, list(self.val_sets), self.val_sets, chosen, self.g.gt_accuracy)))
        self.net.train()
        return acc, {"lr": self.optimizer.param_groups[0]["lr"]}

    def check_state(self, state: dict[str, Any]) -> None:
        check_finite_state(self.net.state_dict(), model_dir(self.cfg, MODEL_NAME),
                           f"ground train diverged at iteration {state['iter']} (grounding.lr={self.g.lr} too high?)")


def train_grounding(cfg: Config, resume: bool = True, progress: bool = True,
                    stop_after_steps: Optional[int] = None) -> dict[str, Any]:
    """Train MAttNet; returns a summary.  ``stop_after_steps`` stops early as an interruption would
    (saving ``last.pt``)."""
    with training_run(cfg.device, model_dir(cfg, MODEL_NAME), "sepnms ground train"):
        return _train(cfg, resume, progress, stop_after_steps)


def _train(cfg: Config, resume: bool, progress: bool, stop_after_steps: Optional[int]) -> dict[str, Any]:
    g = cfg.grounding
    device = resolve_device(cfg.device)
    cfg = cfg.model_copy(update={"device": device})
    rank, world = rank_world()
    out = model_dir(cfg, MODEL_NAME)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    data = GroundingData.open(cfg)
    vocab = data.build_vocab(g.vocab_min_count)
    att_vocab = AttributeVocab(data, g.train_split, g.num_atts) if g.att_weight > 0 else None
    if att_vocab is not None and not att_vocab:
        log.info("no attribute labels (data.json att_wds): MAttNet trains without the attribute loss")
        att_vocab = None
    feats = VisualFeatures(cfg, data)
    net = build_mattnet(g, cfg.model, len(vocab)).to(device)
    val_sets = gt_sets(data, g.val_split)
    if g.val_max_sentences is not None:
        val_sets = {s: val_sets[s] for s in sorted(val_sets)[:g.val_max_sentences]}
    trainer = MAttNetTrainer(cfg, net, vocab, att_vocab, feats, data, val_sets, device)
    loop = TrainingLoop(trainer, LoopSettings(
        name="ground train", folder=out, total=g.max_iters, checkpoint_every=g.checkpoint_every,
        eval_every=g.eval_every, patience=g.early_stop_patience, higher_is_better=True, metric="val_accuracy",
        counter="iter", unit="iteration", progress=progress), device)
    state = loop.resume(resume)

    trainer.step_module = distributed_module(trainer.step_module, device, cfg.seed, state["iter"],
                                             find_unused_parameters=True)
    sampler = BatchSampler(cfg, data, vocab, feats, att_vocab, rank, world)
    if not val_sets:
        raise InputError(cfg.refs_path(), f"no sentence in validation split {g.val_split!r}")

    net.train()
    batches = (sampler.batch(it) for it in itertools.count(state["iter"]))
    if loop.run(batches, stop_after_steps):
        return {"interrupted": True, "iter": state["iter"]}
    summary = {"model": MODEL_NAME, "iterations": state["iter"], "max_iters": g.max_iters,
               "best_val_accuracy": state["best_val"], "best_iter": state["best_iter"],
               "stopped_early": loop.stop_early(), "early_stop_patience": g.early_stop_patience,
               "history": state["history"], "vocab_size": len(vocab), "attribute_loss": att_vocab is not None,
               "data_time_s": loop.data_time, "compute_time_s": loop.compute_time,
               "train_sentences_this_call": trainer.sentences, "head_reads": feats.head_reads}
    if rank == 0:
        atomic_write_json(out / "train_summary.json", summary, indent=2)
    return summary


# ---------------------------------------------------------------------------------------
# evaluation


def default_methods(cfg: Config) -> list[str]:
    """``gt``, ``mattnet_dets`` (when the detector's output is configured), every fused table ``M``
    and, with ``mattnet_dets`` and ``evaluate.mattnet_dets``, ``M@mattnet_dets``."""
    names = ["gt"]
    dets = has_mattnet_dets(cfg)
    if dets:
        names.append(MATTNET_DETS)
    fused = Path(cfg.workdir) / "fused"
    if fused.is_dir():
        fused_names = sorted(p.name for p in fused.iterdir() if p.is_dir())
        names += fused_names
        if dets and cfg.evaluate.mattnet_dets:
            names += [n + AT_MATTNET_DETS for n in fused_names]
    return names


def candidate_sets(budgets: Budgets, data: GroundingData, method: str, split: str,
                   dets_files: Optional[dict[str, Path]] = None) -> dict[int, CandidateSet]:
    if dets_files and method in dets_files:
        return file_sets(dets_files[method], data, split)
    if method == "gt":
        return gt_sets(data, split)
    if method == MATTNET_DETS:
        return mattnet_det_sets(budgets, data, split)
    return fused_sets(budgets, method, split)


def evaluate_grounding(cfg: Config, methods: Optional[list[str]] = None, splits: Optional[list[str]] = None,
                       dets: Optional[Iterable[str | Path]] = None, checkpoint: str = "best",
                       progress: bool = True) -> dict[str, dict[str, dict[str, Any]]]:
    """Second-stage accuracy per method and split.

    Writes ``<workdir>/ground/metrics.json``, ``<workdir>/ground/hits.json`` (``{method: {split:
    {sent_id: 0 or 1}}}``, for paired comparisons), one predictions file per (method, split) under
    ``<workdir>/ground/predictions/`` (``[{sent_id, box: [x, y, w, h]}]``, readable by
    ``sepnms downstream``), and merges ``downstream_accuracy`` / ``_ci`` / ``_n`` into the split
    entries of ``<workdir>/eval/metrics.json``.
    """
    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)})
    dets_files = {}
    for f in dets or []:
        p = Path(f)
        dets_files[safe_name(p.stem, "detection file name")] = p
    check_dets_names([Path(f) for f in dets or []], set(default_methods(cfg)) | set(methods or []) | {"gt", "mattnet_dets"})
    for p in dets_files.values():  # every file's schema before any work
        from sepnms.io.mattnet_dets import read_dets

        read_dets(p)
    names = list(methods or default_methods(cfg)) + [n for n in dets_files if n not in (methods or [])]
    splits = list(splits or cfg.evaluate.splits)
    net, vocab = load_trained(cfg, checkpoint)
    budgets = Budgets(cfg)
    data = GroundingData.open(cfg)
    feats = VisualFeatures(cfg, data, size=0)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    hits: dict[str, dict[str, dict[str, float]]] = {}
    pred_dir = ground_dir(cfg) / "predictions"
    for name in names:
        for split in splits:
            sets = candidate_sets(budgets, data, name, split, dets_files)
            chosen = predict(net, vocab, feats, data, sets, cfg, progress, desc=f"ground {name} {split}")
            m = accuracy_of(data, split, sets, chosen, cfg.grounding.gt_accuracy)
            hits.setdefault(name, {})[split] = dict(zip((str(s) for s in data.sent_ids(split)), m.pop("hits")))
            m["candidates_per_sentence"] = float(np.mean([len(s.boxes) for s in sets.values()])) if sets else 0.0
            results.setdefault(name, {})[split] = m
            atomic_write_json(pred_dir / f"{name}_{split}.json",
                              [{"sent_id": int(s), "box": sets[s].xywh(k)} for s, k in sorted(chosen.items()) if k is not None])
    earlier = load_metrics(ground_dir(cfg) / "metrics.json", "ground eval metrics", missing_ok=True)
    earlier_hits = load_metrics(ground_dir(cfg) / "hits.json", "ground eval hits", missing_ok=True)
    eval_metrics = load_metrics(Path(cfg.workdir) / "eval" / "metrics.json", "sepnms metrics", missing_ok=True)
    atomic_write_json(ground_dir(cfg) / "metrics.json", merge_rows(earlier, results), indent=2)
    atomic_write_json(ground_dir(cfg) / "hits.json", merge_rows(earlier_hits, hits))
    merge_into_metrics(Path(cfg.workdir) / "eval" / "metrics.json", results, eval_metrics)
    return results


def merge_into_metrics(path: Path, results: dict[str, dict[str, dict[str, Any]]],
                       metrics: Optional[dict[str, Any]] = None) -> None:
    """Add the downstream fields to each (method, split) entry of a metrics.json (created if absent;
    ``metrics``: its content, already read and checked)."""
    if metrics is None:
        metrics = load_metrics(path, "sepnms metrics", missing_ok=True)
    for name, per_split in results.items():
        for split, m in per_split.items():
            entry = metrics.setdefault(name, {}).setdefault(split, {})
            entry.update({k: m[k] for k in ("downstream_accuracy", "downstream_accuracy_ci", "downstream_n")})
    atomic_write_json(path, metrics, indent=2)



def load_hits(cfg: Config) -> dict[str, dict[str, dict[int, float]]]:
    path = ground_dir(cfg) / "hits.json"
    if not path.is_file():
        raise InputError(path, "not found: run `sepnms ground eval` first")
    raw = json.loads(path.read_text())
    return {m: {s: {int(k): float(v) for k, v in h.items()} for s, h in per.items()} for m, per in raw.items()}


#: the demo's comparisons of the two-stage table (Sep-NMS proposals against the detector's and Ref-NMS's)
DEMO_PAIRS = (("sepnms", "det"), ("sepnms", "refnms"), ("sepnms", "mattnet_dets"),
              ("sepnms@mattnet_dets", "mattnet_dets"), ("sepnms_clipctx_clipfuse", "sepnms"))


def demo_second_stage(cfg: Config, public: dict[str, Any], progress: bool = True) -> tuple[str, dict[str, Any]]:
    """The demo's second stage: train MAttNet once, score gt boxes, MAttNet's detections and each of
    ``public``'s first stages; add ``downstream_accuracy`` (+ ``_ci``, ``_n``) to ``public``'s split
    entries (and rows ``gt``, ``mattnet_dets``); return the report section and the training summary."""
    from sepnms.evaluation.ground_report import ground_section

    summary = train_grounding(cfg, resume=False, progress=progress)
    methods = ["gt", MATTNET_DETS] + [m for m in public if m not in ("gt", MATTNET_DETS)]
    results = evaluate_grounding(cfg, methods, progress=progress)
    for name, per_split in results.items():
        for split, m in per_split.items():
            public.setdefault(name, {}).setdefault(split, {}).update(
                {k: m[k] for k in ("downstream_accuracy", "downstream_accuracy_ci", "downstream_n")})
    return ground_section(results, load_hits(cfg), cfg.evaluate.splits, DEMO_PAIRS, summary), summary
