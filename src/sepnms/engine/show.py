"""``sepnms show``: qualitative figures of fused methods, one PNG per expression.

Per expression and method, the kept proposals are exactly those ``evaluate`` counts: the fused
table's candidates selected at the conf ``evaluate`` chose for that method and split
(``eval/metrics.json``); *hit* = a kept proposal with IoU > ``evaluate.hit_iou`` to the referent.
The figures are drawn by :mod:`sepnms.evaluation.figures`; ``sepnms gallery`` reuses this module.
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
from sepnms.data.refdb import RefDB, load_refdb
from sepnms.engine.evaluate import fused_path
from sepnms.errors import ConfigError, InputError
from sepnms.evaluation.figures import Panel, draw_expression
from sepnms.evaluation.metrics import box_iou, select_by_conf
from sepnms.io.proposals import ExpressionCandidates, read_proposals
from sepnms.io.refer import split_matches
from sepnms.rules import is_hit
from sepnms.workdir import safe_name

log = logging.getLogger(__name__)

SELECTIONS = ("all", "hits", "misses", "disagree")


@dataclass
class Outcome:
    """One method on one expression: ``kept`` [K] indices into its fused candidates by
    descending score, ``hit`` as evaluate counts it."""

    kept: np.ndarray
    hit: bool


class Evaluation:
    """The fused tables of ``methods`` on one split, with evaluate's confs, the GT and the
    context boxes: what a figure or a gallery card shows."""

    def __init__(self, cfg: Config, methods: list[str], split: str, refdb: Optional[RefDB] = None,
                 categories: Optional[dict[int, str]] = None, ctxdb: Optional[CtxDB] = None):
        from sepnms.engine.predict import category_names

        self.cfg, self.methods, self.split = cfg, list(methods), split
        self.refdb = refdb or load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
        self.categories = categories if categories is not None else category_names(cfg)
        self.ctxdb = ctxdb if ctxdb is not None else _ctxdb(cfg)
        metrics = load_metrics(cfg)
        self.confs: dict[str, float] = {}
        self.tables: dict[str, dict[int, ExpressionCandidates]] = {}
        for m in self.methods:
            safe_name(m, "method name")
            entry = (metrics.get(m) or {}).get(split)
            if not entry or entry.get("conf") is None:
                raise InputError(metrics_path(cfg), f"no conf for method {m!r} on split {split!r}: "
                                                    f"run `sepnms evaluate` with it first")
            self.confs[m] = float(entry["conf"])
            self.tables[m] = read_proposals(fused_path(cfg, m, split)).by_sent_id()
        self.expressions = [e for e in self.refdb.split(split) if all(int(e["sent_id"]) in t for t in self.tables.values())]

    def outcomes(self, e: dict[str, Any]) -> dict[str, Outcome]:
        gt = np.asarray(e["gt_box"], np.float64).reshape(1, 4)
        out = {}
        for m in self.methods:
            row = self.tables[m][int(e["sent_id"])]
            kept = select_by_conf(row.scores["score"], self.confs[m])
            hit = bool(len(kept)) and bool(is_hit(box_iou(row.box[kept], gt)[:, 0], self.cfg.evaluate.hit_iou).any())
            out[m] = Outcome(kept, hit)
        return out

    def panels(self, e: dict[str, Any], outcomes: Optional[dict[str, Outcome]] = None) -> list[Panel]:
        outcomes = outcomes or self.outcomes(e)
        panels = []
        for m in self.methods:
            row, o = self.tables[m][int(e["sent_id"])], outcomes[m]
            panels.append(Panel(m, row.box[o.kept], [self.categories.get(int(c), str(c)) for c in row.cls_idx[o.kept]],
                                row.scores["score"][o.kept], o.hit))
        return panels

    def ctx_boxes(self, e: dict[str, Any]) -> np.ndarray:
        return self.ctxdb.ctx_boxes(int(e["sent_id"])) if self.ctxdb is not None else np.zeros((0, 4), np.float32)

    def figure(self, e: dict[str, Any], out: Path, panel_px: int, dpi: int = 100, max_labels: int = 12,
               outcomes: Optional[dict[str, Outcome]] = None, title_px: int = 48, fontsize: float = 7.0) -> Path:
        image = load_image(self.cfg, self.refdb, int(e["image_id"]))
        return draw_expression(image, e["sent"], e["gt_box"], self.ctx_boxes(e), self.panels(e, outcomes), out,
                               panel_px=panel_px, title_px=title_px, dpi=dpi, fontsize=fontsize,
                               max_labels=max_labels)


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


def image_file(cfg: Config, refdb: RefDB, image_id: int) -> Path:
    name = refdb.images[int(image_id)].get("file_name") or f"COCO_train2014_{int(image_id):012d}.jpg"
    return cfg.images_dir() / name


def load_image(cfg: Config, refdb: RefDB, image_id: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB pixels of a dataset image (through the image gate, ``io.images.read_image``:
    ``images.max_pixels`` and the size the dataset records)."""
    from sepnms.io.images import read_image

    return read_image(image_file(cfg, refdb, image_id), max_pixels=cfg.images.max_pixels,
                      expect_size=refdb.image_size(image_id))


def resolve_methods(cfg: Config, methods: Optional[list[str]], splits: list[str]) -> list[str]:
    """Methods named explicitly must have fused tables on every split; the configured defaults
    are filtered to those that have them."""
    if methods:
        for m in methods:
            safe_name(m, "method name")
            for split in splits:
                if not fused_path(cfg, m, split).is_file():
                    raise InputError(fused_path(cfg, m, split), f"no fused table of method {m!r}: run `sepnms fuse` "
                                                                "and `sepnms evaluate` first")
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


def show(cfg: Config, methods: Optional[list[str]] = None, split: Optional[str] = None, n: Optional[int] = None,
         select_how: Optional[str] = None, ids: Optional[list[int]] = None, out_dir: Optional[Path] = None,
         progress: bool = True) -> list[Path]:
    """Write one figure per selected expression to ``<workdir>/show/<split>/<sent_id>.png``.

    Without ``ids``: the first ``n`` expressions of ``split`` (refdb order) that pass
    ``select_how``.  With ``ids``: those sent_ids (each from whichever evaluated split holds it),
    ``n`` and ``select_how`` ignored.  Returns the paths written.
    """
    from tqdm import tqdm

    sc = cfg.show
    split = split or sc.split or cfg.evaluate.splits[0]
    n = n or sc.n
    how = select_how or sc.select
    if how not in SELECTIONS:
        raise ConfigError(f"--select must be one of {list(SELECTIONS)}, not {how!r}")
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    todo: list[tuple[str, dict[str, Any]]] = []
    if ids:
        for sid in ids:
            e = refdb.by_sent.get(int(sid))
            if e is None:
                raise InputError(Path(cfg.workdir) / "prepare" / "refdb.json", f"no expression with sent_id {sid}")
            where = next((s for s in [split, *cfg.evaluate.splits] if split_matches(e["split"], s)), None)
            if where is None:
                raise InputError(None, f"sent_id {sid} is in split {e['split']!r}, which was not evaluated "
                                       f"({cfg.evaluate.splits})")
            todo.append((where, e))
        splits = sorted({s for s, _ in todo})
    else:
        splits = [split]
    methods = resolve_methods(cfg, methods, splits)
    evals = {s: Evaluation(cfg, methods, s, refdb) for s in splits}
    for s, e in todo:
        missing = [m for m in methods if int(e["sent_id"]) not in evals[s].tables[m]]
        if missing:
            raise InputError(fused_path(cfg, missing[0], s), f"no row for sent_id {e['sent_id']}")
    if not ids:
        ev = evals[split]
        for e in ev.expressions:
            if len(todo) >= n:
                break
            if select(ev.outcomes(e), methods, how):
                todo.append((split, e))
    out_dir = Path(out_dir) if out_dir else Path(cfg.workdir) / "show"
    written = []
    for s, e in tqdm(todo, desc="show", disable=not progress):
        ev = evals[s]
        written.append(ev.figure(e, out_dir / s / f"{int(e['sent_id'])}.png", sc.panel_px, sc.dpi, sc.max_labels))
    if not written:
        log.warning("no expression of %s passes --select %s", split, how)
    return written
