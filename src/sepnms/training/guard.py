"""What keeps a training run's checkpoints its own.

* :func:`run_lock`: one ``sepnms train`` per run folder (``<workdir>/models/<name>``) at a time;
  a second one is refused instead of resuming - and then overwriting - the first one's
  checkpoints.
* :func:`check_resume_settings`: resuming applies the checkpoint's optimiser, schedule and
  position; a ``train.*`` setting changed since would be silently ignored.  Settings that only
  say how long to run or how often to save are applied (and logged); the others are refused,
  naming them.
* :class:`FreshRun`: ``--no-resume`` keeps the previous run's checkpoints until the new run has
  written one of its own, so a new run that fails early (a diverging loss, a bad input) loses
  nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from sepnms.config import Config
from sepnms.errors import InputError, SepNMSError

log = logging.getLogger(__name__)

#: train.* settings a resumed run may change: they say how long to run, how often to save and how
#: to load data, not what the checkpoint's optimiser, schedule and batches were built with
APPLIED_ON_RESUME = frozenset({"epochs", "max_steps", "early_stop_patience", "checkpoint_every", "num_workers"})


class TrainRunLocked(SepNMSError):
    """Another ``sepnms train`` holds the run folder."""


@contextlib.contextmanager
def run_lock(folder: Path, enabled: bool = True, command: str = "sepnms train") -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on the run folder itself (no lock file is left behind;
    the kernel releases it when the process ends, even by SIGKILL) for the whole run; refuse at
    once if another process holds it."""
    if not enabled:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainRunLocked(f"{folder}: another `{command}` is running on this run; wait for it to "
                                 "finish, or train into another workdir") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_resume_settings(ckpt: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse to resume ``ckpt`` when a ``train.*`` setting (or the seed) other than
    :data:`APPLIED_ON_RESUME` differs from the config; log the applied ones."""
    old_cfg = ckpt.get("config") or {}
    old = old_cfg.get("train")
    if not isinstance(old, dict):
        return  # a checkpoint without its config (older versions): nothing to compare
    new = cfg.train.model_dump(mode="json")
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if "seed" in old_cfg and old_cfg["seed"] != cfg.seed:
        changed["seed"] = (old_cfg["seed"], cfg.seed)
    refused = {k: v for k, v in changed.items() if k not in APPLIED_ON_RESUME}
    if refused:
        listed = ", ".join(f"{'' if k == 'seed' else 'train.'}{k} ({a!r} -> {b!r})" for k, (a, b) in refused.items())
        raise InputError(path, f"cannot resume with changed settings {listed}: the checkpoint's optimiser, schedule "
                               "and batches were made with the old values. Put them back, or start again with "
                               "--no-resume")
    for key, (a, b) in changed.items():
        log.info("resuming %s with train.%s changed from %r to %r (applied)", path, key, a, b)


class FreshRun:
    """``--no-resume``: the previous run's checkpoints stay until this run saves its first one;
    then those not yet replaced are removed (a mix of two runs' ``best.pt`` and ``last.pt``
    would resume one run with the other's best weights)."""

    def __init__(self, folder: Path, fresh: bool):
        self.stale = {folder / "last.pt", folder / "best.pt"} if fresh else set()

    def saved(self, path: Path) -> None:
        """Call after writing ``path``: the first save of a fresh run retires the old files."""
        if not self.stale:
            return
        for old in self.stale - {path}:
            if old.exists():
                old.unlink()
                log.info("removed %s of the previous run (this run saved %s)", old, path.name)
        self.stale.clear()
