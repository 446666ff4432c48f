"""``sepnms demo``: the whole method on the embedded world, then ``report.md`` + ``metrics.json``."""
from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from sepnms.config import Config, load_config
from sepnms.data.ctxdb import CtxDB, ctxdb_path, load_ctxdb, mention_precision_recall, save_ctxdb
from sepnms.evaluation.budget import AT_MATTNET_DETS, MATTNET_DETS
from sepnms.engine.encode_text import encode_text
from sepnms.engine.evaluate import evaluate
from sepnms.engine.export import export
from sepnms.engine.fuse import Method, fuse
from sepnms.engine.ground.evaluate import demo_second_stage
from sepnms.engine.look.gallery import gallery
from sepnms.data.head_features import features_check
from sepnms.data.refdb import load_refer
from sepnms.engine.prepare import prepare
from sepnms.engine.propose import propose
from sepnms.engine.train import train
from sepnms.evaluation.plots import plot_training_curves
from sepnms.evaluation.report import metrics_table, training_section, write_report
from sepnms.io.atomic import atomic_write_json
from sepnms.io.refer import xywh_to_xyxy
from sepnms.workdir import save_portable_config

log = logging.getLogger(__name__)

#: the methods of metrics.json
DEMO_METHODS = [
    Method("det", "sepnms", "det"),
    Method("refnms", "refnms", "refnms"),
    Method("sepnms", "sepnms", "sep"),
    Method("sepnms_clipctx", "sepnms_clipctx", "sep"),
    Method("sepnms_clipctx_clipfuse", "sepnms_clipctx", "sep+clip"),
]
#: the ablation: context labels {glove, clip} x fusion {refnms, sep, sep+clip} on the Sep-NMS model
ABLATION = [Method(f"ablation_{labels}_{rule}", model, rule)
            for labels, model in (("glove", "sepnms"), ("clip", "sepnms_clipctx"))
            for rule in ("refnms", "sep", "sep+clip")]


def mentions_ctxdb(cfg: Config, mentions: dict[int, dict]) -> CtxDB:
    """The world's ground-truth context objects as a ctxdb (for evaluation only)."""
    refer = load_refer(cfg)
    entries = {}
    for sid, m in mentions.items():
        ids = [int(a) for a in m["mentioned_ann_ids"]]
        entries[int(sid)] = {"ref_ann_ids": [int(m["referent_ann_id"])], "ctx_ann_ids": ids,
                             "ctx_boxes": [xywh_to_xyxy(refer.ann_by_id[a]["bbox"]) for a in ids], "scores": {}}
    return CtxDB("mentions", entries, {"source": "world mentions.json"})


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children: the work a stage
    did, which unlike wall time does not grow when other programs share the cores."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def demo_figures(cfg: Config, progress: bool = True) -> list[Path]:
    """``show.demo_n`` figures per evaluated split of the expressions on which the shown methods
    disagree (``show --select disagree``)."""
    from sepnms.engine.look.show import show

    if cfg.show.demo_n == 0:
        return []
    return [p for split in cfg.evaluate.splits
            for p in show(cfg, split=split, n=cfg.show.demo_n, select_how="disagree", progress=progress)]


def run_demo(workdir: Path, seed: int = 0, overrides: Optional[list[str]] = None, progress: bool = True) -> dict[str, Any]:
    """World -> prepare -> encode-text -> CLIP-dagger fine-tuning and context labels -> train
    Ref-NMS, Sep-NMS (GloVe labels) and Sep-NMS (CLIP labels) -> propose -> fuse -> evaluate ->
    export -> report.  Returns the metrics of ``<workdir>/metrics.json``."""
    from sepnms.clip.finetune import clip_finetune
    from sepnms.clip.labeller import clip_ctx
    from sepnms.engine.world import build_world
    from sepnms.world import load_mentions

    workdir = Path(workdir).resolve()
    overrides = list(overrides or [])
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kw):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        log.info("demo: %s", stage)
        result = fn(*args, **kw)
        timings[stage] = time.perf_counter() - t0
        cpu_timings[stage] = _cpu_seconds() - c0
        return result

    world_dir = workdir / "world"
    base = load_config("demo", overrides + [f"seed={seed}"])
    world_summary = timed("world", build_world, world_dir, base, seed, progress)
    common = overrides + [f"seed={seed}", f"workdir={workdir / 'work'}", "evaluate.ctx_source=mentions"]
    cfg = load_config(world_dir / "config.yaml", common)
    save_portable_config(cfg, workdir / "config.yaml")  # `sepnms show/predict/gallery -c <workdir>/config.yaml`
    cfg_clip = load_config(world_dir / "config.yaml", common + ["train.ctx_source=clip"])
    cfg_score = load_config(world_dir / "config.yaml", common + ["clip.score_proposals=true"])
    cfg_clip_score = load_config(world_dir / "config.yaml", common + ["train.ctx_source=clip", "clip.score_proposals=true"])

    prep = timed("prepare", prepare, cfg, overwrite=True, progress=progress)
    feats = timed("features from images", features_check, cfg, 4)  # features.source=images == h5 (issue 9)
    mentions = load_mentions(world_dir / "mentions.json")
    save_ctxdb(ctxdb_path(cfg.workdir, "mentions"), mentions_ctxdb(cfg, mentions))
    timed("encode-text", encode_text, cfg, overwrite=True, progress=progress)
    timed("clip-finetune", clip_finetune, cfg, overwrite=True, progress=progress)
    timed("clip-ctx", clip_ctx, cfg, overwrite=True, progress=progress)

    trainings: dict[str, dict[str, Any]] = {}
    for stage_cfg, model_type, score_cfg in ((cfg, "refnms", cfg), (cfg, "sepnms", cfg_score),
                                             (cfg_clip, "sepnms", cfg_clip_score)):
        name = f"{model_type}{'_clipctx' if stage_cfg.train.ctx_source == 'clip' else ''}"
        trainings[name] = timed(f"train {name}", train, stage_cfg, model_type, resume=False, progress=progress)
        timed(f"propose {name}", propose, score_cfg, model_type, progress=progress)
    for m in DEMO_METHODS + ABLATION:
        fuse(cfg, m)
    metrics = timed("evaluate", evaluate, cfg, [m.name for m in DEMO_METHODS + ABLATION], progress=progress,
                    plot_groups={"": [m.name for m in DEMO_METHODS], "ablation": [m.name for m in ABLATION]})
    exported = timed("export", export, cfg, "sepnms")

    quality = {source: mention_precision_recall(load_ctxdb(ctxdb_path(cfg.workdir, source)), mentions)
               for source in ("glove", "clip")}
    keys = ("hit_rate", "hit_rate_ci", "proposals_per_expression", "top1_accuracy", "top1_accuracy_ci",
            "ctx_recall", "ctx_recall_ci", "conf", "n_expressions")
    # the demo's methods, MAttNet's detections and every method at their budget (M@mattnet_dets), as
    # written (JSON-safe: the detections' conf is null)
    written = json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())
    names = [m.name for m in DEMO_METHODS]
    names += [n for n in [MATTNET_DETS] + [f"{m}{AT_MATTNET_DETS}" for m in names] if n in written]
    public = {name: {split: {k: v[k] for k in keys} for split, v in written[name].items()} for name in names}
    two_stage, ground_summary = timed("second stage", demo_second_stage, cfg, public, progress=progress)
    figures = timed("show", demo_figures, cfg, progress=progress)
    page = timed("gallery", gallery, cfg, progress=progress)
    atomic_write_json(workdir / "metrics.json", public, indent=2)
    images = []
    for png in sorted((Path(cfg.workdir) / "eval").glob("*.png")):
        shutil.copyfile(png, workdir / png.name)
        images.append(png.name)
    curves = plot_training_curves(trainings, ground_summary, workdir / "validation_curves.png")
    timings["total"] = sum(timings.values())
    cpu_timings["total"] = sum(cpu_timings.values())
    ablation = {m.name: metrics[m.name] for m in ABLATION}
    sections = ["## Ablation: context labels x fusion (Sep-NMS model)", "",
                "Rows are `ablation_<labels>_<rule>`: the Sep-NMS model trained on GloVe/spaCy or CLIP-dagger "
                "context labels, fused with the `refnms`, `sep` or `sep+clip` rule (CLIP-dagger scores of the "
                "proposal crops). Numbers as they came out of this run."]
    for split in cfg.evaluate.splits:
        sections += ["", f"### {split}", "", metrics_table(ablation, split)]
    sections += ["", "## Features from images", "", f"C4 maps of {feats['images']} images computed from the image "
                 f"files by the world's detector checkpoint vs its head-feature files: max abs difference "
                 f"{feats['max_abs_diff']:.2e} (`features.source: images` reads the same features)."]
    sections += ["", "Context recall is measured against the world's recorded mentions (ground truth). "
                 "MAttNet-style detections: " + ", ".join(f"`{p.relative_to(workdir)}`" for p in exported)]
    sections += ["", f"Gallery of the expressions (every expression drawn, outcome per method and of the second "
                 f"stage, filters, search): [{page.relative_to(workdir)}]({page.relative_to(workdir)}). "
                 f"`sepnms show --select disagree` figures ({len(figures)}, linked from their cards): "
                 + ", ".join(f"[{f.relative_to(workdir)}]({f.relative_to(workdir)})" for f in figures)]
    write_report(workdir / "report.md", {n: public[n] for n in names}, cfg.evaluate.splits,
                 cfg.evaluate.target_proposals, world_summary, prep, quality, timings, images,
                 [training_section(trainings, ground_summary, curves.name), two_stage, "\n".join(sections)],
                 cpu_timings=cpu_timings,
                 pairs=json.loads((Path(cfg.workdir) / "eval" / "paired_differences.json").read_text()))
    return public
