"""What the second stage reads: the annotated objects and sentences (refer files), their frozen
visual features from the head maps, and MAttNet's training batches.

Each image's head map is read once per batch; the frozen pool5 / fc7 grids of an image's objects
are kept in a small LRU (``grounding.feature_cache_images``) since layer4 never changes.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from sepnms.config import Config
from sepnms.data.refdb import load_refer
from sepnms.data.head_features import HeadCache, detector_checkpoint
from sepnms.errors import InputError
from sepnms.grounding.features import ObjectGeometry, object_geometry, xyxy_to_xywh
from sepnms.grounding.mattnet import ObjectTable, frozen_layer4, layer4_grid
from sepnms.grounding.vocab import GroundingVocab, build_grounding_vocab, max_length_for
from sepnms.io.refer import split_matches
from sepnms.models.pooling import pool_rois


@dataclass
class ImageObjects:
    """The annotated objects of one image: ann_ids [N], boxes xyxy [N, 4] (x2 = x + w), categories [N]."""

    image_id: int
    width: int
    height: int
    ann_ids: list[int]
    boxes: np.ndarray
    categories: np.ndarray
    ref_ids: list[int] = field(default_factory=list)
    file_name: str = ""


@dataclass
class GroundingData:
    """Objects, refs and sentences of the configured dataset (``refer_root``)."""

    images: dict[int, ImageObjects]
    refs: dict[int, dict[str, Any]]          # ref_id -> {image_id, ann_index, split, sent_ids, category_id}
    sentences: dict[int, list[str]]          # sent_id -> tokens
    category_names: dict[int, str]
    attributes: dict[int, list[str]]         # ref_id -> attribute words (data.json att_wds), may be empty

    @classmethod
    def open(cls, cfg: Config) -> "GroundingData":
        refer = load_refer(cfg)
        images: dict[int, ImageObjects] = {}
        for iid, anns in refer.anns_by_image.items():
            if iid not in refer.refs_by_image:
                continue
            w, h = refer.image_size(iid)
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], np.float32).reshape(-1, 4)
            images[iid] = ImageObjects(iid, w, h, [int(a["id"]) for a in anns], boxes,
                                       np.array([int(a["category_id"]) for a in anns], np.int64),
                                       file_name=str(refer.img_by_id[iid].get("file_name", "")))
        refs, sentences = {}, {}
        for ref in refer.refs:
            iid = int(ref["image_id"])
            img = images[iid]
            rid = int(ref["ref_id"])
            img.ref_ids.append(rid)
            refs[rid] = {"image_id": iid, "ann_index": img.ann_ids.index(int(ref["ann_id"])), "split": str(ref["split"]),
                         "sent_ids": [int(s["sent_id"]) for s in ref["sentences"]],
                         "category_id": int(ref["category_id"])}
            for s in ref["sentences"]:
                sentences[int(s["sent_id"])] = [str(t).lower() for t in s["tokens"]]
        return cls(images, refs, sentences, refer.category_names(), _attributes(cfg))

    def image_ids(self, split: str) -> list[int]:
        return sorted({r["image_id"] for r in self.refs.values() if split_matches(r["split"], split)})

    def ref_ids(self, split: str) -> list[int]:
        return sorted(rid for rid, r in self.refs.items() if split_matches(r["split"], split))

    def sent_ids(self, split: str) -> list[int]:
        return [s for rid in self.ref_ids(split) for s in self.refs[rid]["sent_ids"]]

    def build_vocab(self, min_count: int) -> GroundingVocab:
        """MAttNet's ``prepro.py`` vocabulary: tokens counted over the sentences of *every* split
        (``refer.sentToTokens``), kept when the count is > ``min_count``, plus the category words
        (and ``__background__``), as its ``data.json`` ``word_to_ix`` holds them."""
        sents = [self.sentences[s] for r in sorted(self.refs) for s in self.refs[r]["sent_ids"]]
        if not sents:
            raise InputError(None, "no sentence to build the grounding vocabulary from")
        return build_grounding_vocab(sents, [*self.category_names.values(), "__background__"], min_count)


def _attributes(cfg: Config) -> dict[int, list[str]]:
    """``ref_id -> att_wds`` from MAttNet's data.json (refer-parser2 attributes), when given."""
    if cfg.paths.data_json is None or not Path(cfg.paths.data_json).is_file():
        return {}
    from sepnms.io.mattnet_data import load_data_json

    data = load_data_json(cfg.paths.data_json)
    return {int(r["ref_id"]): [str(w) for w in r.get("att_wds") or []] for r in data.get("refs", [])
            if isinstance(r, dict) and "ref_id" in r}


class AttributeVocab:
    """The ``num_atts`` most frequent attribute words of the training refs and their class weights."""

    def __init__(self, data: GroundingData, split: str, num_atts: int):
        from collections import Counter

        from sepnms.grounding.loss import attribute_weights

        counts = Counter(w for rid in data.ref_ids(split) for w in data.attributes.get(rid, []))
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:num_atts]
        self.words = [w for w, _ in top]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.num_atts = num_atts
        self.weights = attribute_weights(np.array([c for _, c in top] + [1] * (num_atts - len(top))))

    def __bool__(self) -> bool:
        return bool(self.words)

    def labels(self, words: Sequence[str]) -> np.ndarray:
        out = np.zeros(self.num_atts, np.float32)
        for w in words:
            if w in self.index:
                out[self.index[w]] = 1.0
        return out


class VisualFeatures:
    """pool5 / fc7 grids of boxes, from the head maps and the frozen layer4.

    ``grids(image_id, boxes)``: boxes [N, 4] xyxy original pixels -> (pool5 [N, P, s, s],
    fc7 [N, F, s, s]).  With ``cache_key`` the result is kept (LRU of ``size`` images).
    """

    def __init__(self, cfg: Config, data: Optional[GroundingData] = None, size: Optional[int] = None):
        m = cfg.model
        self.cfg = cfg
        images = None
        if cfg.features.source == "images" and data is not None:
            images = {iid: cfg.images_dir() / img.file_name for iid, img in data.images.items()}
        self.heads = HeadCache.for_config(cfg, images, size=4)
        self.device = torch.device(cfg.device)
        source, ckpt = cfg.grounding.layer4_source, cfg.paths.maskrcnn_checkpoint
        if source == "detector":  # the layer4 of the detector whose C4 maps these are
            source, ckpt = "maskrcnn", detector_checkpoint(cfg)
        self.layer4 = frozen_layer4(m, source, ckpt, cfg.seed).to(self.device)
        self.size = cfg.grounding.feature_cache_images if size is None else size
        self._cache: OrderedDict[Any, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.head_reads = 0

    def grids(self, image_id: int, boxes: np.ndarray, cache_key: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        if cache_key is not None and cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key]
        m = self.cfg.model
        head, scale = self.heads.get(image_id)
        self.head_reads += 1
        pool5 = pool_rois(head.to(self.device), torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4), scale,
                          m.feat_stride, m.pool_size, m.pooling)
        out = (pool5, layer4_grid(self.layer4, pool5))
        if cache_key is not None and self.size > 0:
            self._cache[cache_key] = out
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return out


def object_table(pool5: torch.Tensor, fc7: torch.Tensor, geom: ObjectGeometry) -> ObjectTable:
    """The ObjectTable of one candidate set (its context features are its own objects' mean fc7),
    on the device of ``pool5``."""
    dev = pool5.device
    mean_fc7 = fc7.mean(dim=(2, 3))                                        # [N, F]
    idx = torch.from_numpy(geom.cxt_idx).to(dev)
    mask = torch.from_numpy(geom.cxt_mask).to(dev)
    cxt = mean_fc7[idx.clamp(min=0)] * mask.unsqueeze(-1).to(mean_fc7.dtype)  # [N, K, F]
    return ObjectTable(pool5, fc7, torch.from_numpy(geom.lfeats).to(dev), torch.from_numpy(geom.dif_lfeats).to(dev),
                       cxt, torch.from_numpy(geom.cxt_lfeats).to(dev), mask)


def concat_tables(tables: Sequence[ObjectTable]) -> ObjectTable:
    keys = ObjectTable.__dataclass_fields__
    return ObjectTable(*(torch.cat([getattr(t, k) for t in tables]) for k in keys))


def candidate_table(feats: VisualFeatures, image_id: int, width: int, height: int, boxes: np.ndarray,
                    categories: np.ndarray, num_cxt: int, cache_key: Any = None) -> ObjectTable:
    """ObjectTable of a candidate set: boxes [N, 4] xyxy, categories [N] (same value = same type)."""
    pool5, fc7 = feats.grids(image_id, boxes, cache_key)
    geom = object_geometry(xyxy_to_xywh(boxes), categories, width, height, num_cxt)
    return object_table(pool5, fc7, geom)


def pad_labels(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """[S, T] long, 0-padded to the longest row."""
    t = max(len(r) for r in rows)
    out = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


@dataclass
class TrainBatch:
    """One training batch, one entry per row as MAttNet's ``lossFun`` feeds its model: n paired
    rows, then n visual-negative rows (other object, same sentence), then n language-negative rows
    (same object, other sentence).  ``objects`` holds the 3n rows' objects (a positive twice), so
    BatchNorm sees what MAttNet's does; ``labels`` the 3n rows' sentences (word dropout per row)."""

    objects: ObjectTable        # 3n rows: [positives | visual negatives | positives]
    labels: torch.Tensor        # [3n, T]: [sentences | sentences | negative sentences]
    obj_idx: torch.Tensor       # [3n] = arange(3n)
    sent_idx: torch.Tensor      # [3n] = arange(3n)
    att_labels: torch.Tensor    # [3n, A]
    att_select: torch.Tensor    # [3n] bool: positive rows (the first n) whose ref has attribute labels
    image_ids: list[int]
    pos_sent_ids: list[int]
    neg_sent_ids: list[int]
    pos_ann_ids: list[int]
    neg_ann_ids: list[int]


def sample_negatives(rng: np.random.Generator, img: ImageObjects, a: int, ann_to_ref: dict[int, int],
                     ratio: float) -> tuple[Optional[int], Optional[int]]:
    """MAttNet's ``sample_neg_ids`` for one sentence of the ref on object ``a`` of ``img``:
    (object index in ``img`` or None, ref id or None).  None = "draw from the whole dataset".

    Visual: a same-category other object with probability ``ratio`` when there is one, else a
    different-category object when there is one, else None (MAttNet: ``random.choice(Anns)``, any
    annotated object of any image - also when only same-category objects exist and the coin said
    no).  Language: the same over the refs of those other objects (``annToRef``), else None
    (MAttNet: ``random.choice(Refs)``, any ref of any split).
    """
    cat = img.categories[a]
    others = [j for j in range(len(img.ann_ids)) if j != a]
    st_obj = [j for j in others if img.categories[j] == cat]
    dt_obj = [j for j in others if img.categories[j] != cat]
    st_ref = [ann_to_ref[j] for j in st_obj if j in ann_to_ref]
    dt_ref = [ann_to_ref[j] for j in dt_obj if j in ann_to_ref]

    def pick(same: list, diff: list):
        if same and rng.uniform() < ratio:
            return same[int(rng.integers(len(same)))]
        if diff:
            return diff[int(rng.integers(len(diff)))]
        return None

    return pick(st_obj, dt_obj), pick(st_ref, dt_ref)


class BatchSampler:
    """MAttNet's training batches (``GtMRCNLoader.getBatch``), deterministic in (seed, iteration).

    Iteration ``it`` of rank ``r`` takes images ``(it * world + r) * B ...`` of the split's images
    in a fixed order (ascending id; MAttNet never reshuffles), or of an endless sequence of seeded
    permutations with ``grounding.shuffle_images``.  For every ref of each image: ``seq_per_ref``
    of its sentences (shuffled, or padded by repetition), and per sentence one visual and one
    language negative (``sample_negatives``; the dataset-wide fallbacks keep one-object images'
    rows).  A visual negative from another image is pooled, as MAttNet pools it, from the current
    image's head map at that object's box; its location and context features are its own image's.
    """

    def __init__(self, cfg: Config, data: GroundingData, vocab: GroundingVocab, feats: VisualFeatures,
                 att_vocab: Optional[AttributeVocab] = None, rank: int = 0, world: int = 1):
        g = cfg.grounding
        self.cfg, self.g, self.data, self.vocab, self.feats = cfg, g, data, vocab, feats
        self.att_vocab = att_vocab
        self.image_ids = data.image_ids(g.train_split)
        if not self.image_ids:
            raise InputError(cfg.refs_path(), f"no image with refs in split {g.train_split!r}")
        self.all_anns = [(iid, k) for iid in sorted(data.images) for k in range(len(data.images[iid].ann_ids))]
        self.all_refs = sorted(data.refs)
        self.ann_to_ref: dict[int, dict[int, int]] = {}   # image -> {object index: ref id} (MAttNet's annToRef)
        for rid in sorted(data.refs):
            ref = data.refs[rid]
            self.ann_to_ref.setdefault(ref["image_id"], {})[ref["ann_index"]] = rid
        self.rank, self.world = rank, world
        self.max_length = max_length_for(cfg.dataset, g.max_length)

    def images_of(self, it: int) -> list[int]:
        n, b = len(self.image_ids), self.g.batch_images
        start = (it * self.world + self.rank) * b
        out = []
        for p in range(start, start + b):
            epoch, i = divmod(p, n)
            if self.g.shuffle_images:
                i = int(np.random.default_rng([self.cfg.seed, 7, epoch]).permutation(n)[i])
            out.append(self.image_ids[i])
        return out

    def _table(self, iid: int) -> ObjectTable:
        img = self.data.images[iid]
        pool5, fc7 = self.feats.grids(iid, img.boxes, cache_key=("ann", iid))
        geom = object_geometry(xyxy_to_xywh(img.boxes), img.categories, img.width, img.height, self.g.num_cxt)
        return object_table(pool5, fc7, geom)

    def _foreign_row(self, head_iid: int, iid: int, k: int) -> ObjectTable:
        """Object ``k`` of image ``iid`` as a visual negative of an image ``head_iid``: pool5 / fc7 at
        its box on ``head_iid``'s head map, everything else from its own image."""
        own = _rows(self._table(iid), [k])
        pool5, fc7 = self.feats.grids(head_iid, self.data.images[iid].boxes[k:k + 1])
        return ObjectTable(pool5, fc7, own.lfeats, own.dif_lfeats, own.cxt_fc7, own.cxt_lfeats, own.cxt_mask)

    def batch(self, it: int) -> TrainBatch:
        g, data = self.g, self.data
        pos_rows, neg_rows = [], []
        pos_sent, neg_sent, pos_ann, neg_ann, att = [], [], [], [], []
        images = self.images_of(it)
        for iid in images:
            img = data.images[iid]
            table = self._table(iid)
            rng = np.random.default_rng([self.cfg.seed, 11, it, iid])
            image_refs = [r for r in img.ref_ids if split_matches(data.refs[r]["split"], g.train_split)]
            for rid in image_refs:
                ref = data.refs[rid]
                a = ref["ann_index"]
                sids = list(ref["sent_ids"])
                if len(sids) < g.seq_per_ref:
                    sids += [sids[int(rng.integers(len(sids)))] for _ in range(g.seq_per_ref - len(sids))]
                else:
                    sids = [sids[int(i)] for i in rng.permutation(len(sids))[:g.seq_per_ref]]
                labels = self.att_vocab.labels(data.attributes[rid]) \
                    if self.att_vocab and data.attributes.get(rid) else None
                for sid in sids:
                    nj, nr = sample_negatives(rng, img, a, self.ann_to_ref.get(iid, {}), g.visual_sample_ratio)
                    if nj is None:
                        n_iid, nk = self.all_anns[int(rng.integers(len(self.all_anns)))]
                    else:
                        n_iid, nk = iid, nj
                    if nr is None:
                        nr = self.all_refs[int(rng.integers(len(self.all_refs)))]
                    nsids = data.refs[nr]["sent_ids"]
                    pos_rows.append(_rows(table, [a]))
                    neg_rows.append(_rows(table, [nk]) if n_iid == iid else self._foreign_row(iid, n_iid, nk))
                    pos_sent.append(sid)
                    neg_sent.append(nsids[int(rng.integers(len(nsids)))])
                    pos_ann.append(img.ann_ids[a])
                    neg_ann.append(data.images[n_iid].ann_ids[nk])
                    att.append(labels)
        if not pos_rows:
            raise InputError(self.cfg.refs_path(), f"training batch {it} has no (object, sentence) pair")
        n = len(pos_rows)
        objects = concat_tables(pos_rows + neg_rows + pos_rows)
        enc = [self.vocab.encode(data.sentences[s], self.max_length) for s in pos_sent + pos_sent + neg_sent]
        idx = torch.arange(3 * n, dtype=torch.long)
        n_att = self.att_vocab.num_atts if self.att_vocab else self.g.num_atts
        att_labels = torch.zeros(3 * n, n_att)
        att_select = torch.zeros(3 * n, dtype=torch.bool)
        for row, lab in enumerate(att):
            if lab is not None:
                att_labels[row] = torch.from_numpy(lab)
                att_select[row] = True
        return TrainBatch(objects, pad_labels(enc), idx, idx.clone(), att_labels, att_select, images, pos_sent,
                          neg_sent, pos_ann, neg_ann)


def _rows(table: ObjectTable, index: Sequence[int]) -> ObjectTable:
    """The rows ``index`` of ``table`` (index_select: a deterministic backward)."""
    idx = torch.as_tensor(list(index), dtype=torch.long, device=table.pool5.device)
    return ObjectTable(*(getattr(table, k).index_select(0, idx) for k in ObjectTable.__dataclass_fields__))
