"""Pixels of the embedded world: shapes and backgrounds.

Everything here is a pure function of its arguments (and of a ``numpy.random.Generator`` where
noise is drawn), so a world is reproducible from its seed.

* :func:`shape_labels` rasterises one object into a label map (0 outside; 1 main colour,
  2 dark shade, 3 light face, 4 neutral dark gray) - the shapes differ at stride-16 resolution.
* :func:`paint_image` composes a textured gray background and the objects' label maps.

The world's C4 head features come from its detector (``sepnms.world.detector``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: label values of :func:`shape_labels`
MAIN, DARK, LIGHT, NEUTRAL = 1, 2, 3, 4

#: the shapes :func:`shape_labels` knows
SHAPES = ("ring", "diamond", "toothbrush", "keyboard", "broccoli", "oven", "vase", "suitcase")


def shape_labels(shape: str, box: Sequence[float], width: int, height: int) -> np.ndarray:
    """Rasterise one object of ``shape`` filling ``box`` (x0, y0, x1, y1; pixels).

    Returns a uint8 label map [height, width]: 0 outside the object, else MAIN / DARK / LIGHT /
    NEUTRAL (how the pixel is coloured).  The object's extent is ``labels > 0``.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    im = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(im)
    if shape == "ring":  # donut: thick annulus, background shows through the hole
        d.ellipse([x0, y0, x1, y1], fill=MAIN)
        rx, ry = 0.21 * w, 0.21 * h
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=0)
    elif shape == "diamond":  # kite: diamond with two dark spars
        ym = y0 + 0.4 * h
        d.polygon([(cx, y0), (x1, ym), (cx, y1), (x0, ym)], fill=MAIN)
        lw = max(1, int(round(0.05 * w)))
        d.line([(cx, y0 + 1), (cx, y1 - 1)], fill=DARK, width=lw)
        d.line([(x0 + 1, ym), (x1 - 1, ym)], fill=DARK, width=lw)
    elif shape == "toothbrush":  # long thin handle, light bristles on the head
        d.rounded_rectangle([x0, y0 + 0.45 * h, x1, y1], radius=max(1.0, 0.25 * h), fill=MAIN)
        d.rectangle([x1 - 0.3 * w, y0, x1 - 0.05 * w, y0 + 0.5 * h], fill=LIGHT)
    elif shape == "keyboard":  # wide slab with a grid of dark keys
        d.rectangle([x0, y0, x1, y1], fill=MAIN)
        cols, rows = 8, 3
        kw, kh = w / cols, h / rows
        for i in range(cols):
            for j in range(rows):
                d.rectangle([x0 + (i + 0.3) * kw, y0 + (j + 0.3) * kh, x0 + (i + 0.7) * kw, y0 + (j + 0.7) * kh],
                            fill=DARK)
    elif shape == "broccoli":  # a cluster of florets on a dark stalk
        d.polygon([(cx - 0.12 * w, y0 + 0.5 * h), (cx + 0.12 * w, y0 + 0.5 * h),
                   (cx + 0.18 * w, y1), (cx - 0.18 * w, y1)], fill=DARK)
        for fx, fy, fr in ((0.3, 0.3, 0.3), (0.7, 0.3, 0.3), (0.5, 0.22, 0.28), (0.25, 0.5, 0.22), (0.75, 0.5, 0.22)):
            px, py, rr = x0 + fx * w, y0 + fy * h, fr * min(w, h)
            d.ellipse([px - rr, py - rr, px + rr, py + rr], fill=MAIN)
    elif shape == "oven":  # box with a neutral control strip, light knobs and a dark window
        d.rectangle([x0, y0, x1, y1], fill=MAIN)
        d.rectangle([x0, y0, x1, y0 + 0.18 * h], fill=NEUTRAL)
        r = max(0.8, 0.05 * w)
        for kx in (0.25, 0.5, 0.75):
            d.ellipse([x0 + kx * w - r, y0 + 0.09 * h - r, x0 + kx * w + r, y0 + 0.09 * h + r], fill=LIGHT)
        d.rectangle([x0 + 0.2 * w, y0 + 0.4 * h, x1 - 0.2 * w, y1 - 0.18 * h], fill=DARK)
        d.rectangle([x0 + 0.2 * w, y0 + 0.28 * h, x1 - 0.2 * w, y0 + 0.32 * h], fill=LIGHT)
    elif shape == "vase":  # round body, narrow neck, dark lip
        d.ellipse([x0, y0 + 0.35 * h, x1, y1], fill=MAIN)
        d.rectangle([cx - 0.19 * w, y0 + 0.08 * h, cx + 0.19 * w, y0 + 0.5 * h], fill=MAIN)
        d.rectangle([cx - 0.3 * w, y0, cx + 0.3 * w, y0 + 0.1 * h], fill=DARK)
    elif shape == "suitcase":  # landscape body with two straps and a neutral handle
        d.rounded_rectangle([x0, y0 + 0.2 * h, x1, y1], radius=max(1.0, 0.1 * h), fill=MAIN)
        sw = max(1.0, 0.06 * w)
        for sx in (x0 + 0.25 * w, x1 - 0.25 * w - sw):
            d.rectangle([sx, y0 + 0.2 * h, sx + sw, y1], fill=DARK)
        d.rectangle([cx - 0.18 * w, y0, cx + 0.18 * w, y0 + 0.22 * h], fill=NEUTRAL)
        d.rectangle([cx - 0.11 * w, y0 + 0.07 * h, cx + 0.11 * w, y0 + 0.19 * h], fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return np.asarray(im, dtype=np.uint8)


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight COCO box ``[x, y, w, h]`` of a boolean mask (pixel-edge convention: w = cols)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]), float(ys[-1] + 1 - ys[0]))


def mask_polygon(mask: np.ndarray) -> list[float]:
    """Convex-hull polygon of a mask's pixel squares, COCO ``[x1, y1, x2, y2, ...]``."""
    rows = np.flatnonzero(mask.any(axis=1))
    pts = []
    for r in rows:
        cols = np.flatnonzero(mask[r])
        lo, hi = float(cols[0]), float(cols[-1] + 1)
        pts += [(lo, float(r)), (lo, float(r + 1)), (hi, float(r)), (hi, float(r + 1))]
    pts = sorted(set(pts))
    if len(pts) < 3:
        return [c for p in pts for c in p]

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return [c for p in hull for c in p]


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int, sigma: float) -> np.ndarray:
    gh, gw = height // cell + 2, width // cell + 2
    coarse = rng.normal(0.0, sigma, size=(gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)


def paint_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    background_level: float,
    labels: Sequence[np.ndarray],
    colors: Sequence[Sequence[float]],
) -> np.ndarray:
    """Compose the image: textured gray background, then objects in order.

    ``labels[k]`` is object k's label map (:func:`shape_labels`), ``colors[k]`` its RGB main colour.
    Returns uint8 [height, width, 3].
    """
    img = np.empty((height, width, 3), np.float32)
    tint = rng.normal(0.0, 3.0, size=3)
    texture = _smooth_noise(rng, width, height, 24, 10.0) + _smooth_noise(rng, width, height, 6, 4.0)
    img[:] = background_level + tint
    img += texture[..., None]
    for lab, col in zip(labels, colors):
        col = np.asarray(col, np.float32)
        shades = {
            MAIN: col,
            DARK: col * 0.55,
            LIGHT: np.clip(np.array([236.0, 234.0, 226.0]) + rng.normal(0, 4, 3), 0, 255),
            NEUTRAL: np.array([58.0, 56.0, 54.0]) + rng.normal(0, 4, 3),
        }
        for value, rgb in shades.items():
            sel = lab == value
            if sel.any():
                img[sel] = rgb
    img += rng.normal(0.0, 5.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
