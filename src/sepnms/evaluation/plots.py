"""Sweep plots: referent hit rate against the mean number of kept proposals per expression.

Figures are built with matplotlib's object API on an Agg canvas (no global backend state, no
display needed) and written atomically as PNG.  Each method's line has its colour and dash from
:mod:`sepnms.evaluation.palette`, the same as in ``show`` figures and the gallery.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sepnms.evaluation import palette
from sepnms.io.atomic import atomic_path

X_KEY = "proposals_per_expression"
LABELS = {
    "hit_rate": "referent hit rate (%)",
    "ctx_recall": "context recall (%)",
    "top1_accuracy": "top-1 accuracy (%)",
    X_KEY: "proposals per expression",
}


def _points(curve: Sequence[dict], y_key: str) -> tuple[list[float], list[float]]:
    pts = sorted(
        (float(p[X_KEY]), 100.0 * float(p[y_key]))
        for p in curve
        if p.get(y_key) is not None and not math.isnan(float(p[y_key])) and not math.isnan(float(p[X_KEY]))
    )
    return [x for x, _ in pts], [y for _, y in pts]


def _draw(ax, curves: Mapping[str, Sequence[dict]], title: str, y_key: str,
          marks: Optional[Mapping[str, dict]], x_max: Optional[float]) -> None:
    for name, curve in curves.items():
        xs, ys = _points(curve, y_key)
        st = palette.method_style(name)
        (line,) = ax.plot(xs, ys, marker=".", markersize=3, linewidth=1.4, label=name, color=st.colour,
                          linestyle=palette.mpl_dash(st.dash))
        if marks and name in marks and marks[name].get(y_key) is not None:
            m = marks[name]
            ax.plot([float(m[X_KEY])], [100.0 * float(m[y_key])], marker="o", markersize=7,
                    color=line.get_color(), markerfacecolor="none")
    ax.set_xlabel(LABELS[X_KEY])
    ax.set_ylabel(LABELS.get(y_key, y_key))
    ax.set_title(title)
    ax.set_xlim(left=0, right=x_max)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize="small")


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_sweeps(
    curves: Mapping[str, Sequence[dict]],
    path: str | Path,
    title: str,
    y_key: str = "hit_rate",
    marks: Optional[Mapping[str, dict]] = None,
    x_max: Optional[float] = None,
) -> Path:
    """One figure: ``y_key`` (default hit rate, in %) against proposals per expression.

    Args:
        curves: method name -> sweep points (dicts from ``conf_sweep``), one line per method.
        path: output PNG (written atomically).
        title: figure title.
        y_key: metric on the y axis (``hit_rate``, ``ctx_recall``, ...).
        marks: method name -> one point (e.g. at the chosen conf), drawn as a ring.
        x_max: right limit of the x axis (default: automatic).
    """
    fig = Figure(figsize=(6.0, 4.5))
    _draw(fig.add_subplot(1, 1, 1), curves, title, y_key, marks, x_max)
    return _save(fig, path)


def plot_many(
    panels: Mapping[str, Mapping[str, Sequence[dict]]],
    path: str | Path,
    title: str,
    y_key: str = "hit_rate",
    marks: Optional[Mapping[str, Mapping[str, dict]]] = None,
    x_max: Optional[float] = None,
) -> Path:
    """One figure with a panel per split.

    Args:
        panels: split -> (method name -> sweep points).
        marks: split -> (method name -> point), optional.
        Others as :func:`plot_sweeps`.
    """
    n = max(1, len(panels))
    fig = Figure(figsize=(5.0 * n, 4.2))
    for i, (split, curves) in enumerate(panels.items()):
        _draw(fig.add_subplot(1, n, i + 1), curves, split, y_key,
              (marks or {}).get(split), x_max)
    fig.suptitle(title)
    return _save(fig, path)


def plot_training_curves(first_stage: Mapping[str, Mapping], second_stage: Optional[Mapping], path: str | Path) -> Path:
    """Validation curves of the demo's trainings, the best validation ringed.

    Args:
        first_stage: model name -> ``sepnms train`` summary (``history``: ``[{step, val_loss}]``,
            ``best_step``); one line per model in the left panel (validation loss).
        second_stage: the ``sepnms ground train`` summary (``history``: ``[{iter, val_accuracy}]``,
            ``best_iter``) or None; the right panel (ground-truth-box accuracy, %).
        path: output PNG (written atomically).
    """
    n = 2 if second_stage else 1
    fig = Figure(figsize=(5.5 * n, 4.2))
    ax = fig.add_subplot(1, n, 1)
    for name, s in first_stage.items():
        xs = [h["step"] for h in s["history"]]
        (line,) = ax.plot(xs, [h["val_loss"] for h in s["history"]], marker=".", linewidth=1.2, label=name)
        best = [h for h in s["history"] if h["step"] == s.get("best_step")]
        if best:
            ax.plot([best[0]["step"]], [best[0]["val_loss"]], marker="o", markersize=8, markerfacecolor="none",
                    color=line.get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss (BCE: ctx, + ref for Sep-NMS)")
    ax.set_title("first stage")
    ax.grid(True, alpha=0.3)
    if first_stage:
        ax.legend(fontsize="small")
    if second_stage:
        ax = fig.add_subplot(1, n, 2)
        hist = second_stage["history"]
        (line,) = ax.plot([h["iter"] for h in hist], [100 * h["val_accuracy"] for h in hist], marker=".",
                          linewidth=1.2, label="mattnet")
        best = [h for h in hist if h["iter"] == second_stage.get("best_iter")]
        if best:
            ax.plot([best[0]["iter"]], [100 * best[0]["val_accuracy"]], marker="o", markersize=8,
                    markerfacecolor="none", color=line.get_color())
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation accuracy, gt boxes (%)")
        ax.set_title("second stage (MAttNet)")
        ax.grid(True, alpha=0.3)
    fig.suptitle("validation curves (ring: best checkpoint, best.pt)")
    return _save(fig, path)
