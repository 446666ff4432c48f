"""The first stage's training dataset: expressions of one split with sampled, labelled RoIs
(``TrainingSet``), and their batching (``collate``, ``pad_words``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from sepnms.data.candidates import Candidates
from sepnms.data.head_features import HeadCache
from sepnms.data.sampling import REFERENT, assign_labels, sample_rois
from sepnms.data.workspace import Workspace
from sepnms.errors import InputError
from sepnms.models.pooling import pool_rois
from sepnms.models.relatedness import location_features


def pad_words(id_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(word_ids [B, T] long, word_mask [B, T] bool)``, T = longest list."""
    t = max(len(x) for x in id_lists)
    ids = torch.zeros(len(id_lists), t, dtype=torch.long)
    mask = torch.zeros(len(id_lists), t, dtype=torch.bool)
    for i, x in enumerate(id_lists):
        ids[i, : len(x)] = torch.as_tensor(x)
        mask[i, : len(x)] = True
    return ids, mask


class TrainingSet(Dataset):
    """Expressions of one split with sampled, labelled RoIs.

    Item ``epoch * len(self) + i`` is expression ``i`` with its RoIs sampled by a generator seeded
    from (seed, epoch, sent_id): deterministic whatever the worker count, and resumable.  The
    fixed validation sampling uses epoch -1.  RoI pooling (no parameters) happens here, in the
    loader workers.  Each expression's candidate pool and RoI labels do not change between epochs:
    they are computed once and kept (a third of the data time of a step was reading the pool from
    ``candidates.h5`` and matching it to the referent and context boxes again).
    """

    def __init__(self, ws: Workspace, split: str, max_expressions: Optional[int] = None, fixed_epoch: Optional[int] = None):
        cfg = ws.cfg
        self.ws, self.cfg = ws, cfg
        self.expressions = ws.refdb.split(split)
        if max_expressions is not None:
            self.expressions = self.expressions[:max_expressions]
        if not self.expressions:
            raise InputError(Path(cfg.workdir) / "prepare" / "refdb.json", f"no expression in split {split!r}")
        self.fixed_epoch = fixed_epoch
        self.heads = HeadCache.for_config(cfg, ws.refdb)
        self._labelled: dict[int, tuple[Candidates, np.ndarray]] = {}

    def labelled(self, e: dict[str, Any]) -> tuple[Candidates, np.ndarray]:
        """The training pool of the expression's image and its label per candidate (kept)."""
        sid = int(e["sent_id"])
        if sid not in self._labelled:
            cand = self.ws.candidates.get(e["image_id"], training=True)
            ctx = self.ws.ctxdb.ctx_boxes(sid) if self.ws.ctxdb is not None else np.zeros((0, 4), np.float32)
            self._labelled[sid] = cand, assign_labels(cand.box, np.asarray(e["gt_box"]), ctx, self.cfg.train.pos_iou)
        return self._labelled[sid]

    def __len__(self) -> int:
        return len(self.expressions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.expressions)
        epoch, i = divmod(int(index), n)
        if self.fixed_epoch is not None:
            epoch = self.fixed_epoch
        e = self.expressions[i]
        cfg, t = self.cfg, self.cfg.train
        sid = int(e["sent_id"])
        rng = np.random.default_rng([cfg.seed, epoch + 1, sid])
        cand, labels = self.labelled(e)
        idx = sample_rois(labels, rng, t.rois_per_expression, t.max_referent, t.max_positive)
        boxes = torch.from_numpy(cand.box[idx])
        head, scale = self.heads.get(e["image_id"])
        m = cfg.model
        pooled = pool_rois(head, boxes, scale, m.feat_stride, m.pool_size, m.pooling)
        w, h = self.ws.refdb.image_size(e["image_id"])
        lab = torch.from_numpy(labels[idx].astype(np.int64))
        text = self.ws.text_vectors[sid] if self.ws.text_vectors is not None else np.zeros(m.text_dim, np.float32)
        return {
            "pooled": pooled,  # [R, C, P, P]
            "loc": location_features(boxes, float(w), float(h)),  # [R, 5]
            "word_ids": self.ws.word_ids(e["tokens"], t.max_tokens),
            "text_vec": torch.from_numpy(np.asarray(text, np.float32)),
            "ctx_target": (lab > 0).float(),
            "ref_target": (lab == REFERENT).float(),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    ids, mask = pad_words([it["word_ids"] for it in items])
    return {
        "pooled": torch.stack([it["pooled"] for it in items]),  # [B, R, C, P, P]
        "loc": torch.stack([it["loc"] for it in items]),
        "word_ids": ids,
        "word_mask": mask,
        "text_vec": torch.stack([it["text_vec"] for it in items]),
        "ctx_target": torch.stack([it["ctx_target"] for it in items]),
        "ref_target": torch.stack([it["ref_target"] for it in items]),
    }
