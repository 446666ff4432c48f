"""``sepnms fuse``: a *method* is a scored candidate table (the output of ``propose`` for one model)
plus a fusion rule (:mod:`sepnms.models.fusion`); ``fuse`` writes ``<workdir>/fused/<method>/<split>.h5``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sepnms.config import Config
from sepnms.data.refdb import load_refdb
from sepnms.errors import ConfigError
from sepnms.io.proposals import proposals_path, read_proposals, write_proposals
from sepnms.models.fusion import fuse_table
from sepnms.workdir import fused_path, safe_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """``name``: how it is reported; ``model``: whose scored table; ``rule``: the fusion rule."""

    name: str
    model: str
    rule: str


#: the methods of metrics.json (issue specs); those whose scored tables exist are used
STANDARD_METHODS = (
    Method("det", "sepnms", "det"),
    Method("refnms", "refnms", "refnms"),
    Method("sepnms", "sepnms", "sep"),
    Method("sepnms_clipctx", "sepnms_clipctx", "sep"),
    Method("sepnms_clipctx_clipfuse", "sepnms_clipctx", "sep+clip"),
)


def parse_method(text: str) -> Method:
    """``name=model:rule`` or a standard method name."""
    for m in STANDARD_METHODS:
        if text == m.name:
            return m
    if "=" in text and ":" in text:
        name, rest = text.split("=", 1)
        model, rule = rest.split(":", 1)
        return Method(name, model, rule)
    raise ConfigError(f"unknown method {text!r}: use one of {[m.name for m in STANDARD_METHODS]} or name=model:rule")


def fuse(cfg: Config, method: Method, splits: Optional[list[str]] = None) -> dict[str, Path]:
    """Apply ``method.rule`` (with cfg.fusion's k, cut, NMS IoU) to the scored tables."""
    safe_name(method.name, "method name")
    safe_name(method.model, "model name")
    fcfg = cfg.fusion.model_copy(update={"rule": method.rule})
    out = {}
    for split in splits or cfg.evaluate.splits:
        source = proposals_path(cfg.workdir, method.model, split)
        refdb_path = Path(cfg.workdir) / "prepare" / "refdb.json"
        if not source.is_file() and refdb_path.is_file():  # a typo such as `tset`: say so, not "not found"
            load_refdb(refdb_path).check_splits([split], refdb_path)
        if source.with_name(source.stem + ".parts").is_dir() and source.is_file():
            log.warning("%s: a newer `sepnms propose` run of this split has not finished (%s.parts); fusing the "
                        "table of the earlier run", source, source.stem)
        table = read_proposals(source)
        fused = fuse_table(table, fcfg)
        fused.attrs["method"] = method.name
        path = fused_path(cfg, method.name, split)
        write_proposals(path, fused)
        out[split] = path
    return out


def available_methods(cfg: Config) -> list[Method]:
    """Standard methods whose scored tables exist for the first eval split."""
    split = cfg.evaluate.splits[0]
    return [m for m in STANDARD_METHODS if proposals_path(cfg.workdir, m.model, split).is_file()]
