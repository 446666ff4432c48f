"""Initial filtering: the candidate pool of each image.

Every (box, class) pair of the detector's class-specific boxes whose class probability exceeds
``threshold`` (0.05); if fewer than ``min_count`` remain (32 for training images, 1 at test), the
threshold is lowered in steps of ``step`` (0.005) until enough do.  No NMS: a region may appear
once per class.

Stored as ``<workdir>/prepare/candidates.h5``, one group per image id with ``box`` float32 [M, 4]
(xyxy), ``cls_idx`` int32 [M] (1..80), ``det_score`` float32 [M] and attr ``threshold``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path

FORMAT = "sepnms-candidates"
VERSION = 1


@dataclass
class Candidates:
    """The pool of one image.  box [M, 4] xyxy; cls_idx [M] in 1..80; det_score [M]."""

    image_id: int
    box: np.ndarray
    cls_idx: np.ndarray
    det_score: np.ndarray
    threshold: float

    def __len__(self) -> int:
        return int(self.box.shape[0])


def initial_filter(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, step: float, min_count: int,
    image_id: int = -1, source: Path | None = None,
) -> Candidates:
    """Filter one image's detections.

    Args:
        boxes: [N, 81, 4] class-specific xyxy boxes (column 0 = background, dropped).
        scores: [N, 81] per-class probabilities.
    Returns the pool sorted by (class, descending score) for a stable order.
    """
    probs = scores[:, 1:]
    if not np.isfinite(probs).all() or not np.isfinite(boxes).all():
        raise InputError(source, f"image_id {image_id}: NaN or Inf in detector boxes or scores")
    total = probs.size
    if total == 0 or min_count > total:
        raise InputError(
            source, f"image_id {image_id}: {total} (box, class) pairs, fewer than the {min_count} needed"
        )
    thr = float(threshold)
    while True:
        mask = probs > thr
        if int(mask.sum()) >= min_count or thr <= 0:
            break
        thr = round(thr - step, 10)
    n_idx, c_idx = np.nonzero(mask)
    order = np.lexsort((-probs[n_idx, c_idx], c_idx))
    n_idx, c_idx = n_idx[order], c_idx[order]
    return Candidates(
        int(image_id),
        boxes[n_idx, c_idx + 1].astype(np.float32),
        (c_idx + 1).astype(np.int32),
        probs[n_idx, c_idx].astype(np.float32),
        thr,
    )


def clean_boxes(box: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip xyxy boxes to the image and return a mask of boxes with positive area."""
    box[:, [0, 2]] = box[:, [0, 2]].clip(0, width)
    box[:, [1, 3]] = box[:, [1, 3]].clip(0, height)
    return (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])


def save_candidates(path: Path, pools: dict[int, Candidates]) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            for iid in sorted(pools):
                c = pools[iid]
                g = f.create_group(str(iid))
                g.create_dataset("box", data=c.box)
                g.create_dataset("cls_idx", data=c.cls_idx)
                g.create_dataset("det_score", data=c.det_score)
                g.attrs["threshold"] = c.threshold


class CandidateStore:
    """Read access to ``candidates.h5`` (opened lazily; safe to pickle into workers)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "not found: run `sepnms prepare` first")
        self._f = None

    def _file(self):
        if self._f is None:
            try:
                self._f = h5py.File(self.path, "r")
            except OSError as exc:
                raise InputError(self.path, f"unreadable HDF5 ({exc})") from None
            if self._f.attrs.get("format") != FORMAT:
                raise InputError(self.path, f"not a {FORMAT} file")
        return self._f

    def __getstate__(self):
        return {"path": self.path, "_f": None}

    def image_ids(self) -> list[int]:
        return sorted(int(k) for k in self._file().keys())

    def get(self, image_id: int) -> Candidates:
        f = self._file()
        key = str(int(image_id))
        if key not in f:
            raise InputError(self.path, f"no candidates for image_id {image_id}")
        g = f[key]
        return Candidates(int(image_id), g["box"][()], g["cls_idx"][()], g["det_score"][()],
                          float(g.attrs["threshold"]))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
