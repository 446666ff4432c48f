"""Reading image files (COCO JPEGs, the world's PNG/JPEG), with one-line errors.

``read_bgr`` is what the detector reads: ``cv2.imread(path, IMREAD_COLOR)`` exactly as MAttNet's
``Inference.predict`` / ``extract_head`` do (BGR, grey expanded, alpha dropped, and a JPEG's EXIF
orientation tag applied: such an image comes back rotated / mirrored to its upright view).
``read_rgb`` (PIL, no EXIF rotation) is for display and the CLIP crops; PIL's and OpenCV's JPEG
decoders may differ by a grey level on some pixels (IDCT details).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sepnms.errors import InputError


def coco_file_name(image_id: int) -> str:
    return f"COCO_train2014_{int(image_id):012d}.jpg"


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of the image file at ``path`` (grey and RGBA converted)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise InputError(path, "not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(path, f"cannot decode the image (truncated or corrupt?): {text}") from None
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(path, f"image has an unusable shape {arr.shape}")
    return arr


def read_bgr(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] BGR pixels as ``cv2.imread(path, cv2.IMREAD_COLOR)`` reads them (EXIF
    orientation applied), the detector's input.  A file PIL cannot decode completely (e.g. a
    truncated JPEG, which OpenCV would fill with grey) is an InputError."""
    import cv2

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file not found")
    try:  # OpenCV decodes a truncated JPEG silently (grey below the cut): refuse it first, by PIL's decoder
        with Image.open(path) as img:
            img.load()
    except UnidentifiedImageError:
        raise InputError(path, "not an image file OpenCV can read (truncated or corrupt?)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(path, f"cannot decode the image (truncated or corrupt?): {text}") from None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "not an image file OpenCV can read (truncated or corrupt?)")
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.shape[0] < 1 or bgr.shape[1] < 1:
        raise InputError(path, f"image has an unusable shape {bgr.shape}")
    return np.ascontiguousarray(bgr, dtype=np.uint8)


def image_ids_in_folder(folder: str | Path, extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png")) -> dict[int, Path]:
    """``{image_id: path}`` for the images of ``folder``; the id is the last run of digits of the
    file name (``COCO_train2014_000000123456.jpg`` -> 123456, ``42.png`` -> 42).  A name without
    digits, or two files with one id, is an InputError."""
    import re

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "image folder not found")
    out: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in extensions or not path.is_file():
            continue
        digits = re.findall(r"\d+", path.stem)
        if not digits:
            raise InputError(path, "no image id in the file name (expected digits, e.g. COCO_train2014_000000000009.jpg)")
        iid = int(digits[-1])
        if iid in out:
            raise InputError(path, f"image id {iid} also belongs to {out[iid].name}")
        out[iid] = path
    if not out:
        raise InputError(folder, f"no image files ({', '.join(extensions)}) in the folder")
    return out
