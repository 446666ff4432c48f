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
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from sepnms.config import Config
from sepnms.engine.distributed import (all_reduce_sum, barrier, broadcast_buffers, process_group, rank_world,
                                       resolve_device)
from sepnms.engine.checkpoint import checkpoint_meta, load_checkpoint, load_weights, save_checkpoint
from sepnms.engine.early_stop import should_stop
from sepnms.data.training_set import TrainingSet, collate
from sepnms.data.workspace import Workspace
from sepnms.engine.train_guard import FreshRun, check_resume_settings, run_lock
from sepnms.errors import ConfigError, InputError
from sepnms.io.atomic import atomic_write_json
from sepnms.models.sepnms_model import SepNMSModel, build_model
from sepnms.workdir import model_dir, run_name

log = logging.getLogger(__name__)


class EpochBatches(Sampler[list[int]]):
    """Batches of item indices ``epoch * N + i`` from ``start`` (epoch, batch) on; drop_last.

    The order of epoch ``e`` is a permutation seeded by (seed, e), so a resumed run sees exactly
    the batches an uninterrupted run would.  With ``world_size > 1`` each rank takes every
    ``world_size``-th batch.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, seed: int, start_epoch: int = 0,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.bs, self.epochs, self.seed = n, batch_size, epochs, seed
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self.rank, self.world = rank, world_size

    def batches_per_epoch(self) -> int:
        return (self.n // self.bs) // self.world

    def __iter__(self) -> Iterator[list[int]]:
        for epoch in range(self.start_epoch, self.epochs):
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            nb = self.batches_per_epoch()
            first = self.start_batch if epoch == self.start_epoch else 0
            for b in range(first, nb):
                g = b * self.world + self.rank
                yield [epoch * self.n + int(i) for i in perm[g * self.bs:(g + 1) * self.bs]]

    def __len__(self) -> int:
        total = self.batches_per_epoch() * (self.epochs - self.start_epoch) - self.start_batch
        return max(total, 0)


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


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])


def train(cfg: Config, model_type: Optional[str] = None, resume: bool = True, progress: bool = True,
          stop_after_steps: Optional[int] = None) -> dict[str, Any]:
    """Train a model; returns a summary (best val loss, steps, timings).

    ``stop_after_steps`` stops early (as an interruption would) after that many steps in this
    call - for tests of resuming.

    Under ``torchrun`` (``WORLD_SIZE > 1``) it trains with DistributedDataParallel (see
    ``sepnms.engine.distributed``): each rank takes every ``WORLD_SIZE``-th batch (so the
    effective batch is ``WORLD_SIZE x train.batch_size``), validation is split over the ranks and
    summed (every rank gets the same val loss and takes the same scheduler step), only rank 0
    writes checkpoints, logs and the summary.  A run resumes only with the world size it was
    started with.
    """
    with process_group(cfg.device):
        rank, _ = rank_world()
        folder = model_dir(cfg, run_name(cfg, model_type or cfg.train.model))
        with run_lock(folder, enabled=rank == 0):  # one `sepnms train` per run folder
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
    groups = model.param_groups(t.lr_head, t.lr_new, t.lr_gru, t.weight_decay)
    optimizer = torch.optim.Adam(groups)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=t.plateau_factor, patience=t.plateau_patience,
        min_lr=[g["lr"] * t.min_lr_ratio for g in groups])

    train_set = TrainingSet(ws, t.train_split)
    val_set = TrainingSet(ws, t.val_split, t.val_max_expressions, fixed_epoch=-1)
    state = {"epoch": 0, "batch": 0, "step": 0, "best_val": math.inf, "best_step": 0, "history": [],
             "world_size": world}
    last = out / "last.pt"
    if resume and last.is_file():
        ckpt = load_checkpoint(last, cfg, model_type)
        check_resume_settings(ckpt, cfg, last)
        if ckpt["state"].get("world_size", 1) != world:
            raise InputError(last, f"this run was started with {ckpt['state'].get('world_size', 1)} process(es), now "
                                   f"{world}: resume it with the same number (the epoch position is per rank), "
                                   f"or start again with --no-resume")
        load_weights(model, ckpt, last)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        if "best_step" not in state:  # a checkpoint of an earlier version: the best from its history
            state["best_step"] = min(state["history"], key=lambda h: h["val_loss"])["step"] if state["history"] else 0
        _set_rng_state(ckpt["rng"])
        log.info("resumed %s at step %d", last, state["step"])
    # --no-resume: the previous run's checkpoints stay until this run has saved one of its own
    fresh = FreshRun(out, fresh=not resume and rank == 0)
    barrier()

    use_text = model.ref_relatedness is not None
    step_module: torch.nn.Module = RoIForward(model)
    if world > 1:
        # same init everywhere (DDP also broadcasts rank 0's weights); dropout differs per rank
        torch.manual_seed(hash((cfg.seed, rank, state["step"])) % (1 << 62))
        cuda = device.startswith("cuda")
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[torch.device(device).index] if cuda else None)

    sampler = EpochBatches(len(train_set), t.batch_size, t.epochs, cfg.seed, state["epoch"], state["batch"], rank, world)
    if sampler.batches_per_epoch() == 0:
        raise InputError(Path(cfg.workdir) / "prepare" / "refdb.json",
                         f"split {t.train_split!r} has {len(train_set)} expressions, fewer than one batch of {t.batch_size}")
    loader_kw = dict(collate_fn=collate, num_workers=t.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
                     persistent_workers=False, pin_memory=device.startswith("cuda"))
    loader = DataLoader(train_set, batch_sampler=sampler, **loader_kw)
    # each rank validates every world-th expression; the sums are all-reduced
    val_part = val_set if world == 1 else torch.utils.data.Subset(val_set, range(rank, len(val_set), world))
    val_loader = DataLoader(val_part, batch_size=t.batch_size, shuffle=False, **loader_kw)
    total_steps = sampler.batches_per_epoch() * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=state["step"])

    def save(path: Path) -> None:
        if rank != 0:
            return
        save_checkpoint(path, {**checkpoint_meta(cfg, model_type), "model": model.state_dict(),
                               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                               "state": state, "rng": _rng_state()})
        fresh.saved(path)

    def check_finite(value: float, what: str) -> None:
        if not math.isfinite(value):
            raise ConfigError(f"training diverged at step {state['step']}: the {what} is {value} (learning rates "
                              f"train.lr_head={t.lr_head}, lr_new={t.lr_new}, lr_gru={t.lr_gru} too high?); nothing "
                              f"of this state was saved, {out} keeps the last finite checkpoints")

    def evaluate_and_step() -> None:
        broadcast_buffers(model)  # rank 0's BatchNorm statistics everywhere: one model is validated
        total, count = all_reduce_sum(validation_sums(RoIForward(model), val_loader, device, use_text))
        vloss = total / max(count, 1)
        check_finite(vloss, "validation loss")
        scheduler.step(vloss)
        state["history"].append({"step": state["step"], "val_loss": vloss,
                                 "lr": [g["lr"] for g in optimizer.param_groups]})
        if writer:
            writer.add_scalar("val/loss", vloss, state["step"])
        if vloss < state["best_val"]:
            state["best_val"], state["best_step"] = vloss, state["step"]
            save(out / "best.pt")

    def stop_early() -> bool:
        return should_stop(state["history"], "step", state.get("best_step", 0), t.early_stop_patience)

    step_module.train()
    amp = t.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {name}", disable=not progress or rank != 0)
    steps_this_call, data_time, step_time = 0, 0.0, 0.0
    tick = time.perf_counter()
    nb = sampler.batches_per_epoch()
    for batch in loader:
        if state["step"] >= total_steps or stop_early():
            break
        t0 = time.perf_counter()
        data_time += t0 - tick
        with torch.autocast("cuda", enabled=amp):
            ref, ctx = forward_batch(step_module, batch, device, use_text)
            loss = batch_loss(ref, ctx, batch, device)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        state["step"] += 1
        state["batch"] += 1
        if state["batch"] >= nb:
            state["epoch"] += 1
            state["batch"] = 0
        steps_this_call += 1
        loss_value = float(loss.detach())  # one device sync per step
        check_finite(loss_value, "training loss")
        if writer:
            writer.add_scalar("train/loss", loss_value, state["step"])
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", best_val=f"{state['best_val']:.3f}")
        if state["step"] % t.eval_every == 0:
            evaluate_and_step()
        if state["step"] % t.checkpoint_every == 0 or state["step"] % t.eval_every == 0:
            save(last)
        tick = time.perf_counter()
        step_time += tick - t0
        if stop_early():
            log.info("%s: stopped at step %d, %d validations without a lower validation loss than step %d's",
                     name, state["step"], t.early_stop_patience, state["best_step"])
            break
        if stop_after_steps is not None and steps_this_call >= stop_after_steps:
            bar.close()
            if writer:
                writer.close()
            return {"interrupted": True, "step": state["step"]}
    bar.close()
    if not state["history"] or state["history"][-1]["step"] != state["step"]:
        evaluate_and_step()
    save(last)
    if writer:
        writer.close()
    summary = {"model": name, "steps": state["step"], "max_steps": total_steps, "best_val_loss": state["best_val"],
               "best_step": state.get("best_step"), "stopped_early": stop_early(),
               "early_stop_patience": t.early_stop_patience, "steps_per_epoch": nb, "history": state["history"],
               "data_time_s": data_time, "compute_time_s": step_time,
               "train_expressions": len(train_set)}
    if rank == 0:
        atomic_write_json(out / "train_summary.json", summary, indent=2)
    return summary
