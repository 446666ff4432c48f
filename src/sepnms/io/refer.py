"""The refer toolkit's files: ``refs(<splitBy>).p`` and ``instances.json``.

``refs(*).p`` is a pickle written by Python 2 (load with ``encoding='latin1'``): a list of refs
``{ref_id, ann_id, category_id, file_name, image_id, split, sent_ids, sentences}``, each sentence
``{tokens, raw, sent, sent_id}``.  ``instances.json`` is COCO style.  :class:`Refer` mirrors the
refer API's lookups and its split semantics (``getRefIds(split='testA')`` matches every ref whose
split contains ``'A'``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from sepnms.errors import InputError
from sepnms.io import safe_pickle
from sepnms.io.atomic import atomic_write_json
from sepnms.io.schemas import REFS, Instances, load_json, validate

REF_KEYS = ("ref_id", "ann_id", "category_id", "image_id", "split", "sent_ids", "sentences")
SENT_KEYS = ("tokens", "sent", "sent_id")


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a ``refs(*).p`` pickle.  Returns the list of refs."""
    path = Path(path)
    refs = safe_pickle.load(path, encoding="latin1")
    if not isinstance(refs, list) or not refs:
        raise InputError(path, "expected a non-empty list of refs (refer layout)")
    seen_sent: set[int] = set()
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise InputError(path, f"ref #{i} is a {type(ref).__name__}, expected a dict")
        missing = [k for k in REF_KEYS if k not in ref]
        if missing:
            raise InputError(path, f"ref #{i} lacks keys {missing} (not a refer refs file?)")
        if not isinstance(ref["sentences"], list):
            raise InputError(path, f"ref_id {ref['ref_id']}: 'sentences' is not a list")
        for sent in ref["sentences"]:
            if not isinstance(sent, dict):
                raise InputError(path, f"ref_id {ref['ref_id']}: a sentence is not a dict")
            miss = [k for k in SENT_KEYS if k not in sent]
            if miss:
                raise InputError(path, f"a sentence of ref_id {ref['ref_id']} lacks keys {miss}")
            try:
                sid = int(sent["sent_id"])
            except (TypeError, ValueError):
                raise InputError(path, f"ref_id {ref['ref_id']}: sent_id {sent['sent_id']!r} is not an integer") from None
            if sid in seen_sent:
                raise InputError(path, f"duplicate sent_id {sid} (ref_id {ref['ref_id']})")
            seen_sent.add(sid)
    validate(REFS, refs, path)  # every field's type, with the path of the bad one
    return refs


def write_refs(path: str | Path, refs: list[dict[str, Any]]) -> None:
    """Write refs as the refer toolkit does (pickle protocol 2, readable by Python 2)."""
    safe_pickle.dump(path, refs, protocol=2)


def load_instances(path: str | Path) -> dict[str, Any]:
    """Read and validate a COCO-style ``instances.json``."""
    path = Path(path)
    data = load_json(path, "COCO instances file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(path, f"missing or malformed '{key}' list (COCO instances layout)")
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            break  # the schema below names it
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise InputError(path, f"annotation {ann.get('id', '?')} lacks '{key}'")
        if isinstance(ann["bbox"], (list, tuple)) and len(ann["bbox"]) != 4:
            raise InputError(path, f"annotation {ann['id']} bbox must be [x, y, w, h]")
    validate(Instances, data, path)  # every field's type, with the path of the bad one
    for key in ("annotations", "images", "categories"):
        _check_unique(path, data[key], key)
    for i, ann in enumerate(data["annotations"]):
        w, h = ann["bbox"][2:]
        if w < 0 or h < 0:
            raise InputError(path, f"annotations[{i}] (id {ann['id']}): bbox {ann['bbox']} has a negative "
                                   f"{'width' if w < 0 else 'height'} (COCO boxes are [x, y, w, h] with w, h >= 0)")
    return data


def _check_unique(path: Path, items: list[dict[str, Any]], key: str) -> None:
    """InputError on the first ``id`` of ``data[key]`` that appears twice (a later copy would
    silently replace the first in every lookup)."""
    first: dict[int, int] = {}
    for i, item in enumerate(items):
        j = first.setdefault(int(item["id"]), i)
        if j != i:
            raise InputError(path, f"duplicate {key[:-1].replace('categorie', 'category')} id {item['id']} "
                                   f"({key}[{j}] and {key}[{i}]): a later copy would silently replace the first")


def write_instances(path: str | Path, instances: dict[str, Any]) -> None:
    atomic_write_json(path, instances)


def xywh_to_xyxy(box: Iterable[float]) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` with ``x2 = x + w`` (no +1)."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def split_matches(ref_split: str, split: str) -> bool:
    """The refer API's split semantics: testA/testB match by letter, else equality."""
    if split in ("testA", "testB", "testC"):
        return split[-1] in ref_split
    if split == "test":
        return "test" in ref_split
    return ref_split == split


@dataclass
class Refer:
    """Indexed refs + instances for one dataset / splitBy, validated against each other."""

    refs: list[dict[str, Any]]
    instances: dict[str, Any]
    refs_path: Optional[Path] = None
    instances_path: Optional[Path] = None
    ref_by_id: dict[int, dict] = field(init=False)
    ann_by_id: dict[int, dict] = field(init=False)
    img_by_id: dict[int, dict] = field(init=False)
    cat_name: dict[int, str] = field(init=False)
    anns_by_image: dict[int, list[dict]] = field(init=False)
    refs_by_image: dict[int, list[dict]] = field(init=False)
    sent_by_id: dict[int, dict] = field(init=False)
    ref_by_sent: dict[int, dict] = field(init=False)

    def __post_init__(self) -> None:
        self.ann_by_id = {int(a["id"]): a for a in self.instances["annotations"]}
        self.img_by_id = {int(i["id"]): i for i in self.instances["images"]}
        self.cat_name = {int(c["id"]): c["name"] for c in self.instances["categories"]}
        self.anns_by_image = {}
        for ann in self.instances["annotations"]:
            self.anns_by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self.ref_by_id, self.refs_by_image, self.sent_by_id, self.ref_by_sent = {}, {}, {}, {}
        missing_ann = []
        for ref in self.refs:
            self.ref_by_id[int(ref["ref_id"])] = ref
            self.refs_by_image.setdefault(int(ref["image_id"]), []).append(ref)
            if int(ref["ann_id"]) not in self.ann_by_id:
                missing_ann.append(int(ref["ann_id"]))
            for sent in ref["sentences"]:
                self.sent_by_id[int(sent["sent_id"])] = sent
                self.ref_by_sent[int(sent["sent_id"])] = ref
        if missing_ann:
            frac = len(missing_ann) / len(self.refs)
            cause = ("refs and instances are from different datasets" if frac >= 0.5 else
                     "instances.json lacks some annotations (an incomplete or filtered copy?), "
                     "or refs and instances are from different datasets")
            raise InputError(
                self.refs_path,
                f"{len(missing_ann)} of {len(self.refs)} refs ({frac:.0%}) name ann_ids absent from "
                f"{self.instances_path or 'instances.json'} (e.g. {missing_ann[:3]}): {cause}",
            )
        bad_img = [r["ref_id"] for r in self.refs if int(r["image_id"]) not in self.img_by_id]
        if bad_img:
            raise InputError(
                self.refs_path, f"refs {bad_img[:3]} name image_ids absent from instances.json"
            )
        mismatch = [r for r in self.refs
                    if int(self.ann_by_id[int(r["ann_id"])]["image_id"]) != int(r["image_id"])
                    or int(self.ann_by_id[int(r["ann_id"])]["category_id"]) != int(r["category_id"])]
        if mismatch:
            r = mismatch[0]
            ann = self.ann_by_id[int(r["ann_id"])]
            raise InputError(
                self.refs_path,
                f"{len(mismatch)} of {len(self.refs)} refs disagree with their annotation in "
                f"{self.instances_path or 'instances.json'} (e.g. ref_id {r['ref_id']}: image_id "
                f"{r['image_id']}, category_id {r['category_id']}; its ann_id {r['ann_id']}: image_id "
                f"{ann['image_id']}, category_id {ann['category_id']}): refs and instances are from "
                "different datasets",
            )

    @classmethod
    def load(cls, refs_path: str | Path, instances_path: str | Path) -> "Refer":
        return cls(load_refs(refs_path), load_instances(instances_path), Path(refs_path), Path(instances_path))

    # refer-API-style lookups ------------------------------------------------------
    def get_ref_ids(self, split: Optional[str] = None) -> list[int]:
        return [int(r["ref_id"]) for r in self.refs if split is None or split_matches(r["split"], split)]

    def refs_of_split(self, split: Optional[str] = None) -> list[dict[str, Any]]:
        return [r for r in self.refs if split is None or split_matches(r["split"], split)]

    def image_ids(self, split: Optional[str] = None) -> list[int]:
        return sorted({int(r["image_id"]) for r in self.refs_of_split(split)})

    def ref_box(self, ref: dict[str, Any]) -> list[float]:
        """The referent's GT box, xyxy."""
        return xywh_to_xyxy(self.ann_by_id[int(ref["ann_id"])]["bbox"])

    def image_size(self, image_id: int) -> tuple[int, int]:
        """(width, height) of the original image."""
        img = self.img_by_id[int(image_id)]
        return int(img["width"]), int(img["height"])

    def category_names(self) -> dict[int, str]:
        return dict(self.cat_name)
