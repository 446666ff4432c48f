"""``sepnms train``: the Sep-NMS (or Ref-NMS baseline) training loop (METHOD.md "Training").

BCE(ctx) + BCE(ref) at 1:1, mean over all RoIs; Adam with three groups (head / GRU / new layers);
ReduceLROnPlateau on the validation loss every ``eval_every`` steps; the weights with the lowest
validation loss are kept as ``best.pt``; with ``train.early_stop_patience`` P the run stops after P
validations in a row without a new lowest loss (``train.epochs`` / ``max_steps`` bound it).
``last.pt`` is written every ``checkpoint_every`` steps
(atomically) and holds everything needed to resume to the same result after an interruption:
model, optimiser, scheduler, position in the epoch, RNG state and history.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sepnms.config import Config
from sepnms.distributed import all_reduce_sum, broadcast_buffers, rank_world, resolve_device
from sepnms.engine.checkpoint import checkpoint_meta, load_checkpoint, load_weights
from sepnms.data.training_set import TrainingSet, collate
from sepnms.data.workspace import Workspace
from sepnms.errors import ConfigError, InputError
from sepnms.io.atomic import atomic_write_json
from sepnms.models.sepnms_model import SepNMSModel, build_model
from sepnms.training.batches import EpochBatches
from sepnms.training.guard import check_resume_settings
from sepnms.training.loop import LoopSettings, Trainer, TrainingLoop, distributed_module, training_run
from sepnms.workdir import model_dir, run_name

log = logging.getLogger(__name__)


class RoIForward(torch.nn.Module):
    """Head over pooled RoIs + both branches, as one module (what DDP wraps).

    The head's convolutions run in channels-last memory format (weights and input): the same
    arithmetic, about a quarter cheaper on CPU for the demo's head (benchmarks/RESULTS.md).
    """

    def __init__(self, model: SepNMSModel):
        super().__init__()
        self.model = model
        model.head.to(memory_format=torch.channels_last)

    def forward(self, pooled, loc, word_ids, word_mask, text_vec):
        """pooled [B, R, C, P, P] -> (ref logit [B, R] or None, ctx logit [B, R])."""
        b, r = pooled.shape[:2]
        feats = self.model.head(pooled.flatten(0, 1).contiguous(memory_format=torch.channels_last)).view(b, r, -1)
        return self.model.relatedness(feats, loc, word_ids, word_mask, text_vec)


def forward_batch(step: torch.nn.Module, batch: dict[str, torch.Tensor], device: str,
                  use_text: bool = True) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """Move a collated batch to ``device`` and run ``step`` (a RoIForward, maybe DDP-wrapped)."""
    return step(
        batch["pooled"].to(device, non_blocking=True), batch["loc"].to(device), batch["word_ids"].to(device),
        batch["word_mask"].to(device), batch["text_vec"].to(device) if use_text else None,
    )


def batch_loss(ref_logit, ctx_logit, batch, device) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(ctx_logit, batch["ctx_target"].to(device))
    if ref_logit is not None:
        loss = loss + F.binary_cross_entropy_with_logits(ref_logit, batch["ref_target"].to(device))
    return loss


@torch.no_grad()
def validation_sums(step: torch.nn.Module, loader: DataLoader, device: str, use_text: bool) -> tuple[float, int]:
    """(sum over expressions of the mean RoI loss, number of expressions) of ``loader``."""
    was_training = step.training
    step.eval()
    total, count = 0.0, 0
    for batch in loader:
        ref, ctx = forward_batch(step, batch, device, use_text)
        total += float(batch_loss(ref, ctx, batch, device)) * ctx.shape[0]
        count += ctx.shape[0]
    step.train(was_training)
    return total, count


def validation_loss(step: torch.nn.Module, loader: DataLoader, device: str, use_text: bool) -> float:
    total, count = validation_sums(step, loader, device, use_text)
    return total / max(count, 1)


class FirstStageTrainer(Trainer):
    """Sep-NMS / Ref-NMS on the prepared workdir: what is the first stage's own in the one loop."""

    def __init__(self, cfg: Config, model_type: str, model: SepNMSModel, device: str, use_text: bool,
                 batches_per_epoch: int):
        t = cfg.train
        self.cfg, self.model_type, self.model, self.device, self.use_text = cfg, model_type, model, device, use_text
        self.nb = batches_per_epoch
        groups = model.param_groups(t.lr_head, t.lr_new, t.lr_gru, t.weight_decay)
        self.optimizer = torch.optim.Adam(groups)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=t.plateau_factor, patience=t.plateau_patience,
            min_lr=[g["lr"] * t.min_lr_ratio for g in groups])
        self.step_module: torch.nn.Module = RoIForward(model)
        self.val_loader: Optional[DataLoader] = None

    def initial_state(self) -> dict[str, Any]:
        return {"epoch": 0, "batch": 0}

    def payload(self) -> dict[str, Any]:
        return {**checkpoint_meta(self.cfg, self.model_type), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def read_last(self, path: Path) -> dict[str, Any]:
        ckpt = load_checkpoint(path, self.cfg, self.model_type)
        check_resume_settings(ckpt, self.cfg, path)
        state = ckpt["state"]
        if "best_step" not in state:  # a checkpoint of an earlier version: the best from its history
            state["best_step"] = min(state["history"], key=lambda h: h["val_loss"])["step"] if state["history"] else 0
        return ckpt

    def restore(self, ckpt: dict[str, Any], path: Path) -> None:
        load_weights(self.model, ckpt, path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])

    def loss(self, batch: dict[str, torch.Tensor], state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        ref, ctx = forward_batch(self.step_module, batch, self.device, self.use_text)
        return batch_loss(ref, ctx, batch, self.device), {}

    def after_step(self, state: dict[str, Any], values: dict[str, float], scalar) -> None:
        state["batch"] += 1
        if state["batch"] >= self.nb:
            state["epoch"] += 1
            state["batch"] = 0
        self.check_finite(values["loss"], "training loss", state)

    def check_finite(self, value: float, what: str, state: dict[str, Any]) -> None:
        t = self.cfg.train
        if not math.isfinite(value):
            raise ConfigError(f"training diverged at step {state['step']}: the {what} is {value} (learning rates "
                              f"train.lr_head={t.lr_head}, lr_new={t.lr_new}, lr_gru={t.lr_gru} too high?); nothing "
                              f"of this state was saved, {model_dir(self.cfg, run_name(self.cfg, self.model_type))} "
                              "keeps the last finite checkpoints")

    def validate(self, state: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """The validation loss (split over the ranks and all-reduced); a scheduler step on it."""
        broadcast_buffers(self.model)  # rank 0's BatchNorm statistics everywhere: one model is validated
        total, count = all_reduce_sum(validation_sums(RoIForward(self.model), self.val_loader, self.device,
                                                      self.use_text))
        vloss = total / max(count, 1)
        self.check_finite(vloss, "validation loss", state)
        self.scheduler.step(vloss)
        return vloss, {"lr": [g["lr"] for g in self.optimizer.param_groups]}


def train(cfg: Config, model_type: Optional[str] = None, resume: bool = True, progress: bool = True,
          stop_after_steps: Optional[int] = None) -> dict[str, Any]:
    """Train a model; returns a summary (best val loss, steps, timings).

    ``stop_after_steps`` stops early (as an interruption would, saving ``last.pt``) after that many
    steps in this call - for tests of resuming.

    Under ``torchrun`` (``WORLD_SIZE > 1``) it trains with DistributedDataParallel (see
    ``sepnms.distributed``): each rank takes every ``WORLD_SIZE``-th batch (so the
    effective batch is ``WORLD_SIZE x train.batch_size``), validation is split over the ranks and
    summed (every rank gets the same val loss and takes the same scheduler step), only rank 0
    writes checkpoints, logs and the summary.  A run resumes only with the world size it was
    started with.
    """
    folder = model_dir(cfg, run_name(cfg, model_type or cfg.train.model))
    with training_run(cfg.device, folder, "sepnms train"):  # one `sepnms train` per run folder
        return _train(cfg, model_type, resume, progress, stop_after_steps)


def _train(cfg: Config, model_type: Optional[str], resume: bool, progress: bool,
           stop_after_steps: Optional[int]) -> dict[str, Any]:
    t = cfg.train
    model_type = model_type or t.model
    name = run_name(cfg, model_type)
    out = model_dir(cfg, name)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = rank_world()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    ws = Workspace.open(cfg, need_text=(model_type == "sepnms"), need_ctx=True)
    ws.refdb.check_splits([t.train_split, t.val_split], Path(cfg.workdir) / "prepare" / "refdb.json",
                          "train.train_split / train.val_split")
    model = build_model(cfg.model, torch.from_numpy(ws.word_vectors), model_type, cfg.paths.maskrcnn_checkpoint).to(device)
    train_set = TrainingSet(ws, t.train_split)
    val_set = TrainingSet(ws, t.val_split, t.val_max_expressions, fixed_epoch=-1)
    nb = EpochBatches(len(train_set), t.batch_size, t.epochs, cfg.seed, rank=rank, world_size=world).batches_per_epoch()
    trainer = FirstStageTrainer(cfg, model_type, model, device, model.ref_relatedness is not None, nb)
    total_steps = nb * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)
    loop = TrainingLoop(trainer, LoopSettings(
        name=f"train {name}", folder=out, total=total_steps, checkpoint_every=t.checkpoint_every,
        eval_every=t.eval_every, patience=t.early_stop_patience, metric="val_loss", counter="step", unit="step",
        progress=progress, amp=t.amp and device.startswith("cuda")), device)
    state = loop.resume(resume)

    trainer.step_module = distributed_module(trainer.step_module, device, cfg.seed, state["step"])
    sampler = EpochBatches(len(train_set), t.batch_size, t.epochs, cfg.seed, state["epoch"], state["batch"], rank, world)
    if nb == 0:
        raise InputError(Path(cfg.workdir) / "prepare" / "refdb.json",
                         f"split {t.train_split!r} has {len(train_set)} expressions, fewer than one batch of {t.batch_size}")
    loader_kw = dict(collate_fn=collate, num_workers=t.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
                     persistent_workers=False, pin_memory=device.startswith("cuda"))
    loader = DataLoader(train_set, batch_sampler=sampler, **loader_kw)
    # each rank validates every world-th expression; the sums are all-reduced
    val_part = val_set if world == 1 else torch.utils.data.Subset(val_set, range(rank, len(val_set), world))
    trainer.val_loader = DataLoader(val_part, batch_size=t.batch_size, shuffle=False, **loader_kw)

    trainer.step_module.train()
    if loop.run(loader, stop_after_steps):
        return {"interrupted": True, "step": state["step"]}
    summary = {"model": name, "steps": state["step"], "max_steps": total_steps, "best_val_loss": state["best_val"],
               "best_step": state.get("best_step"), "stopped_early": loop.stopped_early(),
               "early_stop_patience": t.early_stop_patience, "steps_per_epoch": nb, "history": state["history"],
               "data_time_s": loop.data_time, "compute_time_s": loop.compute_time,
               "train_expressions": len(train_set)}
    if rank == 0:
        atomic_write_json(out / "train_summary.json", summary, indent=2)
    return summary
