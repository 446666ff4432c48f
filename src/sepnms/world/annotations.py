"""The embedded world's annotation files, built image by image and written in the real formats.

:class:`WorldAnnotations` collects, image after image, the records of

* refer ``refs(<split_by>).p`` and COCO ``instances.json`` (``sepnms.io.refer``);
* MAttNet's ``prepro/data.json`` (``sepnms.io.mattnet_data``);
* COCO captions, ``captions/captions_train2014.json``;
* the world's own ground truth: ``mentions.json`` (which objects each expression names; read
  back by :func:`load_mentions`) and ``objects.json`` (each object's colour / size / shape);

and :meth:`WorldAnnotations.write` writes them.  :func:`image_file_name` names images as COCO does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sepnms.config import Config
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_write_json
from sepnms.io.mattnet_data import write_data_json
from sepnms.io.refer import write_instances, write_refs
from sepnms.world import render as wr
from sepnms.world.content import COCO_CATEGORIES
from sepnms.world.scene import Scene


def image_file_name(image_id: int, fmt: str) -> str:
    return f"COCO_train2014_{int(image_id):012d}.{fmt}"


def load_mentions(path: str | Path) -> dict[int, dict]:
    """Read ``mentions.json``: ``{sent_id: {referent_ann_id, mentioned_ann_ids, template}}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected an object {sent_id: {...}}")
    out: dict[int, dict] = {}
    for key, val in data.items():
        try:
            sid = int(key)
        except ValueError:
            raise InputError(path, f"key {key!r} is not a sent_id") from None
        if not isinstance(val, dict) or not {"referent_ann_id", "mentioned_ann_ids", "template"} <= set(val):
            raise InputError(path, f"sent_id {sid}: expected referent_ann_id, mentioned_ann_ids, template")
        out[sid] = {
            "referent_ann_id": int(val["referent_ann_id"]),
            "mentioned_ann_ids": [int(a) for a in val["mentioned_ann_ids"]],
            "template": str(val["template"]),
        }
    return out


def _round_list(values, nd: int = 2) -> list[float]:
    return [round(float(v), nd) for v in values]



@dataclass
class WorldAnnotations:
    """Every annotation record of a world, in the order its images were generated."""

    inst_images: list[dict] = field(default_factory=list)  # instances.json "images" (also the captions')
    inst_anns: list[dict] = field(default_factory=list)  # instances.json "annotations"
    refs: list[dict] = field(default_factory=list)  # refs(<split_by>).p
    captions_ann: list[dict] = field(default_factory=list)  # captions_train2014.json "annotations"
    data_images: list[dict] = field(default_factory=list)  # data.json "images", "anns", "refs", "sentences"
    data_anns: list[dict] = field(default_factory=list)
    data_refs: list[dict] = field(default_factory=list)
    data_sents: list[dict] = field(default_factory=list)
    mentions: dict[str, dict] = field(default_factory=dict)  # mentions.json
    objects_gt: dict[str, dict] = field(default_factory=dict)  # objects.json
    n_rel: int = 0  # sentences that name a context object
    words_used: set[str] = field(default_factory=set)  # every expression word

    def add_image(self, iid: int, fname: str, scene: Scene, split: str, fmt: str) -> None:
        """The records of one image (its objects' ``ann_id`` set): image, objects, referents and
        their sentences, numbered on from the images before it."""
        objs = scene.objects
        ref_id = len(self.refs)
        sent_id = len(self.data_sents)
        self.inst_images.append({"id": iid, "file_name": fname, "height": scene.height, "width": scene.width})
        self.data_images.append({
            "image_id": iid, "file_name": fname, "width": scene.width, "height": scene.height,
            "ref_ids": list(range(ref_id, ref_id + len(scene.referents))),
            "ann_ids": [o.ann_id for o in objs], "h5_id": len(self.data_images),
        })
        for o in objs:
            mask = o.labels > 0
            x, y, w, h = wr.mask_bbox(mask)
            self.inst_anns.append({
                "segmentation": [_round_list(wr.mask_polygon(mask))],
                "area": float(mask.sum()),
                "iscrowd": 0,
                "image_id": iid,
                "bbox": [x, y, w, h],
                "category_id": o.cat.coco_id,
                "id": o.ann_id,
            })
            self.data_anns.append({"ann_id": o.ann_id, "image_id": iid, "category_id": o.cat.coco_id,
                                   "box": [x, y, w, h], "area": float(mask.sum()), "h5_id": len(self.data_anns)})
            self.objects_gt[str(o.ann_id)] = {
                "image_id": iid, "category_id": o.cat.coco_id, "noun": o.cat.noun, "shape": o.cat.shape,
                "color": o.color, "size": o.size, "rgb": _round_list(o.rgb, 1),
            }
        for r, exprs in zip(scene.referents, scene.expressions):
            o = objs[r]
            sents, sids = [], []
            for e in exprs:
                sent = e.sent
                sents.append({"tokens": list(e.tokens), "raw": sent[0].upper() + sent[1:], "sent": sent,
                              "sent_id": sent_id})
                self.data_sents.append({"sent_id": sent_id, "tokens": list(e.tokens),
                                        "h5_id": len(self.data_sents)})
                self.mentions[str(sent_id)] = {
                    "referent_ann_id": o.ann_id,
                    "mentioned_ann_ids": [objs[c].ann_id for c in e.mentioned],
                    "template": e.template,
                }
                self.n_rel += bool(e.mentioned)
                self.words_used.update(e.tokens)
                sids.append(sent_id)
                sent_id += 1
            ref_file = f"COCO_train2014_{iid:012d}_{r}.{fmt}"
            self.refs.append({
                "ref_id": ref_id, "ann_id": o.ann_id, "category_id": o.cat.coco_id, "file_name": ref_file,
                "image_id": iid, "split": split, "sent_ids": sids, "sentences": sents,
            })
            self.data_refs.append({
                "ref_id": ref_id, "ann_id": o.ann_id, "image_id": iid, "category_id": o.cat.coco_id,
                "split": split, "sent_ids": sids,
                "box": [float(v) for v in (o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1])],
                "att_wds": [],
            })
            ref_id += 1

    def add_captions(self, iid: int, captions: list[str]) -> None:
        """One image's captions, numbered on from the images before it."""
        for cap in captions:
            self.captions_ann.append({"image_id": iid, "id": len(self.captions_ann), "caption": cap})

    def write(self, out_dir: Path, cfg: Config) -> None:
        """Write every annotation file under the world folder ``out_dir``."""
        ds_dir = out_dir / "refer" / cfg.dataset
        categories = [{"supercategory": sc, "id": cid, "name": name} for cid, name, sc in COCO_CATEGORIES]
        write_instances(ds_dir / "instances.json",
                        {"images": self.inst_images, "annotations": self.inst_anns, "categories": categories})
        write_refs(ds_dir / f"refs({cfg.split_by}).p", self.refs)

        vocab = sorted(self.words_used)
        word_to_ix = {"<PAD>": 0}
        for w in vocab:
            word_to_ix[w] = len(word_to_ix)
        for special in ("<UNK>", "<BOS>", "<EOS>"):
            word_to_ix[special] = len(word_to_ix)
        label_length = max((len(s["tokens"]) for s in self.data_sents), default=0)
        write_data_json(out_dir / "prepro" / "data.json", {
            "refs": self.data_refs, "images": self.data_images, "anns": self.data_anns,
            "sentences": self.data_sents,
            "word_to_ix": word_to_ix, "cat_to_ix": {name: cid for cid, name, _ in COCO_CATEGORIES},
            "label_length": label_length,
            # MAttNet's prepro.py also writes its attribute vocabulary (refer-parser2 attribute words, top
            # 50) and every loader reads it; the world's refs carry no parsed attributes (att_wds: [])
            "att_to_ix": {}, "att_to_cnt": {},
        })
        atomic_write_json(out_dir / "mentions.json", self.mentions)
        atomic_write_json(out_dir / "objects.json", self.objects_gt)
        atomic_write_json(out_dir / "captions" / "captions_train2014.json",
                          {"images": self.inst_images, "annotations": self.captions_ann})
