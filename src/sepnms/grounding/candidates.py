"""The candidates a sentence is grounded among (``CandidateSet``: boxes [M, 4] xyxy, categories
[M]), MAttNet's choice among them (``predict``), and the candidate sets that need nothing but the
annotations or a file: the image's ground-truth objects (``gt_sets``) and a MAttNet-style
detection file (``file_sets``).  The sets read from the first stage's and the detector's outputs
are :mod:`sepnms.engine.ground.candidates`; the accuracy over them is
:mod:`sepnms.evaluation.ground_accuracy`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from sepnms.config import Config
from sepnms.errors import InputError
from sepnms.grounding.data import GroundingData, VisualFeatures, concat_tables, object_table, pad_labels
from sepnms.grounding.features import object_geometry, xyxy_to_xywh
from sepnms.grounding.mattnet import MAttNet
from sepnms.grounding.vocab import GroundingVocab, max_length_for
from sepnms.io.schemas import check_dets_cover


@dataclass
class CandidateSet:
    """The candidates one sentence is scored against: boxes [M, 4] xyxy, categories [M].

    ``ann_ids`` [M]: the annotated objects' ids when the candidates are the image's ground-truth
    boxes (then accuracy can be MAttNet's index rule); ``plus_one``: the boxes are detector
    detections whose ``[x, y, w, h]`` has ``w = x2 - x1 + 1`` (MAttNet's ``dets.json``), else
    ``w = x2 - x1`` (annotations: x2 = x + w; Ref-NMS-style files)."""

    image_id: int
    boxes: np.ndarray
    categories: np.ndarray
    ann_ids: Optional[list[int]] = None
    plus_one: bool = False

    def xywh(self, k: int) -> list[float]:
        """Candidate ``k`` as ``[x, y, w, h]``, the box the evaluation IoU reads."""
        x1, y1, x2, y2 = (float(v) for v in self.boxes[k])
        extra = 1.0 if self.plus_one else 0.0
        return [x1, y1, x2 - x1 + extra, y2 - y1 + extra]


@torch.no_grad()
def predict(net: MAttNet, vocab: GroundingVocab, feats: VisualFeatures, data: GroundingData,
            sets: dict[int, CandidateSet], cfg: Config, progress: bool = False, images_per_forward: int = 8,
            desc: str = "ground") -> dict[int, Optional[int]]:
    """``{sent_id: index of the chosen candidate (None for an empty candidate set)}`` for every
    sentence of ``sets``.

    Per image: the union of its sentences' boxes is pooled once (one read of the head map); each
    distinct candidate set gets its own geometry (neighbours and contexts are within the set)."""
    g, device = cfg.grounding, cfg.device
    net.eval().to(device)
    max_len = max_length_for(cfg.dataset, g.max_length)
    by_image: dict[int, list[int]] = {}
    for sid, s in sets.items():
        by_image.setdefault(int(s.image_id), []).append(sid)
    out: dict[int, Optional[int]] = {sid: None for sid, s in sets.items() if len(s.boxes) == 0}
    images = sorted(by_image)
    chunks = [images[i:i + images_per_forward] for i in range(0, len(images), images_per_forward)]
    for chunk in tqdm(chunks, desc=desc, disable=not progress):
        tables, rows_obj, rows_sent, owners, labels = [], [], [], [], []
        base = 0
        for iid in chunk:
            sids = [s for s in by_image[iid] if len(sets[s].boxes)]
            if not sids:
                continue
            img = data.images.get(iid)
            if img is None:
                raise InputError(None, f"image_id {iid} of a candidate set is not in the refer annotations")
            all_boxes = np.concatenate([sets[s].boxes for s in sids]).astype(np.float32)
            uniq, inverse = np.unique(all_boxes, axis=0, return_inverse=True)
            pool5, fc7 = feats.grids(iid, uniq)
            distinct: dict[tuple, int] = {}
            start = 0
            for s in sids:
                cs = sets[s]
                m = len(cs.boxes)
                inv = torch.as_tensor(inverse.reshape(-1)[start:start + m], dtype=torch.long, device=pool5.device)
                start += m
                key = (cs.boxes.astype(np.float32).tobytes(), np.asarray(cs.categories).tobytes())
                if key not in distinct:
                    geom = object_geometry(xyxy_to_xywh(cs.boxes), cs.categories, img.width, img.height, g.num_cxt)
                    tables.append(object_table(pool5[inv], fc7[inv], geom))
                    distinct[key] = base
                    base += m
                first = distinct[key]
                labels.append(vocab.encode(data.sentences.get(s, []), max_len))
                rows_obj += list(range(first, first + m))
                rows_sent += [len(labels) - 1] * m
                owners.append((s, first, m))
        if not tables:
            continue
        objects = concat_tables(tables)
        scores = net(objects.to(device), pad_labels(labels).to(device), torch.as_tensor(rows_obj).to(device),
                     torch.as_tensor(rows_sent).to(device)).scores.cpu().numpy()
        pos = 0
        for s, first, m in owners:
            out[s] = int(np.argmax(scores[pos:pos + m]))
            pos += m
    return out


def gt_sets(data: GroundingData, split: str) -> dict[int, CandidateSet]:
    out = {}
    for rid in data.ref_ids(split):
        img = data.images[data.refs[rid]["image_id"]]
        cs = CandidateSet(img.image_id, img.boxes, img.categories, ann_ids=list(img.ann_ids))
        for s in data.refs[rid]["sent_ids"]:
            out[s] = cs
    return out


def file_sets(path: Path, data: GroundingData, split: str) -> dict[int, CandidateSet]:
    """A MAttNet-style detection file: per sentence when its entries carry ``sent_id``, else per image."""
    from sepnms.io.mattnet_dets import MATTNET, detect_convention, read_dets

    dets = read_dets(path)
    per_sent: dict[int, list[dict]] = {}
    per_image: dict[int, list[dict]] = {}
    for i, d in enumerate(dets):
        if "image_id" not in d:
            raise InputError(path, f"entry {i} has no image_id")
        if "sent_id" in d:
            per_sent.setdefault(int(d["sent_id"]), []).append(d)
        else:
            per_image.setdefault(int(d["image_id"]), []).append(d)
    if per_sent and per_image:
        raise InputError(path, "some entries carry a sent_id and others do not (mixed per-sentence / per-image file)")
    check_dets_cover(path, per_sent, per_image, {s for ref in data.refs.values() for s in ref["sent_ids"]},
                     {int(ref["image_id"]) for ref in data.refs.values()})

    inclusive = detect_convention(dets) == MATTNET  # MAttNet's own file: x2 = x + w - 1, so w = x2 - x1 + 1

    def cset(iid: int, entries: list[dict]) -> CandidateSet:
        return CandidateSet(iid, np.array([d["box_xyxy"] for d in entries], np.float32).reshape(-1, 4),
                            np.array([int(d.get("category_id", 0)) for d in entries], np.int64), plus_one=inclusive)

    out = {}
    for rid in data.ref_ids(split):
        ref = data.refs[rid]
        for s in ref["sent_ids"]:
            if per_sent:
                entries = per_sent.get(s, [])
            else:
                entries = per_image.get(ref["image_id"], [])
            out[s] = cset(ref["image_id"], entries)
    return out
