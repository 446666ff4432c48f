"""``sepnms show``: qualitative figures of fused methods, one PNG per expression
(``<workdir>/show/<split>/<sent_id>.png``).

What each figure shows - the kept proposals exactly as ``evaluate`` counts them, their hits, the
second stage's answer where ``sepnms ground eval`` ran - is read by
:class:`sepnms.evaluation.outcomes.Evaluation`; the figures are drawn by
:mod:`sepnms.evaluation.figures`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from sepnms.config import Config
from sepnms.data.refdb import load_refdb
from sepnms.workdir import ground_dir
from sepnms.errors import ConfigError, InputError
from sepnms.evaluation.outcomes import SELECTIONS, Evaluation, resolve_methods, select
from sepnms.io.refer import split_matches
from sepnms.workdir import fused_path

log = logging.getLogger(__name__)


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
    evals = {s: Evaluation(cfg, methods, s, ground_dir(cfg), refdb) for s in splits}
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
