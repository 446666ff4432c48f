"""``sepnms demo``: the whole method on the embedded world, then ``report.md`` + ``metrics.json``."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from sepnms.config import load_config
from sepnms.data.ctxdb import ctxdb_path, load_ctxdb, mention_precision_recall
from sepnms.engine.encode_text import encode_text
from sepnms.engine.evaluate import Method, evaluate, export, fuse
from sepnms.engine.prepare import prepare
from sepnms.engine.propose import propose
from sepnms.engine.train import train
from sepnms.evaluation.report import write_report
from sepnms.io.atomic import atomic_write_json

log = logging.getLogger(__name__)

DEMO_METHODS = [Method("det", "sepnms", "det"), Method("refnms", "refnms", "refnms"), Method("sepnms", "sepnms", "sep")]


def run_demo(workdir: Path, seed: int = 0, overrides: Optional[list[str]] = None, progress: bool = True) -> dict[str, Any]:
    """World -> prepare -> encode-text -> train Ref-NMS and Sep-NMS -> propose -> fuse -> evaluate
    -> export -> report.  Returns the metrics dict (also ``<workdir>/metrics.json``)."""
    from sepnms.data.world import generate_world, load_mentions

    workdir = Path(workdir).resolve()
    overrides = list(overrides or [])
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kw):
        t0 = time.perf_counter()
        log.info("demo: %s", stage)
        result = fn(*args, **kw)
        timings[stage] = time.perf_counter() - t0
        return result

    world_dir = workdir / "world"
    base = load_config("demo", overrides + [f"seed={seed}"])
    world_summary = timed("world", generate_world, world_dir, base, seed, progress)
    cfg = load_config(world_dir / "config.yaml", overrides + [f"seed={seed}", f"workdir={workdir / 'work'}"])
    prep = timed("prepare", prepare, cfg, overwrite=True, progress=progress)
    timed("encode-text", encode_text, cfg, overwrite=True, progress=progress)
    for model_type in ("refnms", "sepnms"):
        timed(f"train {model_type}", train, cfg, model_type, resume=False, progress=progress)
        timed(f"propose {model_type}", propose, cfg, model_type, progress=progress)
    for m in DEMO_METHODS:
        timed(f"fuse {m.name}", fuse, cfg, m)
    metrics = timed("evaluate", evaluate, cfg, [m.name for m in DEMO_METHODS], progress=progress)
    exported = timed("export", export, cfg, "sepnms")

    mentions = load_mentions(world_dir / "mentions.json")
    quality = {"glove": mention_precision_recall(load_ctxdb(ctxdb_path(cfg.workdir, "glove")), mentions)}
    public = {name: {split: {k: v[k] for k in ("hit_rate", "proposals_per_expression", "top1_accuracy", "ctx_recall", "conf")}
                     for split, v in per.items()} for name, per in metrics.items()}
    atomic_write_json(workdir / "metrics.json", public, indent=2)
    images = []
    for png in sorted((Path(cfg.workdir) / "eval").glob("*.png")):
        shutil.copyfile(png, workdir / png.name)
        images.append(png.name)
    timings["total"] = sum(timings.values())
    write_report(workdir / "report.md", metrics, cfg.evaluate.splits, cfg.evaluate.target_proposals,
                 world_summary, prep, quality, timings, images,
                 [f"MAttNet-style detections: `{p.relative_to(workdir)}`" for p in exported])
    return public
