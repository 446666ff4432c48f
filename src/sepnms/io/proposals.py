"""Per-expression candidate tables in HDF5 (no pickle needed to read them; versioned).

One file per split.  Expressions are stored in CSR layout: expression ``e`` owns rows
``offsets[e]:offsets[e+1]`` of every per-candidate column.

Layout (format ``sepnms-proposals`` version 1)::

    attrs:  format="sepnms-proposals", version=1, split, stage ("scored" | "fused"),
            plus free-form string attrs (fusion rule, config fingerprint, ...)
    sent_id   int64   [E]
    ref_id    int64   [E]
    image_id  int64   [E]
    offsets   int64   [E + 1]
    box       float32 [M, 4]   xyxy, original-image pixels
    cls_idx   int32   [M]      detector class index 1..80
    det_score float32 [M]      detector class probability S_det
    columns named in attr ``score_columns`` (float32 [M] each), e.g. ``ref_score``
    (sigmoid of the ref logit), ``ctx_score`` (sigmoid of the ctx logit), ``clip_score``,
    ``score`` (fused).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path
from sepnms.io.fs import ensure_free

FORMAT = "sepnms-proposals"
VERSION = 1
BASE_COLUMNS = ("box", "cls_idx", "det_score")


@dataclass
class ExpressionCandidates:
    """The candidates of one expression.  Arrays are aligned on the first axis (M rows)."""

    sent_id: int
    ref_id: int
    image_id: int
    box: np.ndarray  # [M, 4] float32 xyxy
    cls_idx: np.ndarray  # [M] int32
    det_score: np.ndarray  # [M] float32
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [M] float32

    def __len__(self) -> int:
        return int(self.box.shape[0])

    def take(self, idx: np.ndarray) -> "ExpressionCandidates":
        return ExpressionCandidates(
            self.sent_id, self.ref_id, self.image_id, self.box[idx], self.cls_idx[idx],
            self.det_score[idx], {k: v[idx] for k, v in self.scores.items()},
        )


@dataclass
class ProposalTable:
    """All expressions of one split."""

    split: str
    stage: str
    expressions: list[ExpressionCandidates]
    attrs: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ExpressionCandidates]:
        return iter(self.expressions)

    def __len__(self) -> int:
        return len(self.expressions)

    def by_sent_id(self) -> dict[int, ExpressionCandidates]:
        return {e.sent_id: e for e in self.expressions}

    def score_columns(self) -> list[str]:
        return sorted(self.expressions[0].scores) if self.expressions else []


def write_proposals(path: str | Path, table: ProposalTable) -> None:
    """Write ``table`` atomically."""
    exprs = table.expressions
    cols = sorted({k for e in exprs for k in e.scores})
    for e in exprs:
        if sorted(e.scores) != cols:
            raise ValueError(f"sent_id {e.sent_id}: score columns {sorted(e.scores)} differ from {cols}")
    counts = np.array([len(e) for e in exprs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def cat(getter, shape, dtype):
        parts = [np.asarray(getter(e), dtype=dtype).reshape((-1,) + shape) for e in exprs]
        return np.concatenate(parts) if parts else np.zeros((0,) + shape, dtype)

    # a full disk inside an HDF5 write can crash the library itself: check the known size first
    ensure_free(path, int(counts.sum()) * (24 + 4 * len(cols)) + 24 * len(exprs), "proposal table")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["split"] = table.split
            f.attrs["stage"] = table.stage
            f.attrs["score_columns"] = ",".join(cols)
            for k, v in table.attrs.items():
                f.attrs[f"meta_{k}"] = str(v)
            f.create_dataset("sent_id", data=np.array([e.sent_id for e in exprs], np.int64))
            f.create_dataset("ref_id", data=np.array([e.ref_id for e in exprs], np.int64))
            f.create_dataset("image_id", data=np.array([e.image_id for e in exprs], np.int64))
            f.create_dataset("offsets", data=offsets)
            f.create_dataset("box", data=cat(lambda e: e.box, (4,), np.float32))
            f.create_dataset("cls_idx", data=cat(lambda e: e.cls_idx, (), np.int32))
            f.create_dataset("det_score", data=cat(lambda e: e.det_score, (), np.float32))
            for c in cols:
                f.create_dataset(c, data=cat(lambda e, c=c: e.scores[c], (), np.float32))


def read_proposals(path: str | Path) -> ProposalTable:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "proposal file not found (run the stage that writes it first)")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputError(path, f"not a {FORMAT} file")
            version = int(f.attrs.get("version", -1))
            if version != VERSION:
                raise InputError(path, f"format version {version}; this sepnms reads version {VERSION}")
            cols = [c for c in str(f.attrs.get("score_columns", "")).split(",") if c]
            data = {k: f[k][()] for k in ("sent_id", "ref_id", "image_id", "offsets", *BASE_COLUMNS, *cols)}
            split, stage = str(f.attrs["split"]), str(f.attrs["stage"])
            attrs = {k[5:]: str(v) for k, v in f.attrs.items() if k.startswith("meta_")}
    except InputError:
        raise
    except (OSError, KeyError) as exc:
        raise InputError(path, f"unreadable proposal file (truncated or corrupt?): {exc}") from None
    off = data["offsets"]
    n_rows = int(data["box"].shape[0])
    if off.shape != (len(data["sent_id"]) + 1,) or int(off[0]) != 0 or int(off[-1]) != n_rows or (np.diff(off) < 0).any():
        raise InputError(path, f"corrupt 'offsets' (for {len(data['sent_id'])} expressions and {n_rows} rows)")
    for col in ("box", "det_score", *cols):
        bad = ~np.isfinite(np.asarray(data[col], dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(n_rows, -1).any(axis=1))[0]) if n_rows else 0
            e = int(np.searchsorted(off, row, side="right")) - 1
            raise InputError(path, f"column {col!r} holds NaN or Inf (first at sent_id {int(data['sent_id'][e])})")
    exprs = []
    for e in range(len(data["sent_id"])):
        s = slice(int(off[e]), int(off[e + 1]))
        exprs.append(
            ExpressionCandidates(
                int(data["sent_id"][e]), int(data["ref_id"][e]), int(data["image_id"][e]),
                data["box"][s], data["cls_idx"][s], data["det_score"][s], {c: data[c][s] for c in cols},
            )
        )
    return ProposalTable(split, stage, exprs, attrs)


def proposals_path(workdir: str | Path, name: str, split: str) -> Path:
    """``<workdir>/proposals/<name>/<split>.h5``."""
    return Path(workdir) / "proposals" / name / f"{split}.h5"
