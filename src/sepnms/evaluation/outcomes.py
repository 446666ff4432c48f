"""What ``evaluate`` counted, read back for the figures (``sepnms show``, ``sepnms gallery``,
``sepnms.Predictor``).

Per expression and method, the kept proposals are exactly those ``evaluate`` counts: the fused
table's candidates selected at the conf ``evaluate`` chose for that method and split
(``eval/metrics.json``); *hit* = a kept proposal with IoU > ``evaluate.hit_iou`` to the referent.
A method ``M@X`` of metrics.json (method M at another operating point, e.g. the equal-budget rows
``sepnms@mattnet_dets``) reads M's fused table at its own conf.  Where ``sepnms ground eval`` has
run, each method's second-stage answer (``ground/predictions/<method>_<split>.json``) and its
outcome (``ground/hits.json``) come with it (``Evaluation``, ``Outcome``).  Also: which methods
were evaluated (``resolve_methods``, ``evaluated_methods``), their confs (``load_metrics``,
``method_conf``), the ``--select`` filter and the category names the figures print.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sepnms.config import Config
from sepnms.data.ctxdb import CtxDB, ctxdb_path, load_ctxdb
from sepnms.data.images import load_image
from sepnms.data.refdb import RefDB, load_refdb
from sepnms.errors import ConfigError, InputError, SepNMSError
from sepnms.evaluation.figures import Panel, draw_expression
from sepnms.evaluation.metrics import box_iou, select_by_conf
from sepnms.evaluation.palette import base_method
from sepnms.io.proposals import ExpressionCandidates, read_proposals
from sepnms.rules import is_hit
from sepnms.workdir import fused_path, safe_name

log = logging.getLogger(__name__)

SELECTIONS = ("all", "hits", "misses", "disagree")


@dataclass
class Outcome:
    """One method on one expression: ``kept`` [K] indices into its fused candidates by
    descending score, ``hit`` as evaluate counts it; ``pick``: the row of ``kept`` the second
    stage chose (None: no second stage, or its answer is not among the kept boxes), ``pick_hit``:
    the second stage's outcome (None: it did not run for this method)."""

    kept: np.ndarray
    hit: bool
    pick: Optional[int] = None
    pick_hit: Optional[bool] = None


class Evaluation:
    """The fused tables of ``methods`` on one split, with evaluate's confs, the GT and the
    context boxes: what a figure or a gallery card shows.  ``ground``: the second stage's folder
    (``<workdir>/ground``), read by :func:`second_stage`."""

    def __init__(self, cfg: Config, methods: list[str], split: str, ground: Path, refdb: Optional[RefDB] = None,
                 categories: Optional[dict[int, str]] = None, ctxdb: Optional[CtxDB] = None):
        self.cfg, self.methods, self.split = cfg, list(methods), split
        self.refdb = refdb or load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
        self.categories = categories if categories is not None else category_names(cfg)
        self.ctxdb = ctxdb if ctxdb is not None else _ctxdb(cfg)
        metrics = load_metrics(cfg)
        self.confs: dict[str, float] = {}
        self.tables: dict[str, dict[int, ExpressionCandidates]] = {}
        for m in self.methods:
            method_name(m)
            entry = (metrics.get(m) or {}).get(split)
            if not entry or entry.get("conf") is None:
                raise InputError(metrics_path(cfg), f"no conf for method {m!r} on split {split!r}: "
                                                    f"run `sepnms evaluate` with it first")
            self.confs[m] = float(entry["conf"])
            base = base_method(m)
            if base not in self.tables:
                self.tables[base] = read_proposals(fused_path(cfg, base, split)).by_sent_id()
        self.expressions = [e for e in self.refdb.split(split) if all(int(e["sent_id"]) in t for t in self.tables.values())]
        self.picks, self.pick_hits = second_stage(ground, self.methods, split)

    def table(self, method: str) -> dict[int, ExpressionCandidates]:
        """The fused table a method reads (``M@X``: M's)."""
        return self.tables[base_method(method)]

    def outcomes(self, e: dict[str, Any]) -> dict[str, Outcome]:
        gt = np.asarray(e["gt_box"], np.float64).reshape(1, 4)
        out = {}
        sid = int(e["sent_id"])
        for m in self.methods:
            row = self.table(m)[sid]
            kept = select_by_conf(row.scores["score"], self.confs[m])
            hit = bool(len(kept)) and bool(is_hit(box_iou(row.box[kept], gt)[:, 0], self.cfg.evaluate.hit_iou).any())
            pick = None
            answer = self.picks.get(m, {}).get(sid)
            if answer is not None and len(kept):
                iou = box_iou(row.box[kept], np.asarray(answer, np.float64).reshape(1, 4))[:, 0]
                pick = int(np.argmax(iou)) if iou.max() >= PICK_MATCH_IOU else None
            ph = self.pick_hits.get(m, {}).get(sid)
            out[m] = Outcome(kept, hit, pick, None if ph is None else bool(ph))
        return out

    def panels(self, e: dict[str, Any], outcomes: Optional[dict[str, Outcome]] = None) -> list[Panel]:
        outcomes = outcomes or self.outcomes(e)
        panels = []
        for m in self.methods:
            row, o = self.table(m)[int(e["sent_id"])], outcomes[m]
            panels.append(Panel(m, row.box[o.kept], [self.categories.get(int(c), str(c)) for c in row.cls_idx[o.kept]],
                                row.scores["score"][o.kept], o.hit, pick=o.pick, pick_hit=o.pick_hit))
        return panels

    def ctx_boxes(self, e: dict[str, Any]) -> np.ndarray:
        return self.ctxdb.ctx_boxes(int(e["sent_id"])) if self.ctxdb is not None else np.zeros((0, 4), np.float32)

    def figure(self, e: dict[str, Any], out: Path, panel_px: int, dpi: int = 100, max_labels: int = 12,
               outcomes: Optional[dict[str, Outcome]] = None, title_px: int = 48, fontsize: float = 7.0) -> Path:
        image = load_image(self.cfg, self.refdb, int(e["image_id"]))
        return draw_expression(image, e["sent"], e["gt_box"], self.ctx_boxes(e), self.panels(e, outcomes), out,
                               panel_px=panel_px, title_px=title_px, dpi=dpi, fontsize=fontsize,
                               max_labels=max_labels, heading=f"{self.split} - sent_id {int(e['sent_id'])}")


#: a second-stage answer is the kept proposal it overlaps most when their IoU reaches this (the
#: answer is one of the kept boxes; the predictions file stores it as xywh floats)
PICK_MATCH_IOU = 0.99


def second_stage(ground: Path, methods: list[str], split: str) -> tuple[dict[str, dict[int, list[float]]],
                                                                        dict[str, dict[int, float]]]:
    """(answers, outcomes) of ``sepnms ground eval`` for ``methods`` on ``split``: ``answers[m]``
    sent_id -> xyxy box (from ``ground/predictions/<m>_<split>.json``), ``outcomes[m]`` sent_id ->
    1.0 / 0.0 (``ground/hits.json``); methods the second stage did not score are absent.  ``ground``:
    the second stage's folder (``<workdir>/ground``)."""
    root = Path(ground)
    answers: dict[str, dict[int, list[float]]] = {}
    outcomes: dict[str, dict[int, float]] = {}
    hits_path = root / "hits.json"
    hits = _read_json(hits_path) if hits_path.is_file() else {}
    for m in methods:
        path = root / "predictions" / f"{m}_{split}.json"
        if path.is_file():
            try:
                answers[m] = {int(p["sent_id"]): [float(p["box"][0]), float(p["box"][1]),
                                                  float(p["box"][0]) + float(p["box"][2]),
                                                  float(p["box"][1]) + float(p["box"][3])] for p in _read_json(path)}
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise InputError(path, f"not a predictions file ([{{sent_id, box: [x, y, w, h]}}]): {exc!r}") from None
        per = (hits.get(m) or {}).get(split) if isinstance(hits, dict) else None
        if per:
            outcomes[m] = {int(k): float(v) for k, v in per.items()}
    return answers, outcomes


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


def method_name(name: str) -> str:
    """``name`` if it is a safe method name, ``M`` or ``M@X`` with both parts safe file names."""
    for part in name.split("@", 1):
        safe_name(part, "method name")
    return name


def metrics_path(cfg: Config) -> Path:
    return Path(cfg.workdir) / "eval" / "metrics.json"


def load_metrics(cfg: Config) -> dict[str, Any]:
    path = metrics_path(cfg)
    if not path.is_file():
        raise InputError(path, "not found: run `sepnms evaluate` first (the figures keep what it counts)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


def _ctxdb(cfg: Config) -> Optional[CtxDB]:
    """The context boxes evaluate measures against (``evaluate.ctx_source``), None if absent."""
    ev = cfg.evaluate
    source = cfg.train.ctx_source if ev.ctx_source == "train" else ev.ctx_source
    path = ctxdb_path(cfg.workdir, source)
    if not Path(path).is_file():
        log.warning("no ctxdb at %s: context objects are not marked", path)
        return None
    return load_ctxdb(path)


def resolve_methods(cfg: Config, methods: Optional[list[str]], splits: list[str]) -> list[str]:
    """Methods named explicitly must have fused tables on every split; the configured defaults
    are filtered to those that have them."""
    if methods:
        for m in methods:
            method_name(m)
            for split in splits:
                if not fused_path(cfg, base_method(m), split).is_file():
                    raise InputError(fused_path(cfg, base_method(m), split),
                                     f"no fused table of method {base_method(m)!r}: run `sepnms fuse` and "
                                     "`sepnms evaluate` first")
        return list(methods)
    have = [m for m in cfg.show.methods if all(fused_path(cfg, m, s).is_file() for s in splits)]
    if not have:
        raise InputError(Path(cfg.workdir) / "fused", f"none of the methods {cfg.show.methods} has fused tables "
                                                      f"for {splits}: run `sepnms fuse` and `sepnms evaluate` first")
    return have


def select(outcomes: dict[str, Outcome], methods: list[str], how: str) -> bool:
    """Whether an expression passes ``--select`` (see ``ShowConfig.select``)."""
    if how == "all":
        return True
    last = outcomes[methods[-1]].hit
    if how == "hits":
        return last
    if how == "misses":
        return not last
    if how == "disagree":
        return len({o.hit for o in outcomes.values()}) > 1
    raise ConfigError(f"--select must be one of {list(SELECTIONS)}, not {how!r}")


def category_names(cfg: Config) -> dict[int, str]:
    """Detector class index (1..80) -> COCO category name (``instances.json``, categories sorted
    by id, as ``export`` maps them); ``class <i>`` when the file is not available."""
    from sepnms.io.refer import load_instances

    try:
        cats = load_instances(cfg.instances_path())["categories"]
    except (SepNMSError, OSError):
        return {i: f"class {i}" for i in range(1, 81)}
    by_id = {int(c["id"]): str(c["name"]) for c in cats}
    return {i + 1: by_id[cid] for i, cid in enumerate(sorted(by_id))}


def method_conf(cfg: Config, method: str, split: Optional[str] = None) -> Optional[float]:
    """The conf ``evaluate`` chose for ``method`` (on ``split``, default the first eval split), or
    None when ``<workdir>/eval/metrics.json`` has none."""
    path = metrics_path(cfg)
    if not path.is_file():
        return None
    try:
        per_split = json.loads(path.read_text()).get(method) or {}
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    entry = per_split.get(split or cfg.evaluate.splits[0]) or next(iter(per_split.values()), None)
    return None if not entry or entry.get("conf") is None else float(entry["conf"])


def evaluated_methods(cfg: Config, metrics: dict[str, Any], splits: list[str]) -> list[str]:
    """Every method of metrics.json that evaluate scored on all ``splits`` (a conf per split) and
    whose fused table exists - ``M@X`` rows included (they read M's table), in metrics.json's
    order."""
    out = []
    for name, per_split in metrics.items():
        if not isinstance(per_split, dict):
            continue
        try:
            method_name(name)
        except ConfigError:  # not a method name: nothing to draw
            continue
        if all(isinstance(per_split.get(s), dict) and per_split[s].get("conf") is not None
               and fused_path(cfg, base_method(name), s).is_file() for s in splits):
            out.append(name)
    return out
