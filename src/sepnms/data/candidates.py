"""Initial filtering: the candidate pool of each image.

Every (box, class) pair of the detector's class-specific boxes whose class probability exceeds
``threshold`` (0.05); if fewer than ``min_count`` remain (32 for training images, 1 at test), the
threshold is lowered in steps of ``step`` (0.005) until enough do.  No NMS: a region may appear
once per class.

Validation images carry two pools, as in the released code: training's validation loss samples
RoIs from the pool built with the *training* minimum (32), while ``propose`` / evaluation use the
test-time pool (minimum 1), a subset stored as the mask ``test_pool``.

Stored as ``<workdir>/prepare/candidates.h5``, one group per image id with ``box`` float32 [M, 4]
(xyxy), ``cls_idx`` int32 [M] (1..80), ``det_score`` float32 [M] and attr ``threshold``; a
validation image also has ``test_pool`` bool [M] and attr ``threshold_test``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path
from sepnms.rules import passes_candidate_filter

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
    test_pool: np.ndarray | None = None
    """[M] bool: the members of the test-time pool (validation images only; None = all)."""
    threshold_test: float | None = None

    def for_test(self) -> "Candidates":
        """The test-time pool (itself when the image has a single pool)."""
        if self.test_pool is None:
            return self
        m = self.test_pool
        return Candidates(self.image_id, self.box[m], self.cls_idx[m], self.det_score[m], float(self.threshold_test))

    def __len__(self) -> int:
        return int(self.box.shape[0])


def _lowered_threshold(probs: np.ndarray, threshold: float, step: float, min_count: int) -> float:
    thr = float(threshold)
    while True:
        if int(passes_candidate_filter(probs, thr).sum()) >= min_count or thr <= 0:
            return thr
        thr = round(thr - step, 10)


def initial_filter(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, step: float, min_count: int,
    image_id: int = -1, source: Path | None = None, test_min_count: int | None = None,
) -> Candidates:
    """Filter one image's detections.

    Args:
        boxes: [N, 81, 4] class-specific xyxy boxes (column 0 = background, dropped).
        scores: [N, 81] per-class probabilities.
        test_min_count: when given (validation images), also mark the members of the pool
            built with this minimum (``test_pool``); ``min_count`` >= it gives a superset.
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
    thr = _lowered_threshold(probs, threshold, step, min_count)
    n_idx, c_idx = np.nonzero(passes_candidate_filter(probs, thr))
    order = np.lexsort((-probs[n_idx, c_idx], c_idx))
    n_idx, c_idx = n_idx[order], c_idx[order]
    test_pool, thr_test = None, None
    if test_min_count is not None:
        thr_test = _lowered_threshold(probs, threshold, step, test_min_count)
        test_pool = passes_candidate_filter(probs[n_idx, c_idx], thr_test)
        if thr_test < thr:
            raise ValueError(f"test_min_count ({test_min_count}) must not exceed min_count ({min_count})")
    return Candidates(
        int(image_id),
        boxes[n_idx, c_idx + 1].astype(np.float32),
        (c_idx + 1).astype(np.int32),
        probs[n_idx, c_idx].astype(np.float32),
        thr,
        test_pool,
        thr_test,
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
                if c.test_pool is not None:
                    g.create_dataset("test_pool", data=np.asarray(c.test_pool, dtype=bool))
                    g.attrs["threshold_test"] = float(c.threshold_test)


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

    def get(self, image_id: int, training: bool = False) -> Candidates:
        """The image's pool: the test-time pool, or with ``training`` the one training samples
        RoIs from (they differ on validation images only)."""
        f = self._file()
        key = str(int(image_id))
        if key not in f:
            raise InputError(self.path, f"no candidates for image_id {image_id}")
        g = f[key]
        test_pool = g["test_pool"][()].astype(bool) if "test_pool" in g else None
        c = Candidates(int(image_id), g["box"][()], g["cls_idx"][()], g["det_score"][()],
                       float(g.attrs["threshold"]), test_pool,
                       float(g.attrs["threshold_test"]) if test_pool is not None else None)
        return c if training else c.for_test()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
