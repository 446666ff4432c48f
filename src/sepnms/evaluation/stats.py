"""Uncertainty of the rates we report: percentile bootstrap over expressions (fixed seed).

Every rate in ``metrics.json`` / ``report.md`` is a mean of per-expression values (a hit, a top-1
hit, a context recall); its 95 % interval comes from resampling the expressions with replacement.
A paired difference (method A - method B on the same expressions) resamples the expressions once
for both, so the interval reflects the pairing.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

#: resamples per interval; 2000 keeps the 2.5 / 97.5 percentiles stable to ~0.1 point on 400 items
N_BOOT = 2000
LEVEL = 0.95


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] resampling indices, the same for a given (n, n_boot, seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> Optional[tuple[float, float]]:
    """Percentile bootstrap interval of ``mean(values)``.

    values: [N] per-expression values (e.g. 0/1 hits).  Returns (low, high) in the units of the values,
    or None when there are no values (no interval can be given).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return None
    means = v[_indices(v.size, n_boot, seed)].mean(axis=1)
    return _interval(means, level)


def paired_difference_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_boot: int = N_BOOT,
                         seed: int = 0, level: float = LEVEL) -> Optional[dict[str, float]]:
    """Mean of ``a - b`` over paired items with its bootstrap interval.

    a, b: [N] per-expression values of two methods on the same expressions, in the same order.
    Returns ``{"diff", "low", "high"}`` (None for no items); the difference is significant at the
    level when the interval excludes 0.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.size == 0:
        return None
    d = a - b
    low, high = _interval(d[_indices(d.size, n_boot, seed)].mean(axis=1), level)
    return {"diff": float(d.mean()), "low": low, "high": high}
