"""Patience-based early stopping, shared by ``sepnms train`` and ``sepnms ground train``.

A run validates every ``eval_every`` steps and keeps the best weights (``best.pt``); with a
patience P it stops once P validations in a row have not improved on the best one.  The decision
is a function of the run's validation history (saved in ``last.pt``), so a resumed run stops where
an uninterrupted one does.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence


def validations_since_best(history: Sequence[dict[str, Any]], step_key: str, best_step: int) -> int:
    """How many validations of ``history`` (entries ``{step_key: step, ...}``, in order) came after
    the best one (at step ``best_step``)."""
    return sum(1 for h in history if int(h[step_key]) > int(best_step))


def should_stop(history: Sequence[dict[str, Any]], step_key: str, best_step: int, patience: Optional[int]) -> bool:
    """True when ``patience`` (None: never) validations in a row have not improved on the best."""
    return patience is not None and validations_since_best(history, step_key, best_step) >= patience
