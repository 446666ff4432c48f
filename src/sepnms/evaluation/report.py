"""The demo report: ``report.md`` (tables + curves) beside ``metrics.json``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional

from sepnms.evaluation import palette
from sepnms.evaluation.intervals import differences_table
from sepnms.io.atomic import atomic_write_text


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:.3g}"
    return str(v)


def _seconds(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def _rate(m: Mapping[str, Any], key: str) -> str:
    """``33.8 [29.1, 38.6]``: the rate with its 95 % interval when the entry has one."""
    ci = m.get(f"{key}_ci")
    text = _fmt(m.get(key))
    if ci and text != "-":
        text += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
    return text


def metrics_table(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]], split: str) -> str:
    rows = ["| method | n | hit rate (%) | proposals / expr | top-1 acc (%) | ctx recall (%) | conf |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, per_split in metrics.items():
        m = per_split.get(split)
        if not m:
            continue
        rows.append(f"| {name} | {m.get('n_expressions', '-')} | {_rate(m, 'hit_rate')} | "
                    f"{m['proposals_per_expression']:.2f} | {_rate(m, 'top1_accuracy')} | {_rate(m, 'ctx_recall')} | "
                    f"{_fmt(m['conf'], pct=False)} |")
    return "\n".join(rows)


def colour_key(methods: list[str]) -> str:
    """One line naming each method's colour (and dash) of the curves, ``show`` figures and gallery."""
    parts = []
    for m in methods:
        st = palette.method_style(m)
        parts.append(f"`{m}` {st.colour}" + ("" if st.dash is None else " dashed"))
    return ("Colours (the same in the curves, `sepnms show` figures and the gallery; colour-blind-safe, with a "
            "halo around every box): " + ", ".join(parts) + "; ground truth black dashes on a white halo, "
            "context objects white dots on a near-black halo.")


def equal_budget_table(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]], split: str) -> str:
    """Markdown: ``mattnet_dets`` and every ``M@mattnet_dets`` row of ``metrics`` on one split - hit
    rate, candidates per expression, conf and (when measured) the second stage's accuracy, each rate
    with its 95 % interval."""
    rows = ["| method | n | hit rate (%) | candidates / expr | conf | downstream accuracy (%) |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, per_split in metrics.items():
        m = per_split.get(split)
        if not m or not (name == "mattnet_dets" or name.endswith("@mattnet_dets")):
            continue
        rows.append(f"| {name} | {m.get('n_expressions', '-')} | {_rate(m, 'hit_rate')} | "
                    f"{m['proposals_per_expression']:.2f} | {_fmt(m.get('conf'), pct=False)} | "
                    f"{_rate(m, 'downstream_accuracy')} |")
    return "\n".join(rows)


def training_section(first_stage: Mapping[str, Mapping[str, Any]], second_stage: Optional[Mapping[str, Any]] = None,
                     image: Optional[str] = None) -> str:
    """Markdown: every training's validation curve and where its best checkpoint (``best.pt``) is.

    ``first_stage``: model name -> ``sepnms train`` summary; ``second_stage``: the ``sepnms ground
    train`` summary; ``image``: the PNG of :func:`sepnms.evaluation.plots.plot_training_curves`."""
    lines = ["## Training: validation curves", "",
             "Each training validates every `eval_every` steps and keeps the best weights as `best.pt` (lowest "
             "validation loss for the first stages, highest ground-truth-box accuracy for MAttNet); with a "
             "patience P it stops after P validations in a row without a new best, at the latest at its bound "
             "(`train.epochs`, `grounding.max_iters`). The proposals and the second stage use `best.pt`.", "",
             "| model | validations | steps run / bound | best checkpoint at | best | stopped |",
             "|---|---:|---:|---:|---:|---|"]

    def stopped(s: Mapping[str, Any]) -> str:
        if s.get("stopped_early"):
            return f"early ({s.get('early_stop_patience')} validations without a new best)"
        return "at its bound"

    for name, s in first_stage.items():
        nb = s.get("steps_per_epoch") or 0
        epoch = f" (epoch {s['best_step'] / nb:.0f})" if nb and s.get("best_step") is not None else ""
        lines.append(f"| {name} | {len(s['history'])} | {s['steps']} / {s.get('max_steps', '-')} | "
                     f"step {s.get('best_step', '-')}{epoch} | val loss {s['best_val_loss']:.4f} | {stopped(s)} |")
    if second_stage:
        s = second_stage
        lines.append(f"| mattnet | {len(s['history'])} | {s['iterations']} / {s.get('max_iters', '-')} | "
                     f"iteration {s['best_iter']} | val accuracy {_fmt(s['best_val_accuracy'])} % | {stopped(s)} |")
    lines += ["", "Validation loss of the first stages (bold: the best checkpoint):", ""]
    steps = sorted({h["step"] for s in first_stage.values() for h in s["history"]})
    lines += ["| step | " + " | ".join(first_stage) + " |", "|---:|" + "---:|" * len(first_stage)]
    for step in steps:
        cells = []
        for s in first_stage.values():
            h = next((h for h in s["history"] if h["step"] == step), None)
            cell = "-" if h is None else f"{h['val_loss']:.4f}"
            cells.append(f"**{cell}**" if h is not None and step == s.get("best_step") else cell)
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    if second_stage:
        lines += ["", "Validation accuracy of MAttNet on ground-truth boxes (%, bold: the best checkpoint):", "",
                  "| iteration | " + " | ".join(str(h["iter"]) for h in second_stage["history"]) + " |",
                  "|---|" + "---:|" * len(second_stage["history"]),
                  "| accuracy | " + " | ".join(
                      (f"**{_fmt(h['val_accuracy'])}**" if h["iter"] == second_stage["best_iter"]
                       else _fmt(h["val_accuracy"])) for h in second_stage["history"]) + " |"]
    if image:
        lines += ["", f"![validation curves]({image})"]
    return "\n".join(lines)


def write_report(
    path: Path, metrics: Mapping[str, Any], splits: list[str], target: float,
    world_summary: Optional[Mapping[str, Any]] = None, prepare_summary: Optional[Mapping[str, Any]] = None,
    ctx_quality: Optional[Mapping[str, Mapping[str, float]]] = None, timings: Optional[Mapping[str, float]] = None,
    images: Optional[list[str]] = None, extra_sections: Optional[list[str]] = None,
    pairs: Optional[Mapping[str, Mapping[str, Any]]] = None, cpu_timings: Optional[Mapping[str, float]] = None,
) -> None:
    lines = ["# Sep-NMS demo report", ""]
    lines += ["All numbers were measured in this run on the embedded world (synthetic images in the real "
              "RefCOCO / Ref-NMS / MAttNet file formats). They show that the pipeline works end to end; they "
              "are not RefCOCO results.", ""]
    if world_summary:
        lines += ["## Data", "", "| quantity | value |", "|---|---:|"]
        lines += [f"| world: {k} | {v} |" for k, v in world_summary.items() if isinstance(v, (int, float, str))]
        q = world_summary.get("quality")
        if isinstance(q, Mapping):
            lines.append(f"| world detector: box AP50 (COCOeval, this world's images, unseen in its training) | "
                         f"{q['box_ap50']:.3f} |")
            for attr, p in q.get("probes", {}).items():
                lines.append(f"| world detector C4: linear probe of {attr} (held-out images; majority "
                             f"{p['majority']:.2f}) | {p['accuracy']:.3f} |")
        if prepare_summary:
            for k, v in prepare_summary.items():
                if isinstance(v, dict):
                    v = ", ".join(f"{a}={(f'{b:.2f}' if isinstance(b, float) else b)}" for a, b in v.items())
                lines.append(f"| prepare: {k} | {v} |")
        lines.append("")
    lines += ["## First-stage results", "",
              f"Every method keeps about {target:g} proposals per expression: its `conf` is chosen per split so "
              "that the mean number of kept proposals is closest to that target (top-1 always kept, then "
              "score > conf). Hit rate: a kept proposal with IoU > 0.5 to the referent. Top-1: the "
              "highest-scoring proposal has IoU >= 0.5. Context recall: fraction of context objects (ctxdb) "
              "covered by kept proposals. Brackets: 95 % bootstrap interval (expressions resampled, fixed "
              "seed); n: expressions in the split.", ""]
    at_target = {k: v for k, v in metrics.items() if not k.endswith("@mattnet_dets")}
    if "mattnet_dets" in metrics:
        lines += ["`mattnet_dets`: MAttNet's own detections of the image (per-class NMS 0.3, score >= 0.65) as the "
                  "candidates of every expression of the image, ranked by detection score; it keeps its own "
                  "number of candidates (no conf).", ""]
    for split in splits:
        lines += [f"### {split}", "", metrics_table(at_target, split), ""]
    if any(k.endswith("@mattnet_dets") for k in metrics):
        lines += ["## Equal budget: every first stage at the candidates of MAttNet's detections", "",
                  "`M@mattnet_dets` is first stage `M` with its conf chosen per split so that it keeps as many "
                  "candidates per expression as `mattnet_dets` (the closest mean the fused scores allow), and the "
                  "second stage picks among them: a difference to `mattnet_dets` is then a better ranking, not a "
                  "longer list.", ""]
        for split in splits:
            lines += [f"### {split}", "", equal_budget_table(metrics, split), ""]
    if pairs:
        lines += ["## Paired differences", "",
                  "Method A - method B on the same expressions, in percentage points, with the 95 % interval of "
                  "the paired bootstrap; a difference whose interval contains 0 is not distinguishable from "
                  "noise at this size.", ""]
        for split in splits:
            lines += [f"### {split}", "", differences_table(pairs, split), ""]
    if ctx_quality:
        lines += ["## Context labels against the world's recorded mentions", "",
                  "| ctxdb | precision (%) | recall (%) |", "|---|---:|---:|"]
        for name, q in ctx_quality.items():
            lines.append(f"| {name} | {_fmt(q['precision'])} | {_fmt(q['recall'])} |")
        lines.append("")
    for section in extra_sections or []:
        lines += [section, ""]
    if images:
        lines += ["## Curves", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
        lines += [colour_key(list(metrics)), ""]
    if timings:
        cpu_timings = cpu_timings or {}
        lines += ["## Timings (this run)", "",
                  "Wall seconds grow when other programs share the cores; CPU seconds (all threads of this "
                  "process) measure the work.", "", "| stage | wall s | CPU s |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.1f} | {_seconds(cpu_timings.get(k))} |" for k, v in timings.items()] + [""]
    atomic_write_text(path, "\n".join(lines))
