"""``sepnms ground train``: the second stage (MAttNet) trained end to end, and its checkpoints.

``train``: MAttNet's recipe on the annotated objects of ``grounding.train_split`` (Adam, hinge
ranking with one visual and one language negative per sentence, value clipping of gradients,
``lr x decay ** ((it - start) / every)`` after ``start``); every ``eval_every`` iterations the
ground-truth-box accuracy on ``grounding.val_split`` is measured and the best weights kept as
``<workdir>/models/mattnet/best.pt`` (with ``grounding.early_stop_patience`` P, the run stops after P
validations in a row without a higher accuracy; ``max_iters`` bounds it); ``last.pt`` (every
``checkpoint_every``) resumes to the same result.  Seeded, TensorBoard, DistributedDataParallel under torchrun (each rank takes its own
images; the effective batch is ``WORLD_SIZE x batch_images``).

``sepnms ground eval`` is :mod:`sepnms.engine.ground.evaluate`.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from sepnms.config import Config
from sepnms.distributed import rank_world, resolve_device
from sepnms.engine.checkpoint import load_weights
from sepnms.errors import InputError
from sepnms.evaluation.ground_accuracy import sentence_hits
from sepnms.grounding.candidates import CandidateSet, gt_sets, predict
from sepnms.grounding.data import AttributeVocab, BatchSampler, GroundingData, VisualFeatures
from sepnms.grounding.loss import attribute_loss, ranking_loss
from sepnms.grounding.mattnet import MAttNet, ObjectTable, build_mattnet
from sepnms.grounding.vocab import GroundingVocab
from sepnms.io.atomic import atomic_write_json
from sepnms.io.checkpoints import check_finite_state, torch_load_weights
from sepnms.io.schemas import grounding_checkpoint_schema, validate
from sepnms.training.loop import LoopSettings, Trainer, TrainingLoop, distributed_module, training_run
from sepnms.version import __version__
from sepnms.workdir import model_dir

log = logging.getLogger(__name__)

CKPT_FORMAT = "sepnms-grounding-checkpoint"
MODEL_NAME = "mattnet"



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
               "stopped_early": loop.stopped_early(), "early_stop_patience": g.early_stop_patience,
               "history": state["history"], "vocab_size": len(vocab), "attribute_loss": att_vocab is not None,
               "data_time_s": loop.data_time, "compute_time_s": loop.compute_time,
               "train_sentences_this_call": trainer.sentences, "head_reads": feats.head_reads}
    if rank == 0:
        atomic_write_json(out / "train_summary.json", summary, indent=2)
    return summary
