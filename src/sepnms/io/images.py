"""Reading image files (COCO JPEGs, the world's PNG/JPEG), with one-line errors.

``read_bgr`` is what the detector reads: ``cv2.imread(path, IMREAD_COLOR)`` exactly as MAttNet's
``Inference.predict`` / ``extract_head`` do (BGR, grey expanded, alpha dropped, and a JPEG's EXIF
orientation tag applied: such an image comes back rotated / mirrored to its upright view).
``read_rgb`` (PIL, no EXIF rotation) is for display and the CLIP crops; PIL's and OpenCV's JPEG
decoders may differ by a grey level on some pixels (IDCT details).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from sepnms.errors import InputError


def coco_file_name(image_id: int) -> str:
    return f"COCO_train2014_{int(image_id):012d}.jpg"


def dataset_image_path(folder: str | Path, image_id: int, file_name: Optional[str] = None) -> Path:
    """A dataset image's file: ``file_name`` in ``folder``, else COCO train2014's name for ``image_id``."""
    return Path(folder) / (file_name or coco_file_name(image_id))


#: PIL modes of more than 8 bits per sample, and the largest value of each (scaled to 0..255)
_WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


def _to_rgb8(img, path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB of a decoded PIL image of any mode and bit depth.

    8-bit modes (1, L, P, PA, LA, RGB, RGBA, CMYK, YCbCr, ...) go through PIL's ``convert``
    (alpha dropped, as ``cv2.imread`` does).  16-bit grey (``I;16*``, and ``I``, which PIL uses for
    16-bit PNGs) is scaled by 255 / 65535 - PIL's own ``convert`` clips it at 255, so a 16-bit
    image read as all white.  Float images (``F``) are taken as 0..1 when their maximum is <= 1,
    else as 0..255."""
    if img.mode in _WIDE_MODES:
        arr = np.asarray(img).astype(np.float64)
        grey = np.clip(np.rint(arr * (255.0 / _WIDE_MODES[img.mode])), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        arr = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    try:
        rgb = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(path, f"image mode {img.mode} cannot be converted to RGB ({' '.join(str(exc).split())})") from None
    return np.asarray(rgb, dtype=np.uint8)


def _cv2_bgr(path: Path) -> np.ndarray:
    """``cv2.imread(path, IMREAD_COLOR)``: BGR, grey expanded, alpha dropped, 16-bit scaled to 8,
    a JPEG's EXIF orientation tag applied (MAttNet's ``Inference`` reads images so)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "not an image file OpenCV can read (truncated or corrupt?)")
    return np.ascontiguousarray(bgr, dtype=np.uint8)


def read_image(path: str | Path, *, max_pixels: Optional[int] = None, expect_size: Optional[tuple[int, int]] = None,
               resized: Optional[Callable[[int, int], tuple[int, int]]] = None, bgr: bool = False) -> np.ndarray:
    """The one gate every image read goes through: uint8 [H, W, 3] RGB pixels of ``path`` (BGR as
    ``cv2.imread`` decodes them, EXIF orientation applied, when ``bgr``: the detector's input).

    Before decoding (from the header only): the pixel count is at most ``max_pixels``
    (``images.max_pixels``; a PNG declaring 60000 x 60000 is refused, not allocated); the size is
    ``expect_size`` = (width, height), the dataset's record of the image, when given; and
    ``resized(height, width)`` - the size the consumer resizes to, e.g. the detector's - has no
    side of 0 (a 4000 x 1 image).  Then every mode and bit depth is converted to 8-bit RGB
    (:func:`_to_rgb8`).  Any failure is an InputError naming the file.  The decoder sits behind
    this function: callers get the array, never the decoder's object.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file not found")
    try:
        with warnings.catch_warnings():  # the bound below is ours; PIL's warning is not needed
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            width, height = img.size
            if width < 1 or height < 1:
                raise InputError(path, f"image declares an unusable size {width}x{height}")
            if max_pixels is not None and width * height > max_pixels:
                raise InputError(path, f"image declares {width}x{height} = {width * height} pixels, over the bound of "
                                       f"{max_pixels} (images.max_pixels): refused before decoding (corrupt or "
                                       "hostile file, or raise images.max_pixels)")
            if expect_size is not None and (width, height) != tuple(int(v) for v in expect_size):
                raise InputError(path, f"image is {width}x{height} but the dataset records {int(expect_size[0])}x"
                                       f"{int(expect_size[1])} for it: another image under this name? (boxes and "
                                       "features are in the recorded size)")
            if resized is not None:
                rh, rw = resized(height, width)
                if rh < 1 or rw < 1:
                    raise InputError(path, f"image of {width}x{height} would be resized to {rw}x{rh}: a side of 0 "
                                           "pixels (too thin an image for the detector's resize)")
            img.load()  # a full decode by PIL first: OpenCV fills a truncated JPEG with grey, silently
            arr = _cv2_bgr(path) if bgr else _to_rgb8(img, path)
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"refused before decoding: {' '.join(str(exc).split())}") from None
    except UnidentifiedImageError:
        raise InputError(path, "not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(path, f"cannot decode the image (truncated or corrupt?): {text}") from None
    except MemoryError:
        raise InputError(path, "out of memory decoding the image; lower images.max_pixels") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] != 3:
        raise InputError(path, f"image has an unusable shape {arr.shape}")
    return arr


def read_bgr(path: str | Path, max_pixels: Optional[int] = None, expect_size: Optional[tuple[int, int]] = None,
             resized: Optional[Callable[[int, int], tuple[int, int]]] = None) -> np.ndarray:
    """uint8 [H, W, 3] BGR pixels as ``cv2.imread(path, cv2.IMREAD_COLOR)`` reads them (EXIF
    orientation applied), the detector's input: :func:`read_image`'s checks, then OpenCV decodes."""
    return read_image(path, max_pixels=max_pixels, expect_size=expect_size, resized=resized, bgr=True)


def read_rgb(path: str | Path, max_pixels: Optional[int] = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of the image file at ``path`` (:func:`read_image` without the
    dataset's record or a resize check)."""
    return read_image(path, max_pixels=max_pixels)


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
