"""``sepnms evaluate``: the fused methods (:mod:`sepnms.engine.fuse`) against the ground truth.

For every method and split it picks the conf that leaves about ``evaluate.target_proposals``
proposals per expression (the same target for every method), and writes ``eval/metrics.json``,
``eval/sweeps.json`` and one PNG of hit rate vs proposals per expression per split.
"""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Optional

from sepnms.config import Config
from sepnms.data.ctxdb import ctxdb_path, load_ctxdb
from sepnms.data.refdb import load_refdb
from sepnms.errors import InputError
from sepnms.evaluation.budget import AT_MATTNET_DETS, MATTNET_DETS, Budgets, has_mattnet_dets
from sepnms.evaluation.intervals import DEFAULT_PAIRS, paired_differences, with_intervals
from sepnms.evaluation.metrics import conf_sweep, expression_outcomes, outcome_means, sweep_confs
from sepnms.evaluation.plots import plot_many
from sepnms.evaluation.released import dets_outcomes, group_by_expression
from sepnms.io.atomic import atomic_write_json
from sepnms.io.mattnet_dets import read_dets
from sepnms.io.proposals import read_proposals
from sepnms.workdir import fused_path

log = logging.getLogger(__name__)


def evaluate(cfg: Config, methods: Optional[list[str]] = None, progress: bool = True,
             plot_groups: Optional[dict[str, list[str]]] = None,
             dets: Optional[list[str | Path]] = None) -> dict[str, Any]:
    """Evaluate fused tables; returns metrics ``{method: {split: {...}}}`` (also written).

    Every rate comes with its 95 % bootstrap interval ``<rate>_ci: [low, high]`` (resampling the
    split's expressions, ``evaluate.bootstrap_samples`` draws, seed ``evaluate.bootstrap_seed``),
    and ``eval/paired_differences.json`` holds ``{"A - B": {split: {rate: {diff, low, high}}}}``
    for the pairs of :data:`~sepnms.evaluation.intervals.DEFAULT_PAIRS` that were evaluated.

    ``plot_groups`` maps a suffix to the methods drawn together (default: all in one figure),
    e.g. ``{"": [...], "ablation": [...]}`` -> ``hit_rate_vs_proposals.png`` and
    ``hit_rate_vs_proposals_ablation.png``.

    ``dets``: MAttNet-style detection files (released ones, Ref-NMS's exporter output, our
    ``export``) evaluated beside the fused tables, each under its file stem, for every split of
    ``evaluate.splits`` it holds (``sepnms.evaluation.released``), with the same intervals; their
    ``conf`` is null (the file is the selection).  With ``dets`` and no fused table, only the
    files are evaluated.

    Equal budget (``evaluate.mattnet_dets``, when ``paths.rpn_boxes`` / ``rpn_box_scores`` are set):
    ``mattnet_dets`` - MAttNet's per-image detections as the candidates of every expression of the
    image - is evaluated as a method, and every fused method ``M`` also as ``M@mattnet_dets``: its
    proposals at the conf that keeps, per split, as many proposals per expression as
    ``mattnet_dets`` has (:mod:`sepnms.evaluation.budget`).
    """
    ev = cfg.evaluate
    refdb_path = Path(cfg.workdir) / "prepare" / "refdb.json"
    refdb = load_refdb(refdb_path)
    refdb.check_splits(ev.splits, refdb_path, "evaluate.splits")
    source = cfg.train.ctx_source if ev.ctx_source == "train" else ev.ctx_source
    ctxdb = load_ctxdb(ctxdb_path(cfg.workdir, source))
    names = methods or sorted(p.name for p in (Path(cfg.workdir) / "fused").glob("*") if p.is_dir())
    if not names and not dets:
        raise InputError(Path(cfg.workdir) / "fused", "no fused tables: run `sepnms fuse` first")
    files = _read_det_files(dets or [], refdb, taken=set(names))
    budgets = Budgets(cfg, refdb)
    equal_budget = ev.mattnet_dets and has_mattnet_dets(cfg) and MATTNET_DETS not in files
    metrics: dict[str, dict[str, Any]] = {}
    sweeps: dict[str, dict[str, Any]] = {}
    pairs: dict[str, dict[str, Any]] = {}
    for split in ev.splits:
        outcomes = {}
        gt = refdb.gt_by_sent(split)
        ctx = ctxdb.ctx_by_sent(gt.keys())
        for name in names:
            path = fused_path(cfg, name, split)
            table = read_proposals(path)
            check_table_covers(table, gt, path, split, refdb_path)
            sha = table_sha256(path)  # export refuses a conf of another table
            for row in [name] + ([name + AT_MATTNET_DETS] if equal_budget else []):
                conf = budgets.selection_conf(table, row, split)
                outcomes[row] = expression_outcomes(table, gt, ctx, conf, ev.hit_iou)
                m = outcome_means(outcomes[row], conf)
                metrics.setdefault(row, {})[split] = with_intervals(
                    {**{k: m[k] for k in METRIC_KEYS}, "fused_table_sha256": sha}, outcomes[row], ev.bootstrap_seed,
                    ev.bootstrap_samples)
            sweeps.setdefault(split, {})[name] = conf_sweep(table, gt, ctx, sweep_confs(table, ev.conf_grid_size), ev.hit_iou)
        # the expressions in the order of the proposal tables (by image, then refdb order), so the
        # means add up in the same order and an export of a fused table scores exactly as above
        gt_in_table_order = {int(e["sent_id"]): gt[int(e["sent_id"])]
                             for exprs in refdb.by_image(split).values() for e in exprs}
        detections = dict(files)
        if equal_budget:
            detections[MATTNET_DETS] = budgets.dets.by_sent(refdb, split)
        for name, by_sent in detections.items():
            if not any(s in by_sent for s in gt):
                continue  # the file holds no expression of this split
            outcomes[name] = dets_outcomes(by_sent, gt_in_table_order, ctx, ev.hit_iou)
            m = outcome_means(outcomes[name], float("nan"))
            metrics.setdefault(name, {})[split] = with_intervals(
                {k: m[k] for k in METRIC_KEYS}, outcomes[name], ev.bootstrap_seed, ev.bootstrap_samples)
            sweeps.setdefault(split, {})[name] = [m]  # one point: the file is one selection
        for a, b in DEFAULT_PAIRS:
            if a in outcomes and b in outcomes:
                pairs.setdefault(f"{a} - {b}", {})[split] = paired_differences(
                    outcomes[a], outcomes[b], ev.bootstrap_seed, ev.bootstrap_samples)
    for name, path in zip(files, dets or []):
        if name not in metrics:
            raise InputError(path, f"holds no expression of evaluate.splits {list(ev.splits)}")
    names = names + list(files) + ([MATTNET_DETS] if equal_budget else [])
    out = Path(cfg.workdir) / "eval"
    atomic_write_json(out / "metrics.json", _json_safe(metrics), indent=2)
    atomic_write_json(out / "paired_differences.json", _json_safe(pairs), indent=2)
    atomic_write_json(out / "sweeps.json", _json_safe(sweeps))
    for suffix, group in (plot_groups or {"": names}).items():
        tail = f"_{suffix}" if suffix else ""
        panels = {split: {n: sweeps[split][n] for n in group if n in sweeps.get(split, {})} for split in ev.splits}
        marks = {split: {n: metrics[n][split] for n in group if split in metrics.get(n, {})} for split in ev.splits}
        for key, title in (("hit_rate", "referent hit rate"), ("ctx_recall", "context recall")):
            plot_many(panels, out / f"{key}_vs_proposals{tail}.png", f"{cfg.dataset_tag}: {title}",
                      y_key=key, marks=marks, x_max=max(3 * ev.target_proposals, 10))
    return metrics


#: the per-split keys of metrics.json shared by fused tables and detection files (before the intervals)
METRIC_KEYS = ("hit_rate", "proposals_per_expression", "top1_accuracy", "ctx_recall", "conf", "n_expressions")


def _read_det_files(paths: list[str | Path], refdb, taken: set[str]) -> dict[str, dict[int, list[dict]]]:
    """{method name (file stem, made unique): {sent_id: ranked entries}} of each detection file."""
    split_of = {int(e["sent_id"]): str(e["split"]) for e in refdb.expressions}
    out: dict[str, dict[int, list[dict]]] = {}
    for path in map(Path, paths):
        name, k = path.stem, 2
        while name in taken or name in out:
            name, k = f"{path.stem}_{k}", k + 1
        out[name] = group_by_expression(read_dets(path), path, split_of)
    return out


def table_sha256(path: Path) -> str:
    """sha256 of a fused table's bytes: ties the conf chosen by ``evaluate`` to the table it was
    chosen for (a re-fuse with other settings changes the table, and the conf no longer applies)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_table_covers(table, gt: dict, path: Path, split: str, refdb_path: Path) -> None:
    """InputError unless the table's expressions are exactly the split's expressions of the refdb:
    a table of another dataset or work directory would be scored against the wrong ground truth."""
    ids = {int(e.sent_id) for e in table.expressions}
    unknown, missing = sorted(ids - set(gt)), sorted(set(gt) - ids)
    if unknown or missing:
        detail = (f"{len(unknown)} of its {len(ids)} expressions are not in split {split!r} of {refdb_path} "
                  f"(e.g. sent_id {unknown[0]})" if unknown else
                  f"it lacks {len(missing)} of the {len(gt)} expressions of split {split!r} (e.g. sent_id {missing[0]})")
        raise InputError(path, f"{detail}: a table of another dataset or work directory? Re-run `sepnms propose` "
                               "and `sepnms fuse` here")


def _json_safe(obj: Any) -> Any:
    """NaN -> None so the JSON is standard."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
