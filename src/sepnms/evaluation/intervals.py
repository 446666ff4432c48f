"""95 % bootstrap intervals of every reported rate, and paired differences between methods.

Each rate of ``metrics.json`` is a mean over the split's expressions of a per-expression value
(:func:`sepnms.evaluation.metrics.expression_outcomes`): a hit (0/1), a top-1 hit (0/1), the
fraction of the expression's context boxes matched (expressions without context excluded).
:func:`with_intervals` adds ``<rate>_ci: [low, high]`` beside each rate (percentile bootstrap over
expressions, fixed seed, :func:`sepnms.evaluation.stats.bootstrap_ci`); :func:`paired_differences`
gives method A - method B on the same expressions with the interval of the paired bootstrap
(:func:`sepnms.evaluation.stats.paired_difference_ci`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from sepnms.evaluation.stats import N_BOOT, bootstrap_ci, paired_difference_ci

#: rate key in metrics.json -> per-expression outcome key
RATES = {"hit_rate": "hit", "top1_accuracy": "top1", "ctx_recall": "ctx_recall"}

#: the comparisons of the report: (A, B) -> A - B
DEFAULT_PAIRS = (("sepnms", "refnms"), ("sepnms", "det"), ("sepnms@mattnet_dets", "mattnet_dets"))


def _defined(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def with_intervals(entry: Mapping[str, Any], outcomes: Mapping[str, np.ndarray], seed: int = 0,
                   n_boot: int = N_BOOT) -> dict[str, Any]:
    """``entry`` (one method, one split) plus ``<rate>_ci: [low, high]`` for every rate of
    :data:`RATES` (None where no expression defines the rate)."""
    out = dict(entry)
    for rate, key in RATES.items():
        ci = bootstrap_ci(_defined(np.asarray(outcomes[key], np.float64)), n_boot=n_boot, seed=seed)
        out[f"{rate}_ci"] = None if ci is None else [ci[0], ci[1]]
    return out


def paired_differences(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], seed: int = 0,
                       n_boot: int = N_BOOT) -> dict[str, Optional[dict[str, float]]]:
    """``{rate: {diff, low, high}}`` of method A - method B over the same expressions.

    ``a``, ``b``: :func:`expression_outcomes` of the two methods on one split.  Expressions are
    matched by ``sent_id``; the context recall uses the expressions where both define it.

    Raises:
        ValueError: when the two tables hold different expressions.
    """
    ia = np.argsort(a["sent_id"], kind="stable")
    ib = np.argsort(b["sent_id"], kind="stable")
    if not np.array_equal(np.asarray(a["sent_id"])[ia], np.asarray(b["sent_id"])[ib]):
        raise ValueError("paired differences need the same expressions in both methods")
    out: dict[str, Optional[dict[str, float]]] = {}
    for rate, key in RATES.items():
        va = np.asarray(a[key], np.float64)[ia]
        vb = np.asarray(b[key], np.float64)[ib]
        both = ~np.isnan(va) & ~np.isnan(vb)
        out[rate] = paired_difference_ci(va[both], vb[both], n_boot=n_boot, seed=seed)
    return out


def differences_table(pairs: Mapping[str, Mapping[str, Mapping[str, Any]]], split: str) -> str:
    """Markdown table of :func:`paired_differences` results ``{"A - B": {split: {rate: ...}}}``
    for one split, in percentage points."""
    rows = ["| comparison | hit rate (pts) | top-1 acc (pts) | ctx recall (pts) |", "|---|---:|---:|---:|"]
    for name, per_split in pairs.items():
        d = per_split.get(split)
        if not d:
            continue
        cells = []
        for rate in RATES:
            r = d.get(rate)
            cells.append("-" if r is None else
                         f"{100 * r['diff']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
