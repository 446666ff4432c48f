"""The ctxdb: the context ("critical") objects of every expression, used as training labels.

Stored as ``<workdir>/prepare/ctxdb_<source>.json``::

    {"format": "sepnms-ctxdb", "version": 1, "source": "glove" | "clip", "params": {...},
     "entries": {"<sent_id>": {"ref_ann_ids": [int], "ctx_ann_ids": [int],
                               "ctx_boxes": [[x1, y1, x2, y2]], "scores": {...}}}}

``ref_ann_ids`` are critical objects found to be the referent itself (IoU > 0.9); ``ctx_ann_ids``
the rest.  ``scores`` holds the raw per-object values of the rule (GloVe similarity, or CLIP
cosine and probability) so thresholds can be swept without recomputation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_write_json
from sepnms.io.refer import Refer, xywh_to_xyxy
from sepnms.rules import is_critical_glove, is_referent_itself

FORMAT = "sepnms-ctxdb"
VERSION = 1


@dataclass
class CtxDB:
    source: str
    entries: dict[int, dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)

    def ctx_boxes(self, sent_id: int) -> np.ndarray:
        """[C, 4] xyxy boxes of the context objects (C may be 0)."""
        e = self.entries.get(int(sent_id))
        if not e or not e["ctx_boxes"]:
            return np.zeros((0, 4), np.float32)
        return np.asarray(e["ctx_boxes"], np.float32).reshape(-1, 4)

    def ctx_by_sent(self, sent_ids) -> dict[int, np.ndarray]:
        return {int(s): self.ctx_boxes(s) for s in sent_ids}


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [N, M] of xyxy boxes (no +1)."""
    import torch
    from torchvision.ops import box_iou

    return box_iou(torch.as_tensor(a, dtype=torch.float64).reshape(-1, 4),
                   torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)).numpy()


def split_critical(
    refer: Refer, ref: dict, critical_ann_ids: Sequence[int], referent_iou: float
) -> tuple[list[int], list[int], list[list[float]]]:
    """Critical objects with IoU > ``referent_iou`` to the referent are the referent; the rest are
    context.  Returns (ref_ann_ids, ctx_ann_ids, ctx_boxes)."""
    ref_box = np.asarray([refer.ref_box(ref)])
    ref_ids, ctx_ids, ctx_boxes = [], [], []
    for aid in critical_ann_ids:
        box = xywh_to_xyxy(refer.ann_by_id[int(aid)]["bbox"])
        if is_referent_itself(box_iou_np(ref_box, np.asarray([box]))[0, 0], referent_iou):
            ref_ids.append(int(aid))
        else:
            ctx_ids.append(int(aid))
            ctx_boxes.append([float(v) for v in box])
    return ref_ids, ctx_ids, ctx_boxes


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def glove_ctxdb(
    refer: Refer, nouns_by_sent: dict[int, list[str]], glove: dict[str, np.ndarray],
    sim_threshold: float, referent_iou: float,
) -> CtxDB:
    """The Ref-NMS GloVe/spaCy rule.

    For each annotated object of the image: the max GloVe cosine between any word of its
    category name and any noun of the expression; > ``sim_threshold`` makes it critical.
    """
    cat_words = {cid: [w for w in name.lower().split() if w in glove] for cid, name in refer.cat_name.items()}
    entries: dict[int, dict[str, Any]] = {}
    for ref in refer.refs:
        anns = refer.anns_by_image.get(int(ref["image_id"]), [])
        for sent in ref["sentences"]:
            sid = int(sent["sent_id"])
            nouns = [n for n in nouns_by_sent.get(sid, []) if n in glove]
            sims: dict[str, float] = {}
            critical = []
            if nouns:
                noun_vecs = _unit(np.stack([glove[n] for n in nouns]))
                for ann in anns:
                    words = cat_words.get(int(ann["category_id"]), [])
                    if not words:
                        continue
                    cat_vecs = _unit(np.stack([glove[w] for w in words]))
                    s = float((cat_vecs @ noun_vecs.T).max())
                    sims[str(ann["id"])] = round(s, 6)
                    if is_critical_glove(s, sim_threshold):
                        critical.append(int(ann["id"]))
            ref_ids, ctx_ids, ctx_boxes = split_critical(refer, ref, critical, referent_iou)
            entries[sid] = {"ref_ann_ids": ref_ids, "ctx_ann_ids": ctx_ids, "ctx_boxes": ctx_boxes,
                            "scores": {"glove_sim": sims, "nouns": nouns}}
    return CtxDB("glove", entries, {"sim_threshold": sim_threshold, "referent_iou": referent_iou})


def save_ctxdb(path: Path, db: CtxDB) -> None:
    atomic_write_json(
        path,
        {"format": FORMAT, "version": VERSION, "source": db.source, "params": db.params,
         "entries": {str(k): v for k, v in sorted(db.entries.items())}},
    )


def load_ctxdb(path: Path) -> CtxDB:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "ctxdb not found: run `sepnms prepare` (glove) or `sepnms clip-ctx` (clip) first")
    from sepnms.io.schemas import load_json

    data = load_json(path, FORMAT)
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise InputError(path, f"not a {FORMAT} v{VERSION} file")
    return CtxDB(data["source"], {int(k): v for k, v in data["entries"].items()}, data.get("params", {}))


def ctxdb_path(workdir: Path, source: str) -> Path:
    return Path(workdir) / "prepare" / f"ctxdb_{source}.json"


def mention_precision_recall(db: CtxDB, mentions: dict[int, dict]) -> dict[str, float]:
    """Precision/recall of the ctxdb's context objects against ground-truth mentions."""
    tp = fp = fn = 0
    for sid, m in mentions.items():
        pred = set(db.entries.get(int(sid), {}).get("ctx_ann_ids", []))
        gold = set(int(a) for a in m["mentioned_ann_ids"])
        tp += len(pred & gold)
        fp += len(pred - gold)
        fn += len(gold - pred)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}
