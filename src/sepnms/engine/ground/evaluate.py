"""``sepnms ground eval``: for every sentence, score a candidate set with the trained MAttNet and
pick the best box; accuracy as MAttNet counts it, with a bootstrap interval
(:mod:`sepnms.evaluation.ground_accuracy`): on ground-truth boxes the chosen object is the
referent (``eval_easy_utils``: ``pred_ann_id == ref ann_id``; ``grounding.gt_accuracy``), on
other candidates IoU >= 0.5 with the referent's box (inclusive pixels, ``eval_dets_utils``), a
detection of the detector entering as MAttNet's ``dets.json`` holds it (``w = x2 - x1 + 1``) and
a file's box as the file holds it.
Candidate sets (methods; :mod:`sepnms.engine.ground.candidates`): ``gt`` (the image's annotated
objects), ``mattnet_dets`` (the detector's per-image detections under MAttNet's rule), every
fused first-stage table in ``<workdir>/fused`` (kept proposals at the conf ``evaluate`` chooses)
and any detection file (``--dets``).  Also the demo's second stage (``demo_second_stage``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from sepnms.config import Config
from sepnms.distributed import resolve_device
from sepnms.engine.ground.candidates import candidate_sets
from sepnms.engine.ground.train import load_trained, train_grounding
from sepnms.errors import InputError
from sepnms.evaluation.budget import AT_MATTNET_DETS, MATTNET_DETS, Budgets, has_mattnet_dets
from sepnms.evaluation.ground_accuracy import accuracy_of
from sepnms.grounding.candidates import predict
from sepnms.grounding.data import GroundingData, VisualFeatures
from sepnms.io.atomic import atomic_write_json
from sepnms.io.schemas import check_dets_names, load_metrics, merge_rows
from sepnms.workdir import ground_dir, safe_name


def default_methods(cfg: Config) -> list[str]:
    """``gt``, ``mattnet_dets`` (when the detector's output is configured), every fused table ``M``
    and, with ``mattnet_dets`` and ``evaluate.mattnet_dets``, ``M@mattnet_dets``."""
    names = ["gt"]
    dets = has_mattnet_dets(cfg)
    if dets:
        names.append(MATTNET_DETS)
    fused = Path(cfg.workdir) / "fused"
    if fused.is_dir():
        fused_names = sorted(p.name for p in fused.iterdir() if p.is_dir())
        names += fused_names
        if dets and cfg.evaluate.mattnet_dets:
            names += [n + AT_MATTNET_DETS for n in fused_names]
    return names


def evaluate_grounding(cfg: Config, methods: Optional[list[str]] = None, splits: Optional[list[str]] = None,
                       dets: Optional[Iterable[str | Path]] = None, checkpoint: str = "best",
                       progress: bool = True) -> dict[str, dict[str, dict[str, Any]]]:
    """Second-stage accuracy per method and split.

    Writes ``<workdir>/ground/metrics.json``, ``<workdir>/ground/hits.json`` (``{method: {split:
    {sent_id: 0 or 1}}}``, for paired comparisons), one predictions file per (method, split) under
    ``<workdir>/ground/predictions/`` (``[{sent_id, box: [x, y, w, h]}]``, readable by
    ``sepnms downstream``), and merges ``downstream_accuracy`` / ``_ci`` / ``_n`` into the split
    entries of ``<workdir>/eval/metrics.json``.
    """
    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)})
    dets_files = {}
    for f in dets or []:
        p = Path(f)
        dets_files[safe_name(p.stem, "detection file name")] = p
    check_dets_names([Path(f) for f in dets or []], set(default_methods(cfg)) | set(methods or []) | {"gt", "mattnet_dets"})
    for p in dets_files.values():  # every file's schema before any work
        from sepnms.io.mattnet_dets import read_dets

        read_dets(p)
    names = list(methods or default_methods(cfg)) + [n for n in dets_files if n not in (methods or [])]
    splits = list(splits or cfg.evaluate.splits)
    net, vocab = load_trained(cfg, checkpoint)
    budgets = Budgets(cfg)
    data = GroundingData.open(cfg)
    feats = VisualFeatures(cfg, data, size=0)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    hits: dict[str, dict[str, dict[str, float]]] = {}
    pred_dir = ground_dir(cfg) / "predictions"
    for name in names:
        for split in splits:
            sets = candidate_sets(budgets, data, name, split, dets_files)
            chosen = predict(net, vocab, feats, data, sets, cfg, progress, desc=f"ground {name} {split}")
            m = accuracy_of(data, split, sets, chosen, cfg.grounding.gt_accuracy)
            hits.setdefault(name, {})[split] = dict(zip((str(s) for s in data.sent_ids(split)), m.pop("hits")))
            m["candidates_per_sentence"] = float(np.mean([len(s.boxes) for s in sets.values()])) if sets else 0.0
            results.setdefault(name, {})[split] = m
            atomic_write_json(pred_dir / f"{name}_{split}.json",
                              [{"sent_id": int(s), "box": sets[s].xywh(k)} for s, k in sorted(chosen.items()) if k is not None])
    earlier = load_metrics(ground_dir(cfg) / "metrics.json", "ground eval metrics", missing_ok=True)
    earlier_hits = load_metrics(ground_dir(cfg) / "hits.json", "ground eval hits", missing_ok=True)
    eval_metrics = load_metrics(Path(cfg.workdir) / "eval" / "metrics.json", "sepnms metrics", missing_ok=True)
    atomic_write_json(ground_dir(cfg) / "metrics.json", merge_rows(earlier, results), indent=2)
    atomic_write_json(ground_dir(cfg) / "hits.json", merge_rows(earlier_hits, hits))
    merge_into_metrics(Path(cfg.workdir) / "eval" / "metrics.json", results, eval_metrics)
    return results


def merge_into_metrics(path: Path, results: dict[str, dict[str, dict[str, Any]]],
                       metrics: Optional[dict[str, Any]] = None) -> None:
    """Add the downstream fields to each (method, split) entry of a metrics.json (created if absent;
    ``metrics``: its content, already read and checked)."""
    if metrics is None:
        metrics = load_metrics(path, "sepnms metrics", missing_ok=True)
    for name, per_split in results.items():
        for split, m in per_split.items():
            entry = metrics.setdefault(name, {}).setdefault(split, {})
            entry.update({k: m[k] for k in ("downstream_accuracy", "downstream_accuracy_ci", "downstream_n")})
    atomic_write_json(path, metrics, indent=2)


def load_hits(cfg: Config) -> dict[str, dict[str, dict[int, float]]]:
    path = ground_dir(cfg) / "hits.json"
    if not path.is_file():
        raise InputError(path, "not found: run `sepnms ground eval` first")
    raw = json.loads(path.read_text())
    return {m: {s: {int(k): float(v) for k, v in h.items()} for s, h in per.items()} for m, per in raw.items()}


#: the demo's comparisons of the two-stage table (Sep-NMS proposals against the detector's and Ref-NMS's)
DEMO_PAIRS = (("sepnms", "det"), ("sepnms", "refnms"), ("sepnms", "mattnet_dets"),
              ("sepnms@mattnet_dets", "mattnet_dets"), ("sepnms_clipctx_clipfuse", "sepnms"))


def demo_second_stage(cfg: Config, public: dict[str, Any], progress: bool = True) -> tuple[str, dict[str, Any]]:
    """The demo's second stage: train MAttNet once, score gt boxes, MAttNet's detections and each of
    ``public``'s first stages; add ``downstream_accuracy`` (+ ``_ci``, ``_n``) to ``public``'s split
    entries (and rows ``gt``, ``mattnet_dets``); return the report section and the training summary."""
    from sepnms.evaluation.ground_report import ground_section

    summary = train_grounding(cfg, resume=False, progress=progress)
    methods = ["gt", MATTNET_DETS] + [m for m in public if m not in ("gt", MATTNET_DETS)]
    results = evaluate_grounding(cfg, methods, progress=progress)
    for name, per_split in results.items():
        for split, m in per_split.items():
            public.setdefault(name, {}).setdefault(split, {}).update(
                {k: m[k] for k in ("downstream_accuracy", "downstream_accuracy_ci", "downstream_n")})
    return ground_section(results, load_hits(cfg), cfg.evaluate.splits, DEMO_PAIRS, summary), summary
