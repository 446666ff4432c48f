"""How well each relatedness score ranks the referent, independent of the conf-based selection.

    python benchmarks/diagnose_ranking.py DEMO_DIR [--splits val testA testB] [--json OUT]

DEMO_DIR is a ``sepnms demo --workdir DEMO_DIR`` folder (``config.yaml``, ``world/``, ``work/``) or a
work directory. Reads a finished run's scored candidate tables (``proposals/<model>/<split>.h5``: ``det_score``,
``ref_score`` r, ``ctx_score`` x of every candidate), its ``prepare/refdb.json``, its context
boxes (``prepare/ctxdb_<evaluate ctx source>.json``) and, when there, the world's
``mentions.json`` (which template each expression came from). For every model with a ctx branch
and every score built from its columns (``det`` = S_det, ``x*det``, ``r*det``, ``sep`` = the
configured fusion, ``x``, ``r``) it re-applies class-wise NMS (``fusion.nms_iou``) and prints

- hit@k: the referent hit rate when *every* expression keeps exactly its k best proposals
  (k = 1, 2, 3, 5), with the 95 % bootstrap interval; this removes how one global conf spreads
  the budget over expressions;
- the mean rank of the first proposal that hits the referent (1 = first; misses count as the
  number of proposals + 1);
- per expression, the AUC of a score for the candidates hitting the referent against (i) every
  other candidate, (ii) the candidates hitting a context box (but not the referent), (iii) the
  candidates hitting another object of the referent's category (world: ``instances.json``);
- with the world's annotations, ``cat-oracle``: the candidates whose class is the referent's
  category first, each group by S_det - what a ranking that knows only the category reaches;
- everything also for attribute-only and relational expressions separately (world only);
- the budget at the run's selection (``eval/metrics.json``'s conf): how many expressions keep
  only their top-1, the spread of kept proposals, the hit rate of each group, and the paired
  difference between the hit rate at that conf and hit@3 of the same score (what the global conf
  adds or costs at the same mean of 3).

A diagnostic, not a test: it prints what it measures. Paired differences (sep of the Sep-NMS
model - x*det of the Ref-NMS model) at each k use the project's paired bootstrap.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sepnms.config import load_config
from sepnms.data.ctxdb import box_iou_np, ctxdb_path, load_ctxdb
from sepnms.data.refdb import load_refdb
from sepnms.models.fusion import classwise_nms, fuse_scores
from sepnms.evaluation.metrics import select_by_conf
from sepnms.evaluation.stats import bootstrap_ci, paired_difference_ci
from sepnms.io.proposals import proposals_path, read_proposals
from sepnms.rules import is_hit

KS = (1, 2, 3, 5)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half); NaN when a side is empty."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def scores_of(e, fusion, has_ref: bool) -> dict[str, np.ndarray]:
    det = e.det_score.astype(np.float64)
    x = e.scores["ctx_score"].astype(np.float64)
    out = {"det": det, "x*det": x * det, "x": x}
    if has_ref:
        r = e.scores["ref_score"].astype(np.float64)
        out.update({"r*det": r * det, "r": r,
                    "sep": fuse_scores("sep", det, ref=r, ctx=x, k=fusion.k, ref_cut=fusion.ref_cut).astype(np.float64)})
    return out


def analyse(demo_dir: Path, splits: list[str]) -> dict:
    cfg_path = demo_dir / "config.yaml"
    cfg = load_config(str(cfg_path)) if cfg_path.is_file() else load_config("demo")
    workdir = demo_dir / "work" if (demo_dir / "work" / "prepare").is_dir() else demo_dir
    refdb = load_refdb(workdir / "prepare" / "refdb.json")
    source = cfg.train.ctx_source if cfg.evaluate.ctx_source == "train" else cfg.evaluate.ctx_source
    ctxdb = load_ctxdb(ctxdb_path(workdir, source))
    mentions_file = demo_dir / "world" / "mentions.json"
    templates = ({int(k): v["template"] for k, v in json.loads(mentions_file.read_text()).items()}
                 if mentions_file.is_file() else {})
    inst_file = demo_dir / "world" / "refer" / "refcoco" / "instances.json"
    same_cat: dict[int, np.ndarray] = {}  # sent_id -> [D, 4] xyxy boxes of the referent's same-category others
    if inst_file.is_file():
        anns_by_image: dict[int, list] = {}
        inst = json.loads(inst_file.read_text())
        # the detector's class order is the sorted COCO category ids (cls_idx 1..80)
        cat_of_cls = {i + 1: c for i, c in enumerate(sorted(int(c["id"]) for c in inst["categories"]))}
        cat_of_sent = {int(e["sent_id"]): int(e["category_id"]) for e in refdb.expressions}
        for a in inst["annotations"]:
            anns_by_image.setdefault(int(a["image_id"]), []).append(a)
        for e in refdb.expressions:
            others = [a["bbox"] for a in anns_by_image.get(int(e["image_id"]), [])
                      if a["category_id"] == e["category_id"] and a["id"] != e["ann_id"]]
            same_cat[int(e["sent_id"])] = np.asarray([[x, y, x + w, y + h] for x, y, w, h in others],
                                                     np.float64).reshape(-1, 4)
    metrics_file = workdir / "eval" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    models = sorted(p.name for p in (workdir / "proposals").iterdir() if p.is_dir())
    fusion = cfg.fusion
    result: dict = {"ctx_source": source, "splits": {}}
    for split in splits:
        gt = refdb.gt_by_sent(split)
        res_split: dict = {}
        for model in models:
            table = read_proposals(proposals_path(workdir, model, split))
            if not table.expressions or "ctx_score" not in table.expressions[0].scores:
                continue
            has_ref = "ref_score" in table.expressions[0].scores
            per: dict[str, dict[str, list]] = {}
            kinds = []
            for e in table.expressions:
                g = np.asarray(gt[e.sent_id], np.float64).reshape(1, 4)
                ctx = ctxdb.ctx_boxes(e.sent_id)
                box = e.box.astype(np.float64)
                hit = is_hit(box_iou_np(box, g)[:, 0], 0.5)
                in_ctx = (is_hit(box_iou_np(box, ctx), 0.5).any(axis=1) if len(ctx) else np.zeros(len(box), bool)) & ~hit
                same = same_cat.get(e.sent_id, np.zeros((0, 4)))
                in_same = (is_hit(box_iou_np(box, same), 0.5).any(axis=1) if len(same) else np.zeros(len(box), bool)) & ~hit
                kinds.append("relational" if templates.get(e.sent_id, "").startswith("rel_") else "attribute")
                named = scores_of(e, fusion, has_ref)
                if same_cat:
                    # ceiling of a ranking that knows only the referent's category: that
                    # category's candidates first, each group by S_det
                    match = np.array([cat_of_cls.get(int(c)) == cat_of_sent[e.sent_id] for c in e.cls_idx])
                    named["cat-oracle"] = e.det_score.astype(np.float64) + match
                for name, s in named.items():
                    d = per.setdefault(name, {"hits": [], "rank": [], "auc_all": [], "auc_ctx": [],
                                                   "auc_same": []})
                    keep = classwise_nms(box, s.astype(np.float32), e.cls_idx, fusion.nms_iou)
                    kept_hit = hit[keep]
                    first = int(np.argmax(kept_hit)) + 1 if kept_hit.any() else len(keep) + 1
                    d["rank"].append(first)
                    d["hits"].append([float(first <= k) for k in KS])
                    d["auc_all"].append(_auc(s[hit], s[~hit]))
                    d["auc_ctx"].append(_auc(s[hit], s[in_ctx]))
                    d["auc_same"].append(_auc(s[hit], s[in_same]))
            kinds = np.asarray(kinds)
            out_model: dict = {"n": len(kinds), "n_relational": int((kinds == "relational").sum()), "scores": {}}
            for name, d in per.items():
                hits = np.asarray(d["hits"])
                entry = {}
                for group, mask in (("all", np.ones(len(kinds), bool)), ("attribute", kinds == "attribute"),
                                    ("relational", kinds == "relational")):
                    if not mask.any():
                        continue
                    g_entry = {}
                    for j, k in enumerate(KS):
                        ci = bootstrap_ci(hits[mask, j])
                        g_entry[f"hit@{k}"] = [float(hits[mask, j].mean()), ci[0], ci[1]]
                    g_entry["mean_rank"] = float(np.mean(np.asarray(d["rank"])[mask]))
                    for a in ("auc_all", "auc_ctx", "auc_same"):
                        v = np.asarray(d[a])[mask]
                        v = v[~np.isnan(v)]
                        ci = bootstrap_ci(v)
                        g_entry[a] = None if ci is None else [float(v.mean()), ci[0], ci[1], int(v.size)]
                    entry[group] = g_entry
                out_model["scores"][name] = entry
                out_model.setdefault("_hits", {})[name] = hits
            out_model["_kinds"] = kinds
            # the run's own selection: a global conf per split
            conf = metrics.get(model, {}).get(split, {}).get("conf")
            if conf is not None:
                rule = "sep" if has_ref else "x*det"
                kept, hit_sel = [], []
                for e in table.expressions:
                    s = scores_of(e, fusion, has_ref)[rule]
                    keep = classwise_nms(e.box, s.astype(np.float32), e.cls_idx, fusion.nms_iou)
                    idx = keep[select_by_conf(s[keep], conf)]
                    g = np.asarray(gt[e.sent_id], np.float64).reshape(1, 4)
                    kept.append(len(idx))
                    hit_sel.append(float(is_hit(box_iou_np(e.box[idx].astype(np.float64), g), 0.5).any()))
                kept, hit_sel = np.asarray(kept), np.asarray(hit_sel)
                one = kept == 1
                k3 = out_model["_hits"][rule][:, KS.index(3)]
                gain = paired_difference_ci(hit_sel, k3)
                out_model["_sel_minus_k3"] = hit_sel - k3
                out_model["_sel"] = hit_sel
                out_model["selection"] = {
                    "rule": rule, "conf": conf, "mean_kept": float(kept.mean()), "sd_kept": float(kept.std()),
                    "share_top1_only": float(one.mean()), "max_kept": int(kept.max()),
                    "hit_rate": float(hit_sel.mean()),
                    "hit_rate_minus_hit@3": [gain["diff"], gain["low"], gain["high"]],
                    "hit_rate_top1_only": float(hit_sel[one].mean()) if one.any() else None,
                    "hit_rate_more": float(hit_sel[~one].mean()) if (~one).any() else None,
                    "mean_kept_attribute": float(kept[kinds == "attribute"].mean()),
                    "mean_kept_relational": float(kept[kinds == "relational"].mean()) if (kinds == "relational").any() else None,
                }
            res_split[model] = out_model
        # paired: Sep-NMS's sep - Ref-NMS's x*det at each fixed k
        if "sepnms" in res_split and "refnms" in res_split:
            a, b = res_split["sepnms"]["_hits"]["sep"], res_split["refnms"]["_hits"]["x*det"]
            kinds = res_split["sepnms"]["_kinds"]
            pairs = {}
            for group, mask in (("all", np.ones(len(kinds), bool)), ("attribute", kinds == "attribute"),
                                ("relational", kinds == "relational")):
                if mask.any():
                    pairs[group] = {f"hit@{k}": paired_difference_ci(a[mask, j], b[mask, j]) for j, k in enumerate(KS)}
            if "_sel" in res_split["sepnms"] and "_sel" in res_split["refnms"]:
                # at the run's conf, and how much of that difference the global conf makes:
                # (Sep-NMS at its conf - its hit@3) - (Ref-NMS at its conf - its hit@3)
                pairs["all"]["at the run's conf"] = paired_difference_ci(res_split["sepnms"]["_sel"],
                                                                         res_split["refnms"]["_sel"])
                pairs["all"]["conf effect"] = paired_difference_ci(res_split["sepnms"]["_sel_minus_k3"],
                                                                   res_split["refnms"]["_sel_minus_k3"])
            res_split["sepnms.sep - refnms.x*det"] = pairs
        for m in res_split.values():
            if isinstance(m, dict):
                m.pop("_hits", None)
                m.pop("_kinds", None)
                m.pop("_sel", None)
                m.pop("_sel_minus_k3", None)
        result["splits"][split] = res_split
    return result


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{100 * v[0]:.1f} [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--splits", nargs="+", default=["val", "testA", "testB"])
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = ap.parse_args(argv)
    res = analyse(args.workdir, args.splits)
    for split, models in res["splits"].items():
        print(f"\n=== {split} (context boxes: ctxdb_{res['ctx_source']}) ===")
        for model, m in models.items():
            if model.startswith("sepnms.sep"):
                print(f"  paired sepnms.sep - refnms.x*det (points):")
                for group, d in m.items():
                    print(f"    {group:10s} " + "  ".join(
                        f"{k} {100 * v['diff']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]" for k, v in d.items()))
                continue
            print(f"  model {model}: {m['n']} expressions, {m['n_relational']} relational")
            for name, entry in m["scores"].items():
                for group, g in entry.items():
                    print(f"    {name:6s} {group:10s} " + "  ".join(f"{k} {_fmt(g[k])}" for k in (f"hit@{k}" for k in KS))
                          + f"  rank {g['mean_rank']:.2f}  AUC(ref|all) {_fmt(g['auc_all'])}"
                          + f"  AUC(ref|ctx) {_fmt(g['auc_ctx'])}  AUC(ref|same-cat) {_fmt(g['auc_same'])}")
            if "selection" in m:
                print(f"    selection {json.dumps(m['selection'])}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
