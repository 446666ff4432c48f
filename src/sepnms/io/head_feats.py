"""MAttNet head features: ``<head_feats_dir>/<image_id>.h5``.

Datasets: ``head`` float32 [1, C, H', W'] (ResNet-101 C4, stride 16, of the resized image) and
``im_info`` float32 [[H_resized, W_resized, scale]].
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path


def head_path(feats_dir: str | Path, image_id: int) -> Path:
    return Path(feats_dir) / f"{int(image_id)}.h5"


def read_head(
    feats_dir: str | Path, image_id: int, expect_channels: Optional[int] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(head [1, C, H', W'] float32, im_info [3] float32 = (H, W, scale))``."""
    path = head_path(feats_dir, image_id)
    if not path.is_file():
        raise InputError(path, f"head feature file for image_id {image_id} not found")
    try:
        with h5py.File(path, "r") as f:
            if "head" not in f:
                raise InputError(path, f"no dataset 'head' (found {sorted(f.keys())}); not a MAttNet head-feature file")
            if "im_info" not in f:
                raise InputError(path, "no dataset 'im_info' (MAttNet layout needs [[H, W, scale]])")
            if not isinstance(f["head"], h5py.Dataset) or not isinstance(f["im_info"], h5py.Dataset):
                raise InputError(path, "'head' and 'im_info' must be datasets, not groups")
            head = np.asarray(f["head"][()], dtype=np.float32)
            im_info = np.asarray(f["im_info"][()], dtype=np.float32).reshape(-1)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"unreadable HDF5 (truncated or corrupt?): {exc}") from None
    if head.ndim == 3:
        head = head[None]
    if head.ndim != 4 or head.shape[0] != 1:
        raise InputError(path, f"'head' has shape {head.shape}, expected [1, C, H', W']")
    if expect_channels is not None and head.shape[1] != expect_channels:
        raise InputError(
            path, f"'head' has {head.shape[1]} channels but the model expects {expect_channels} (model.feat_channels)"
        )
    if im_info.shape[0] < 3:
        raise InputError(path, f"'im_info' has {im_info.shape[0]} values, expected [H, W, scale]")
    if not np.isfinite(head).all():
        raise InputError(path, "'head' holds NaN or Inf values")
    if not np.isfinite(im_info[:3]).all() or im_info[2] <= 0:
        raise InputError(path, f"'im_info' {im_info.tolist()} is not finite with a positive scale")
    return head, im_info[:3]


def check_head_layout(feats_dir: str | Path, image_id: int, expect_channels: Optional[int] = None) -> None:
    """Cheap check of one head-feature file without reading its data: it opens as HDF5 (a
    truncated file fails here: HDF5 compares the file size with the size it recorded), holds
    datasets ``head`` [1, C, H', W'] with ``expect_channels`` channels and ``im_info`` [.., 3]."""
    path = head_path(feats_dir, image_id)
    if not path.is_file():
        raise InputError(path, f"head feature file for image_id {image_id} not found")
    try:
        with h5py.File(path, "r") as f:
            if not isinstance(f.get("head"), h5py.Dataset) or not isinstance(f.get("im_info"), h5py.Dataset):
                raise InputError(path, f"needs datasets 'head' and 'im_info' (found {sorted(f.keys())}); "
                                       "not a MAttNet head-feature file")
            shape, n_info = tuple(f["head"].shape), int(f["im_info"].size)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"unreadable HDF5 (truncated or corrupt?): {exc}") from None
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or shape[0] != 1:
        raise InputError(path, f"'head' has shape {shape}, expected [1, C, H', W']")
    if expect_channels is not None and shape[1] != expect_channels:
        raise InputError(
            path, f"'head' has {shape[1]} channels but the model expects {expect_channels} (model.feat_channels)"
        )
    if n_info < 3:
        raise InputError(path, f"'im_info' has {n_info} values, expected [H, W, scale]")


def write_head(feats_dir: str | Path, image_id: int, head: np.ndarray, im_info, dtype=np.float32) -> Path:
    """Write ``<feats_dir>/<image_id>.h5`` atomically; ``dtype`` float32 (MAttNet's) or float16
    (half the size; :func:`read_head` returns float32 either way)."""
    path = head_path(feats_dir, image_id)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("head", data=np.asarray(head, dtype))
            f.create_dataset("im_info", data=np.asarray(im_info, np.float32).reshape(1, 3))
    return path
