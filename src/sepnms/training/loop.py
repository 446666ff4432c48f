"""The one training loop: what ``sepnms train`` (the first stage), ``sepnms ground train`` (MAttNet)
and ``sepnms clip-finetune`` (CLIP-dagger) share.

A trainer subclasses :class:`Trainer` and gives only what is its own: its modules and optimiser
(:meth:`Trainer.payload` / :meth:`Trainer.restore`), the checks a ``last.pt`` of it must pass
(:meth:`Trainer.read_last`), the loss of one batch (:meth:`Trainer.loss`), what it counts after a
step (:meth:`Trainer.after_step`) and its validation metric (:meth:`Trainer.validate`).
:class:`TrainingLoop` owns the rest, the same way for all three:

* **the run lock** (:func:`run_lock` around the whole run, rank 0) and, for ``--no-resume``,
  :class:`~sepnms.training.guard.FreshRun` (the old checkpoints stay until the new run saves);
* **resume** from ``<folder>/last.pt``: the trainer's own checks (changed settings, vocabulary,
  fingerprint), the world-size check, the modules, the run's state and the torch RNG state, so a
  resumed run reaches the weights an uninterrupted one does;
* **checkpoints**: ``last.pt`` every ``checkpoint_every`` steps and at every validation, written
  atomically by rank 0 only; ``best.pt`` at each new best validation metric;
* **validation** every ``eval_every`` steps and once at the end, **best-keeping** (lower or higher
  is better) and **early stopping** after ``patience`` validations without a new best;
* **interrupts**: Ctrl-C or SIGTERM (single process) ends the current step, saves ``last.pt`` and
  raises :class:`KeyboardInterrupt` (``sepnms`` exits 130); ``stop_after_steps`` does the same
  without a signal (tests of resuming);
* **DistributedDataParallel** (:func:`distributed_module`) under ``torchrun``;
* the **TensorBoard** writer (``<folder>/tb``, rank 0), the **progress bar** (tqdm, rank 0) and the
  data / compute timings.

The run's state is a dict saved in ``last.pt``: the step count under ``settings.counter`` (``step``,
MAttNet's ``iter``), ``history`` (one entry per validation: ``{counter: n, metric: value, ...}``),
``best_val``, ``best_<counter>``, ``world_size`` and whatever the trainer adds
(:meth:`Trainer.initial_state`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from tqdm import tqdm

from sepnms.distributed import barrier, process_group, rank_world
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path
from sepnms.training.early_stop import should_stop
from sepnms.training.guard import FreshRun, run_lock

log = logging.getLogger(__name__)

#: ``log(tag, value, step)``: a scalar for TensorBoard (a no-op off rank 0)
ScalarLog = Callable[[str, float, int], None]


@dataclass
class LoopSettings:
    """How one run is driven; every value comes from the trainer's config section."""

    name: str                            # the progress bar's label
    folder: Path                         # the run folder: last.pt, best.pt, tb/
    total: int                           # the step count at which the run ends
    checkpoint_every: int                # last.pt every this many steps (and at each validation)
    eval_every: Optional[int] = None     # None: the trainer has no validation
    patience: Optional[int] = None       # early stopping after this many validations without a new best
    higher_is_better: bool = False       # the validation metric is a loss (False) or an accuracy (True)
    metric: str = "val_loss"             # the metric's key in the history
    counter: str = "step"                # the state key of the step count
    unit: str = "step"                   # its name in log lines ("resumed ... at step 40")
    progress: bool = True
    amp: bool = False                    # CUDA autocast + GradScaler
    restart_hint: str = "--no-resume"    # how the user starts again instead of resuming

    @property
    def best_key(self) -> str:
        return f"best_{self.counter}"


class Trainer:
    """What one trainer gives :class:`TrainingLoop`; override what is yours."""

    optimizer: torch.optim.Optimizer

    def initial_state(self) -> dict[str, Any]:
        """The trainer's own state entries of a new run (e.g. the position in the epoch)."""
        return {}

    def payload(self) -> dict[str, Any]:
        """What a checkpoint holds besides the loop's ``state`` and ``rng``: format, config, weights,
        optimiser (and scheduler) state."""
        raise NotImplementedError

    def read_last(self, path: Path) -> dict[str, Any]:
        """Read ``path`` (a ``last.pt``) and refuse it when it is not this run's to resume."""
        raise NotImplementedError

    def restore(self, ckpt: dict[str, Any], path: Path) -> None:
        """Load the modules and optimiser of ``ckpt`` (read by :meth:`read_last`)."""
        raise NotImplementedError

    def loss(self, batch: Any, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """(the loss of ``batch``, more scalars to log as ``train/<key>``: tensors or floats)."""
        raise NotImplementedError

    def before_optimizer_step(self) -> None:
        """Between ``backward`` and the optimiser step (e.g. gradient clipping; with ``amp`` the
        gradients are still scaled here - MAttNet, the one trainer that clips, runs without it)."""

    def after_step(self, state: dict[str, Any], values: dict[str, float], scalar: ScalarLog) -> None:
        """After the step count went up by one; ``values`` holds the logged floats (``loss`` first)."""

    def validate(self, state: dict[str, Any]) -> Optional[tuple[float, dict[str, Any]]]:
        """(the validation metric, more history fields) or None (no validation)."""
        return None

    def check_state(self, state: dict[str, Any]) -> None:
        """Before a checkpoint is written: refuse to save a diverged state."""

    def checkpoint_now(self, state: dict[str, Any]) -> bool:
        """Save ``last.pt`` after this step besides the ``checkpoint_every`` cadence (e.g. at the end
        of an epoch)."""
        return False


def distributed_module(module: torch.nn.Module, device: str, seed: int, step: int,
                       find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` as DistributedDataParallel when torchrun started several processes, else itself.

    Every rank starts from rank 0's weights (DDP broadcasts them); the torch RNG is reseeded per
    (seed, rank, step), so dropout differs between ranks and a resumed run draws the same masks.
    """
    rank, world = rank_world()
    if world == 1:
        return module
    torch.manual_seed(hash((seed, rank, step)) % (1 << 62))
    cuda = device.startswith("cuda")
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[torch.device(device).index] if cuda else None,
        find_unused_parameters=find_unused_parameters)


@contextlib.contextmanager
def training_run(device: str, folder: Path, command: str) -> Iterator[None]:
    """The process group (under torchrun) and the run lock (rank 0) around one whole run."""
    with process_group(device):
        rank, _ = rank_world()
        with run_lock(folder, enabled=rank == 0, command=command):
            yield


class _StopRequest:
    """Ctrl-C / SIGTERM while training: noted, acted on after the current step.  A second Ctrl-C
    interrupts at once.  Only in a single process's main thread (under torchrun every rank would
    have to stop at the same step), and not for a signal the process ignores (``nohup``)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool):
        self.requested: Optional[str] = None
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if self.enabled:
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored (nohup): stays ignored
                    self._old[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the second Ctrl-C stops at once

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class TrainingLoop:
    """Drives one run of a :class:`Trainer` (see the module docstring)."""

    def __init__(self, trainer: Trainer, settings: LoopSettings, device: str):
        self.trainer, self.s, self.device = trainer, settings, device
        self.rank, self.world = rank_world()
        self.last = settings.folder / "last.pt"
        self.state: dict[str, Any] = {
            settings.counter: 0, **trainer.initial_state(), "best_val": -1.0 if settings.higher_is_better else math.inf,
            settings.best_key: 0, "history": [], "world_size": self.world}
        self.fresh: Optional[FreshRun] = None
        self.writer = None
        self.data_time = self.compute_time = 0.0
        self.steps_this_call = 0

    # ---------------------------------------------------------------- resume / save

    def resume(self, resume: bool) -> dict[str, Any]:
        """Continue from ``last.pt`` when ``resume`` and it exists; returns the run's state."""
        s = self.s
        if resume and self.last.is_file():
            ckpt = self.trainer.read_last(self.last)
            started = ckpt["state"].get("world_size", 1)
            if started != self.world:
                raise InputError(self.last, f"this run was started with {started} process(es), now {self.world}: "
                                            f"resume it with the same number (the position in the data is per "
                                            f"rank), or start again with {s.restart_hint}")
            self.trainer.restore(ckpt, self.last)
            self.state = ckpt["state"]
            rng = ckpt.get("rng")
            if isinstance(rng, dict):  # first-stage checkpoints of earlier versions: {"torch": state}
                rng = rng.get("torch")
            if rng is not None:
                torch.set_rng_state(rng)
            log.info("resumed %s at %s %d", self.last, s.unit, self.state[s.counter])
        # --no-resume: the previous run's checkpoints stay until this run has saved one of its own
        self.fresh = FreshRun(s.folder, fresh=not resume and self.rank == 0)
        barrier()
        return self.state

    def save(self, path: Path) -> None:
        """The trainer's payload + the run's state + the RNG state, atomically (rank 0 only)."""
        if self.rank != 0:
            return
        self.trainer.check_state(self.state)
        with atomic_path(path) as tmp:
            torch.save({**self.trainer.payload(), "state": self.state, "rng": torch.get_rng_state()}, tmp)
        if self.fresh is not None:
            self.fresh.saved(path)

    # ---------------------------------------------------------------- validation

    def validate(self) -> None:
        s, state = self.s, self.state
        result = self.trainer.validate(state)
        if result is None:
            return
        value, extra = result
        state["history"].append({s.counter: state[s.counter], s.metric: value, **extra})
        self.scalar(f"val/{s.metric.removeprefix('val_')}", value, state[s.counter])
        better = value > state["best_val"] if s.higher_is_better else value < state["best_val"]
        if better:
            state["best_val"], state[s.best_key] = value, state[s.counter]
            self.save(s.folder / "best.pt")

    def stop_early(self) -> bool:
        """The patience has run out (the loop takes no further step)."""
        return should_stop(self.state["history"], self.s.counter, self.state.get(self.s.best_key, 0), self.s.patience)

    def stopped_early(self) -> bool:
        """The patience ended the run before its bound (``settings.total``); a patience that runs
        out at the last step did not shorten the run."""
        return self.stop_early() and self.state[self.s.counter] < self.s.total

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    # ---------------------------------------------------------------- the loop

    def run(self, batches: Iterable[Any], stop_after_steps: Optional[int] = None) -> bool:
        """Train on ``batches`` until ``settings.total`` steps, early stopping or the end of the
        batches; validate and save at the end.  Returns False; on an interruption (a signal, or
        ``stop_after_steps`` steps in this call) it saves ``last.pt`` and returns True (a signal:
        raises KeyboardInterrupt after saving)."""
        s, state = self.s, self.state
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(s.folder / "tb"), purge_step=state[s.counter])
        scaler = torch.amp.GradScaler("cuda", enabled=s.amp)
        bar = tqdm(total=s.total, initial=min(state[s.counter], s.total), desc=s.name,
                   disable=not s.progress or self.rank != 0)
        interrupted: Optional[str] = None
        try:
            with _StopRequest(enabled=self.world == 1) as stop:
                interrupted = self._steps(iter(batches), scaler, bar, stop, stop_after_steps)
            bar.close()  # before the final validation's own output (closing twice is harmless)
            if interrupted is None:
                if s.eval_every is not None and (not state["history"] or state["history"][-1][s.counter] != state[s.counter]):
                    self.validate()
            self.save(self.last)
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        if interrupted is not None and interrupted != "stop_after_steps":
            log.warning("%s: %s at %s %d; %s saved - run the same command to resume", s.name, interrupted, s.unit,
                        state[s.counter], self.last)
            raise KeyboardInterrupt
        return interrupted is not None

    def _steps(self, batches: Iterator[Any], scaler: torch.amp.GradScaler, bar: tqdm, stop: _StopRequest,
               stop_after_steps: Optional[int]) -> Optional[str]:
        """The steps; returns why they stopped before the end (None: the end)."""
        s, state, trainer = self.s, self.state, self.trainer
        optimizer = trainer.optimizer
        tick = time.perf_counter()
        while state[s.counter] < s.total and not self.stop_early():
            batch = next(batches, None)
            if batch is None:
                break
            t0 = time.perf_counter()
            self.data_time += t0 - tick
            with torch.autocast("cuda", enabled=s.amp):
                loss, scalars = trainer.loss(batch, state)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            trainer.before_optimizer_step()
            scaler.step(optimizer)
            scaler.update()
            state[s.counter] += 1
            self.steps_this_call += 1
            n = state[s.counter]
            values = {"loss": float(loss.detach())}  # one device sync per step
            values.update({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in scalars.items()})
            trainer.after_step(state, values, self.scalar)
            for key, value in values.items():
                self.scalar(f"train/{key}", value, n)
            bar.update(1)
            if s.eval_every is not None and state["history"]:
                bar.set_postfix(loss=f"{values['loss']:.3f}", best_val=f"{state['best_val']:.3f}")
            else:
                bar.set_postfix(loss=f"{values['loss']:.3f}")
            if s.eval_every is not None and n % s.eval_every == 0:
                self.validate()
            if (n % s.checkpoint_every == 0 or (s.eval_every is not None and n % s.eval_every == 0)
                    or trainer.checkpoint_now(state)):
                self.save(self.last)
            tick = time.perf_counter()
            self.compute_time += tick - t0
            if self.stop_early():
                log.info("%s: stopped at %s %d, %d validations without a better %s than %s %d's", s.name, s.unit, n,
                         s.patience, s.metric, s.unit, state[s.best_key])
                break
            if n < s.total:
                if stop.requested:
                    return stop.requested
                if stop_after_steps is not None and self.steps_this_call >= stop_after_steps:
                    return "stop_after_steps"
        return None
