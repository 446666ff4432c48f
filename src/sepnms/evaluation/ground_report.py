"""The two-stage table: first-stage candidates -> second-stage (MAttNet) accuracy, with intervals."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from sepnms.evaluation.stats import paired_difference_ci


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _acc(m: Mapping[str, Any]) -> str:
    ci = m.get("downstream_accuracy_ci")
    band = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
    return f"{_pct(m['downstream_accuracy'])}{band}"


def two_stage_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]], splits: Sequence[str]) -> str:
    """Markdown: one row per first stage, per split the accuracy (%) with its 95 % interval."""
    head = "| first stage | " + " | ".join(f"{s}: accuracy % [95% CI] | {s}: candidates" for s in splits) + " |"
    rows = [head, "|---|" + "---:|---:|" * len(splits)]
    for name, per_split in results.items():
        cells = []
        for s in splits:
            m = per_split.get(s)
            cells += [_acc(m), f"{m['candidates_per_sentence']:.2f}"] if m else ["-", "-"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def paired_differences(hits: Mapping[str, Mapping[str, Mapping[int, float]]], pairs: Sequence[tuple[str, str]],
                       splits: Sequence[str]) -> str:
    """Markdown: per (A, B) pair and split, accuracy(A) - accuracy(B) on the same sentences with its
    paired bootstrap interval (significant when it excludes 0)."""
    rows = ["| comparison | " + " | ".join(f"{s}: difference (points) [95% CI]" for s in splits) + " |",
            "|---|" + "---:|" * len(splits)]
    for a, b in pairs:
        if a not in hits or b not in hits:
            continue
        cells = []
        for s in splits:
            ha, hb = hits[a].get(s), hits[b].get(s)
            if not ha or not hb:
                cells.append("-")
                continue
            keys = sorted(ha)
            d = paired_difference_ci([ha[k] for k in keys], [hb.get(k, 0.0) for k in keys])
            cells.append("-" if d is None else f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
        rows.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ground_section(results: Mapping[str, Mapping[str, Mapping[str, Any]]],
                   hits: Mapping[str, Mapping[str, Mapping[int, float]]], splits: Sequence[str],
                   pairs: Sequence[tuple[str, str]], summary: Optional[Mapping[str, Any]] = None) -> str:
    lines = ["## Two-stage results: first stage -> second-stage (MAttNet) accuracy", "",
             "Each sentence's candidates are scored by the MAttNet trained here on the annotated objects; the best "
             "one is its answer. Accuracy as MAttNet counts it, over every sentence of the split (an empty candidate "
             "set counts as wrong); 95 % percentile-bootstrap intervals over sentences. `gt`: the image's annotated "
             "objects, right when the chosen object is the referent (MAttNet's eval_easy; `grounding.gt_accuracy`); "
             "`mattnet_dets`: the detector's per-image detections (per-class NMS 0.3, score >= 0.65); the other "
             "rows: each first stage's kept proposals (the same proposals as the first-stage table); these right at "
             "IoU >= 0.5 with the referent (MAttNet's inclusive-pixel IoU, its detections with w = x2 - x1 + 1). "
             "`M@mattnet_dets`: first stage `M` at the budget of "
             "`mattnet_dets` (its conf chosen per split so that it keeps as many candidates per sentence as "
             "`mattnet_dets` has), so that a difference to `mattnet_dets` is a better ranking, not a longer list."]
    if summary:
        lines += ["", f"Second stage: {summary.get('iterations')} iterations, best validation accuracy (gt boxes) "
                      f"{_pct(summary.get('best_val_accuracy'))} % at iteration {summary.get('best_iter')}; "
                      f"attribute loss {'on' if summary.get('attribute_loss') else 'off (no attribute labels)'}."]
    lines += ["", two_stage_table(results, splits), "", "Paired differences (same sentences):", "",
              paired_differences(hits, pairs, splits)]
    return "\n".join(lines)
