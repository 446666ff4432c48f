"""The refdb: one record per expression, the unit every later stage iterates over.

Stored as ``<workdir>/prepare/refdb.json``::

    {"format": "sepnms-refdb", "version": 1, "dataset": "refcoco_unc",
     "images": {"<image_id>": {"width": W, "height": H, "split": str}},
     "expressions": [{"sent_id", "ref_id", "ann_id", "image_id", "split", "category_id",
                      "gt_box": [x1, y1, x2, y2], "tokens": [str], "sent": str}]}
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sepnms.config import Config
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_write_json
from sepnms.io.refer import Refer, split_matches
from sepnms.io.schemas import Refdb, load_json, validate

FORMAT = "sepnms-refdb"
VERSION = 1


@dataclass
class RefDB:
    dataset: str
    images: dict[int, dict[str, Any]]
    expressions: list[dict[str, Any]]

    def __post_init__(self) -> None:
        self.by_sent = {int(e["sent_id"]): e for e in self.expressions}

    def split(self, split: str) -> list[dict[str, Any]]:
        return [e for e in self.expressions if split_matches(e["split"], split)]

    def by_image(self, split: Optional[str] = None) -> dict[int, list[dict[str, Any]]]:
        """``{image_id: its expressions (of ``split``; all if None), in refdb order}``, image ids
        sorted: the unit of work of propose, encode-text and their part files."""
        out: dict[int, list[dict[str, Any]]] = {}
        for e in (self.expressions if split is None else self.split(split)):
            out.setdefault(int(e["image_id"]), []).append(e)
        return dict(sorted(out.items()))

    def image_ids(self, split: Optional[str] = None) -> list[int]:
        exprs = self.expressions if split is None else self.split(split)
        return sorted({int(e["image_id"]) for e in exprs})

    def gt_by_sent(self, split: Optional[str] = None) -> dict[int, np.ndarray]:
        exprs = self.expressions if split is None else self.split(split)
        return {int(e["sent_id"]): np.asarray(e["gt_box"], np.float32) for e in exprs}

    def image_size(self, image_id: int) -> tuple[int, int]:
        img = self.images[int(image_id)]
        return int(img["width"]), int(img["height"])

    def check_splits(self, splits, source: Optional[Path | str] = None, what: str = "split") -> None:
        """InputError unless every split of ``splits`` names at least one expression (a typo such
        as ``tset`` would otherwise give an empty output and exit 0)."""
        have = sorted({str(e["split"]) for e in self.expressions})
        for split in splits:
            if not self.split(split):
                hint = difflib.get_close_matches(str(split), have + ["testA", "testB", "test"], n=1, cutoff=0.6)
                raise InputError(source, f"{what} {split!r} has no expression in this refdb (its splits: "
                                         f"{', '.join(have)}){f'; did you mean {hint[0]!r}?' if hint else ''}")


def load_refer(cfg: Config) -> Refer:
    """The refer files of the configured dataset, with a clear error if they are missing."""
    refs_path, inst_path = cfg.refs_path(), cfg.instances_path()
    for p in (refs_path, inst_path):
        if not p.is_file():
            raise InputError(p, f"not found (dataset {cfg.dataset}, split_by {cfg.split_by}; check paths.refer_root)")
    return Refer.load(refs_path, inst_path)


def build_refdb(refer: Refer, dataset: str, sizes: dict[int, tuple[int, int]] | None = None) -> RefDB:
    """One record per expression of ``refer``.  ``sizes`` (from data.json) overrides instances."""
    images: dict[int, dict[str, Any]] = {}
    exprs: list[dict[str, Any]] = []
    for ref in refer.refs:
        iid = int(ref["image_id"])
        w, h = sizes[iid] if sizes and iid in sizes else refer.image_size(iid)
        images.setdefault(iid, {"width": w, "height": h, "split": ref["split"],
                                "file_name": refer.img_by_id[iid].get("file_name", "")})
        box = refer.ref_box(ref)
        for sent in ref["sentences"]:
            tokens = [str(t).lower() for t in sent["tokens"]]
            exprs.append(
                {
                    "sent_id": int(sent["sent_id"]),
                    "ref_id": int(ref["ref_id"]),
                    "ann_id": int(ref["ann_id"]),
                    "image_id": iid,
                    "split": str(ref["split"]),
                    "category_id": int(ref["category_id"]),
                    "gt_box": box,
                    "tokens": tokens,
                    "sent": str(sent.get("sent", " ".join(tokens))),
                }
            )
    return RefDB(dataset, images, exprs)


def save_refdb(path: Path, db: RefDB) -> None:
    atomic_write_json(
        path,
        {
            "format": FORMAT, "version": VERSION, "dataset": db.dataset,
            "images": {str(k): v for k, v in sorted(db.images.items())},
            "expressions": db.expressions,
        },
    )


def load_refdb(path: Path) -> RefDB:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not found: run `sepnms prepare` first")
    data = load_json(path, FORMAT)
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise InputError(path, f"not a {FORMAT} v{VERSION} file")
    validate(Refdb, data, path)  # every field's type, with the path of the bad one
    return RefDB(data["dataset"], {int(k): v for k, v in data["images"].items()}, data["expressions"])
