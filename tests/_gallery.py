"""Helpers of the gallery tests: the page's data read back with html.parser + json, outcomes
recomputed by hand from the fused tables, and a workdir with a second stage and an equal-budget
``M@X`` row (files written here, in the formats ``ground eval`` and issue 18's rows use)."""
from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

XSS = "<img src=x onerror=alert(1)> the ring"


def read_page(text: str) -> dict:
    """``{"data": the JSON document, "rows": [{attr: value}] of the metrics table, "ids": set}``."""
    out = {"data": None, "rows": [], "ids": set()}

    class P(HTMLParser):
        in_data = False
        buf = ""

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id"):
                out["ids"].add(a["id"])
            if tag == "script" and a.get("id") == "gallery-data":
                self.in_data = True
            if tag == "tr" and a.get("data-method"):
                out["rows"].append(a)

        def handle_data(self, data):
            if self.in_data:
                self.buf += data

        def handle_endtag(self, tag):
            if tag == "script" and self.in_data:
                self.in_data = False
                out["data"] = json.loads(self.buf)

    P().feed(text)
    return out


def kept_by_hand(scores: np.ndarray, conf: float) -> np.ndarray:
    """Top-1, then every candidate scoring above ``conf``; by descending score."""
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="stable")
    return order[:max(1, int((s > conf).sum()))] if len(s) else order


def iou(b, g) -> float:
    iw = max(0.0, min(b[2], g[2]) - max(b[0], g[0]))
    ih = max(0.0, min(b[3], g[3]) - max(b[1], g[1]))
    inter = iw * ih
    union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    return inter / union if union > 0 else 0.0


def outcomes_by_hand(cfg, table: str, split: str, conf: float) -> dict[int, tuple[np.ndarray, bool, np.ndarray]]:
    """sent_id -> (kept boxes [K, 4] by descending score, hit, their scores [K]) from the fused
    table ``table``."""
    from sepnms.data.refdb import load_refdb
    from sepnms.workdir import fused_path
    from sepnms.io.proposals import read_proposals

    gt = {int(e["sent_id"]): e["gt_box"] for e in load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json").split(split)}
    out = {}
    for e in read_proposals(fused_path(cfg, table, split)):
        keep = kept_by_hand(e.scores["score"], conf)
        boxes = np.asarray(e.box[keep], np.float64)
        out[e.sent_id] = (boxes, any(iou(b, gt[e.sent_id]) > 0.5 for b in boxes),
                          np.asarray(e.scores["score"][keep], np.float64))
    return out


def with_second_stage(cfg, dst: Path, xss: bool = False):
    """A copy of ``cfg``'s workdir with: a metrics row ``sepnms@mattnet_dets`` (sepnms's table at
    a lower conf), a ``gt`` row with only a second-stage accuracy, second-stage answers for
    ``sepnms`` (its top-1 kept box) and ``sepnms@mattnet_dets`` (its last kept box) with outcomes
    alternating right / wrong; with ``xss`` the first val expression's text holds HTML.
    Returns (config, expected) with ``expected[(method, split)][sent_id] = (K, pick rank,
    pick_hit)``."""
    from sepnms.workdir import fused_path
    from sepnms.io.proposals import read_proposals

    cfg2 = cfg.model_copy(update={"workdir": dst}, deep=True)
    shutil.copytree(cfg.workdir, dst, ignore=shutil.ignore_patterns("gallery", "show", "ground"))
    mpath = dst / "eval" / "metrics.json"
    # the synthetic equal-budget row below stands alone: the evaluation's own mattnet_dets rows are dropped
    metrics = {k: v for k, v in json.loads(mpath.read_text()).items() if "mattnet_dets" not in k}
    expected: dict = {}
    hits: dict = {}
    for split in cfg.evaluate.splits:
        scores = np.concatenate([e.scores["score"] for e in read_proposals(fused_path(cfg2, "sepnms", split))])
        low = float(np.quantile(scores, 0.5))  # a lower conf: more kept proposals than sepnms's own
        assert low < metrics["sepnms"][split]["conf"]
        metrics.setdefault("sepnms@mattnet_dets", {})[split] = dict(metrics["sepnms"][split], conf=low)
        metrics.setdefault("gt", {})[split] = {"downstream_accuracy": 0.75, "downstream_accuracy_ci": [0.5, 0.9],
                                               "downstream_n": 24}
        for method, conf, rank in (("sepnms", metrics["sepnms"][split]["conf"], 0), ("sepnms@mattnet_dets", low, -1)):
            preds, per = [], {}
            for n, (sid, (boxes, _, _)) in enumerate(sorted(outcomes_by_hand(cfg2, "sepnms", split, conf).items())):
                b = boxes[rank]
                preds.append({"sent_id": int(sid), "box": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                                          float(b[3] - b[1])]})
                per[str(sid)] = float(n % 2)
                expected.setdefault((method, split), {})[int(sid)] = (len(boxes), len(boxes) - 1 if rank else 0,
                                                                      n % 2)
            out = dst / "ground" / "predictions" / f"{method}_{split}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(preds))
            hits.setdefault(method, {})[split] = per
    (dst / "ground" / "hits.json").write_text(json.dumps(hits))
    mpath.write_text(json.dumps(metrics))
    if xss:
        rpath = dst / "prepare" / "refdb.json"
        refdb = json.loads(rpath.read_text())
        first = next(e for e in refdb["expressions"] if e["split"] == "val")
        first["sent"] = XSS
        rpath.write_text(json.dumps(refdb))
    return cfg2, expected
