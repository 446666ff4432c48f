"""``sepnms ground train``: the second stage (MAttNet) trained end to end, and its checkpoints.

``train``: MAttNet's recipe on the annotated objects of ``grounding.train_split`` (Adam, hinge
ranking with one visual and one language negative per sentence, value clipping of gradients,
``lr x decay ** ((it - start) / every)`` after ``start``); every ``eval_every`` iterations the
ground-truth-box accuracy on ``grounding.val_split`` is measured and the best weights kept as
``<workdir>/models/mattnet/best.pt`` (with ``grounding.early_stop_patience`` P, the run stops after P
validations in a row without a higher accuracy; ``max_iters`` bounds it); ``last.pt`` (every
``checkpoint_every``) resumes to the same result.  Seeded, TensorBoard, DistributedDataParallel under torchrun (each rank takes its own
images; the effective batch is ``WORLD_SIZE x batch_images``).

``sepnms ground eval`` is :mod:`sepnms.engine.ground_eval`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from sepnms.config import Config
from sepnms.engine.checkpoint import load_weights, save_checkpoint
from sepnms.engine.early_stop import should_stop
from sepnms.engine.distributed import barrier, process_group, rank_world, resolve_device
from sepnms.engine.train_guard import FreshRun, run_lock
from sepnms.errors import InputError
from sepnms.evaluation.ground_accuracy import sentence_hits
from sepnms.grounding.candidates import gt_sets, predict
from sepnms.grounding.data import AttributeVocab, BatchSampler, GroundingData, VisualFeatures
from sepnms.grounding.loss import attribute_loss, ranking_loss
from sepnms.grounding.mattnet import MAttNet, ObjectTable, build_mattnet
from sepnms.grounding.vocab import GroundingVocab
from sepnms.io.atomic import atomic_write_json
from sepnms.io.checkpoints import check_finite_state, torch_load_weights
from sepnms.io.schemas import grounding_checkpoint_schema, validate
from sepnms.version import __version__
from sepnms.workdir import model_dir

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
# training


def train_grounding(cfg: Config, resume: bool = True, progress: bool = True,
                    stop_after_steps: Optional[int] = None) -> dict[str, Any]:
    """Train MAttNet; returns a summary.  ``stop_after_steps`` stops early as an interruption would."""
    with process_group(cfg.device):
        rank, _ = rank_world()
        with run_lock(model_dir(cfg, MODEL_NAME), enabled=rank == 0, command="sepnms ground train"):
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
    optimizer = torch.optim.Adam(net.parameters(), lr=g.lr, betas=tuple(g.betas), eps=g.eps)
    state: dict[str, Any] = {"iter": 0, "best_val": -1.0, "best_iter": 0, "history": [], "world_size": world}
    last = out / "last.pt"
    if resume and last.is_file():
        ckpt = load_grounding_checkpoint(last, cfg)
        if ckpt["vocab"] != vocab.words:
            raise InputError(last, "this run was started on other training sentences (its vocabulary differs); "
                                   "start again with --no-resume")
        if ckpt["state"].get("world_size", 1) != world:
            raise InputError(last, f"this run was started with {ckpt['state'].get('world_size', 1)} process(es), now "
                                   f"{world}: resume it with the same number, or start again with --no-resume")
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"])
        log.info("resumed %s at iteration %d", last, state["iter"])
    fresh = FreshRun(out, fresh=not resume and rank == 0)  # old best.pt / last.pt stay until this run saves
    barrier()

    step: torch.nn.Module = _Flat(net)
    if world > 1:
        step = torch.nn.parallel.DistributedDataParallel(
            step, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
            find_unused_parameters=True)
    sampler = BatchSampler(cfg, data, vocab, feats, att_vocab, rank, world)
    class_weights = torch.from_numpy(att_vocab.weights).to(device) if att_vocab else None
    val_sets = gt_sets(data, g.val_split)
    if g.val_max_sentences is not None:
        val_sets = {s: val_sets[s] for s in sorted(val_sets)[:g.val_max_sentences]}
    if not val_sets:
        raise InputError(cfg.refs_path(), f"no sentence in validation split {g.val_split!r}")
    meta = _meta(cfg, vocab, att_vocab.words if att_vocab else [])

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=state["iter"])

    def save(path: Path) -> None:
        if rank == 0:
            check_finite_state(net.state_dict(), out, f"ground train diverged at iteration {state['iter']} "
                                                      f"(grounding.lr={g.lr} too high?)")
            save_checkpoint(path, {**meta, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                   "state": state, "rng": torch.get_rng_state()})
            fresh.saved(path)

    def validate() -> None:
        chosen = predict(net, vocab, feats, data, val_sets, cfg)
        acc = float(np.mean(sentence_hits(data, list(val_sets), val_sets, chosen, g.gt_accuracy)))
        net.train()
        state["history"].append({"iter": state["iter"], "val_accuracy": acc, "lr": optimizer.param_groups[0]["lr"]})
        if writer:
            writer.add_scalar("val/accuracy", acc, state["iter"])
        if acc > state["best_val"]:
            state["best_val"], state["best_iter"] = acc, state["iter"]
            save(out / "best.pt")

    net.train()
    bar = tqdm(total=g.max_iters, initial=state["iter"], desc="ground train", disable=not progress or rank != 0)
    steps_this_call, data_time, step_time, sentences = 0, 0.0, 0.0, 0
    def stop_early() -> bool:
        return should_stop(state["history"], "iter", state["best_iter"], g.early_stop_patience)

    while state["iter"] < g.max_iters and not stop_early():
        t0 = time.perf_counter()
        batch = sampler.batch(state["iter"])
        t1 = time.perf_counter()
        lr = learning_rate(g, state["iter"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        scores, att_scores = step(*_flat_args(batch.objects, batch.labels, batch.obj_idx, batch.sent_idx, device))
        loss = ranking_loss(scores, g.margin, g.visual_rank_weight, g.lang_rank_weight)
        if att_vocab is not None:
            loss = loss + g.att_weight * attribute_loss(att_scores, batch.att_labels.to(device),
                                                        batch.att_select.to(device), class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in net.parameters():
            if p.grad is not None:
                p.grad.clamp_(-g.grad_clip, g.grad_clip)
        optimizer.step()
        state["iter"] += 1
        steps_this_call += 1
        sentences += len(batch.pos_sent_ids)
        loss_value = float(loss.detach())
        data_time += t1 - t0
        step_time += time.perf_counter() - t1
        if writer:
            writer.add_scalar("train/loss", loss_value, state["iter"])
            writer.add_scalar("train/lr", lr, state["iter"])
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", best_val=f"{max(state['best_val'], 0):.3f}")
        if state["iter"] % g.eval_every == 0:
            validate()
        if state["iter"] % g.checkpoint_every == 0 or state["iter"] % g.eval_every == 0:
            save(last)
        if stop_early():
            log.info("ground train: stopped at iteration %d, %d validations without a higher accuracy than "
                     "iteration %d's", state["iter"], g.early_stop_patience, state["best_iter"])
            break
        if stop_after_steps is not None and steps_this_call >= stop_after_steps and state["iter"] < g.max_iters:
            bar.close()
            if writer:
                writer.close()
            return {"interrupted": True, "iter": state["iter"]}
    bar.close()
    if not state["history"] or state["history"][-1]["iter"] != state["iter"]:
        validate()
    save(last)
    if writer:
        writer.close()
    summary = {"model": MODEL_NAME, "iterations": state["iter"], "max_iters": g.max_iters,
               "best_val_accuracy": state["best_val"], "best_iter": state["best_iter"], "stopped_early": stop_early(),
               "early_stop_patience": g.early_stop_patience, "history": state["history"], "vocab_size": len(vocab),
               "attribute_loss": att_vocab is not None, "data_time_s": data_time, "compute_time_s": step_time,
               "train_sentences_this_call": sentences, "head_reads": feats.head_reads}
    if rank == 0:
        atomic_write_json(out / "train_summary.json", summary, indent=2)
    return summary
