"""``sepnms export``: a fused method as MAttNet-style detection JSON (``<workdir>/export/``), at the
conf ``evaluate`` chose or the top N proposals of each expression."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sepnms.config import Config
from sepnms.engine.evaluate import table_sha256
from sepnms.errors import ConfigError, InputError
from sepnms.evaluation.export import to_matt_dets
from sepnms.io.mattnet_dets import matt_dets_filename, write_matt_dets
from sepnms.io.proposals import read_proposals
from sepnms.workdir import fused_path, safe_name


def export(cfg: Config, method: str, splits: Optional[list[str]] = None, top_n: Optional[int] = None,
           tag: str = "sepnms") -> list[Path]:
    """MAttNet-style detection JSON of ``method``.

    ``top_n`` (default ``evaluate.top_n_export``): 0 = conf-selected, at the conf ``evaluate``
    chose per split (top-1, then score > conf), named ``..._0.json`` as Ref-NMS names its
    conf-selected exports (run MAttNet with ``--top-N 0``: keep every entry); N > 0 = the N
    highest-scoring proposals of each expression, named ``..._N.json`` (no conf needed).
    """
    safe_name(method, "method name")
    safe_name(tag, "tag")
    from sepnms.data.refdb import load_refer

    top_n = top_n if top_n is not None else cfg.evaluate.top_n_export
    if top_n < 0:
        raise ConfigError(f"top-N of the export must be >= 0 (0 = conf-selected), got {top_n}")
    metrics: dict[str, Any] = {}
    metrics_path = Path(cfg.workdir) / "eval" / "metrics.json"
    if top_n == 0:
        if not metrics_path.is_file():
            raise InputError(metrics_path, "not found: run `sepnms evaluate` first (export uses its conf)")
        from sepnms.io.schemas import load_json

        metrics = load_json(metrics_path, "sepnms metrics")
        if not all(isinstance(v, dict) and all(isinstance(m, dict) and "conf" in m for m in v.values())
                   for v in metrics.values()):
            raise InputError(metrics_path, "expected {method: {split: {conf, ...}}} (written by `sepnms evaluate`)")
        if method not in metrics:
            raise InputError(metrics_path, f"no metrics for method {method!r} (have {sorted(metrics)})")
    refer = load_refer(cfg)
    coco_ids = sorted(refer.cat_name)
    if len(coco_ids) != 80:
        raise InputError(cfg.instances_path(), f"{len(coco_ids)} categories; the detector's 80 classes need all 80 COCO categories")
    dets: list[dict] = []
    for split in splits or cfg.evaluate.splits:
        path = fused_path(cfg, method, split)
        if top_n == 0:
            if split not in metrics[method] or metrics[method][split].get("conf") is None:
                raise InputError(metrics_path, f"no metrics for split {split!r} of method {method!r} (have "
                                               f"{sorted(metrics[method])}): evaluate that split first")
            recorded = metrics[method][split].get("fused_table_sha256")
            if recorded is not None and path.is_file() and table_sha256(path) != recorded:
                raise InputError(path, f"changed since `sepnms evaluate` chose conf {metrics[method][split]['conf']} "
                                       f"for it (re-fused with other settings?): {metrics_path} belongs to another "
                                       "table; re-run `sepnms evaluate`")
            picked = dict(top_n=None, conf=metrics[method][split]["conf"])
        else:
            picked = dict(top_n=top_n, conf=None)
        table = read_proposals(path)
        dets.extend(to_matt_dets(table, None, coco_ids, refer.cat_name, split, start_det_id=len(dets), **picked))
    path = Path(cfg.workdir) / "export" / matt_dets_filename(method, tag, cfg.dataset, cfg.split_by, top_n)
    write_matt_dets(path, dets)
    return [path]
