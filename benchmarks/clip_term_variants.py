"""Item 3 of issue 12: which CLIP term makes ``sep+clip`` useful?  Re-fuses a demo run's scored
tables of the Sep-NMS model trained on CLIP labels (``proposals/sepnms_clipctx``, which carry
``clip_score`` and ``clip_cos``) with each variant, in memory, and prints hit rate / top-1 /
context recall with 95 % bootstrap intervals and the paired difference of each variant against
``sep`` (no CLIP term) - the demo's own conf rule (target proposals per expression) for every one.

    python benchmarks/clip_term_variants.py DEMO_WORKDIR      # e.g. demo_out (a finished `sepnms demo`)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sepnms.config import load_config
from sepnms.data.ctxdb import ctxdb_path, load_ctxdb
from sepnms.data.refdb import load_refdb
from sepnms.models.fusion import fuse_table
from sepnms.evaluation.intervals import paired_differences, with_intervals
from sepnms.evaluation.metrics import choose_conf, expression_outcomes
from sepnms.io.proposals import proposals_path, read_proposals

VARIANTS = {
    "sep (no CLIP term)": ["fusion.rule=sep"],
    "sep+clip, softmax over all candidates": ["fusion.rule=sep+clip", "fusion.clip_term=candidates"],
    "sep+clip, objects: det>=0.3, NMS 0.5": ["fusion.rule=sep+clip", "fusion.clip_term=objects"],
    "sep+clip, objects: det>=0.5, NMS 0.5": ["fusion.rule=sep+clip", "fusion.clip_term=objects",
                                             "fusion.clip_object_det=0.5"],
    "sep+clip, objects: det>=0.3, NMS 0.3": ["fusion.rule=sep+clip", "fusion.clip_term=objects",
                                             "fusion.clip_object_nms=0.3"],
}


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    base = ["evaluate.ctx_source=mentions", f"workdir={root / 'work'}"]
    cfg = load_config(root / "world" / "config.yaml", base)
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    ctxdb = load_ctxdb(ctxdb_path(cfg.workdir, "mentions"))
    ev = cfg.evaluate
    for split in ev.splits:
        gt = refdb.gt_by_sent(split)
        ctx = ctxdb.ctx_by_sent(gt.keys())
        table = read_proposals(proposals_path(cfg.workdir, "sepnms_clipctx", split))
        outcomes = {}
        print(f"\n{split} ({len(table)} expressions)")
        for name, over in VARIANTS.items():
            vcfg = load_config(root / "world" / "config.yaml", base + over)
            fused = fuse_table(table, vcfg.fusion)
            conf = choose_conf(fused, ev.target_proposals)
            o = expression_outcomes(fused, gt, ctx, conf, ev.hit_iou)
            outcomes[name] = o
            m = with_intervals({"hit_rate": o["hit"].mean(), "top1_accuracy": o["top1"].mean(),
                                "ctx_recall": float(np.nanmean(o["ctx_recall"]))}, o)
            cells = [f"{r} {100 * m[r]:.1f} [{100 * m[r + '_ci'][0]:.1f}, {100 * m[r + '_ci'][1]:.1f}]"
                     for r in ("hit_rate", "top1_accuracy", "ctx_recall")]
            print(f"  {name:40s} kept {o['kept'].mean():.2f}  " + "  ".join(cells))
        ref = outcomes["sep (no CLIP term)"]
        for name, o in outcomes.items():
            if o is ref:
                continue
            d = paired_differences(o, ref)
            print(f"  {name:40s} - sep: " + "  ".join(
                f"{r} {100 * v['diff']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]" for r, v in d.items() if v))


if __name__ == "__main__":
    main()
