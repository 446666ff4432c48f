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
            _check_declared(path, tuple(f["head"].shape), int(f["im_info"].size), expect_channels)
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


#: bounds on what a head-feature file may declare, checked before anything is read: MAttNet's
#: heads are [1, 1024, ~38, ~63] float32 (about 10 MB); ``im_info`` holds 3 values
MAX_HEAD_BYTES = 1 << 31
MAX_IM_INFO_VALUES = 16
#: tolerance of the geometry checks: the map may differ from ceil(H_r / stride) by this many
#: cells (padding conventions differ), and H_r from H * scale by this many pixels (rounding)
MAP_TOLERANCE_CELLS = 2
RESIZE_TOLERANCE_PX = 2.0


def _check_declared(path: Path, shape: tuple[int, ...], n_info: int, expect_channels: Optional[int]) -> tuple[int, ...]:
    """The declared layout, before any data is read: [1, C, H', W'] (or [C, H', W']) with C, H',
    W' >= 1, at most ``MAX_HEAD_BYTES`` of float32, the expected channel count, a small im_info."""
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or shape[0] != 1:
        raise InputError(path, f"'head' has shape {shape}, expected [1, C, H', W']")
    if min(shape[1:]) < 1:
        raise InputError(path, f"'head' has shape {shape}: an empty feature map (no channel, row or column)")
    if expect_channels is not None and shape[1] != expect_channels:
        raise InputError(
            path, f"'head' has {shape[1]} channels but the model expects {expect_channels} (model.feat_channels)"
        )
    nbytes = 4 * int(np.prod(shape, dtype=np.float64))
    if nbytes > MAX_HEAD_BYTES:
        raise InputError(path, f"'head' declares shape {shape} ({nbytes / 2**30:.1f} GiB as float32), over the bound "
                               f"of {MAX_HEAD_BYTES / 2**30:.0f} GiB: not a head-feature map (corrupt file?)")
    if n_info < 3:
        raise InputError(path, f"'im_info' has {n_info} values, expected [H, W, scale]")
    if n_info > MAX_IM_INFO_VALUES:
        raise InputError(path, f"'im_info' declares {n_info} values, expected [[H, W, scale]]")
    return shape


def check_geometry(path: Path, shape: tuple[int, ...], im_info, image_size: tuple[int, int], stride: int) -> None:
    """The head map fits the image: ``im_info`` = (H_r, W_r, scale) is finite with a positive
    scale, (H_r, W_r) = round((H, W) x scale) of the original ``image_size`` = (W, H), and the
    map is [ceil(H_r / stride), ceil(W_r / stride)] (each within ``MAP_TOLERANCE_CELLS``).
    A map of another image, a 1 x 1 map or an absurd scale (every candidate pooled from the
    same cell) is refused here instead of scoring silently wrong."""
    info = np.asarray(im_info, np.float64).reshape(-1)[:3]
    if not np.isfinite(info).all() or info[2] <= 0 or info[0] <= 0 or info[1] <= 0:
        raise InputError(path, f"'im_info' {info.tolist()} is not finite with a positive size and scale")
    w, h = image_size
    h_r, w_r, scale = info
    tol = max(RESIZE_TOLERANCE_PX, 0.01 * max(h, w) * scale)
    if abs(h_r - h * scale) > tol or abs(w_r - w * scale) > tol:
        raise InputError(path, f"'im_info' [{h_r:g}, {w_r:g}, scale {scale:g}] does not fit the {w}x{h} image "
                               f"(a {w}x{h} image at scale {scale:g} is {h * scale:.0f} x {w * scale:.0f}): "
                               "features of another image, or a wrong scale")
    want = (int(np.ceil(h_r / stride)), int(np.ceil(w_r / stride)))
    got = tuple(int(v) for v in shape[-2:])
    if abs(got[0] - want[0]) > MAP_TOLERANCE_CELLS or abs(got[1] - want[1]) > MAP_TOLERANCE_CELLS:
        raise InputError(path, f"'head' map is {got[0]}x{got[1]} but a {h_r:g}x{w_r:g} resized image at stride "
                               f"{stride} (model.feat_stride) gives about {want[0]}x{want[1]}: features of another "
                               "image or another backbone")


def check_head_layout(feats_dir: str | Path, image_id: int, expect_channels: Optional[int] = None,
                      image_size: Optional[tuple[int, int]] = None, stride: Optional[int] = None) -> None:
    """Cheap check of one head-feature file without reading its map: it opens as HDF5 (a
    truncated file fails here: HDF5 compares the file size with the size it recorded), holds
    datasets ``head`` [1, C, H', W'] with ``expect_channels`` channels and ``im_info`` [.., 3];
    with ``image_size`` (W, H) and ``stride``, the map's geometry fits the image
    (:func:`check_geometry`; reads the 3 values of ``im_info``)."""
    path = head_path(feats_dir, image_id)
    if not path.is_file():
        raise InputError(path, f"head feature file for image_id {image_id} not found")
    try:
        with h5py.File(path, "r") as f:
            if not isinstance(f.get("head"), h5py.Dataset) or not isinstance(f.get("im_info"), h5py.Dataset):
                raise InputError(path, f"needs datasets 'head' and 'im_info' (found {sorted(f.keys())}); "
                                       "not a MAttNet head-feature file")
            shape = _check_declared(path, tuple(f["head"].shape), int(f["im_info"].size), expect_channels)
            im_info = np.asarray(f["im_info"][()], dtype=np.float64).reshape(-1) if image_size is not None else None
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"unreadable HDF5 (truncated or corrupt?): {exc}") from None
    if image_size is not None and stride is not None:
        check_geometry(path, shape, im_info, image_size, stride)


def write_head(feats_dir: str | Path, image_id: int, head: np.ndarray, im_info, dtype=np.float32) -> Path:
    """Write ``<feats_dir>/<image_id>.h5`` atomically; ``dtype`` float32 (MAttNet's) or float16
    (half the size; :func:`read_head` returns float32 either way)."""
    path = head_path(feats_dir, image_id)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("head", data=np.asarray(head, dtype))
            f.create_dataset("im_info", data=np.asarray(im_info, np.float32).reshape(1, 3))
    return path
