"""Layout of the embedded world's scenes: which objects an image holds and where they stand.

:func:`sample_scene` draws an image's size, its objects (a focus category two or three times, so
that the referent's category appears at least twice, as in RefCOCO; same-category objects often
sharing colour or size), places them with little overlap, rasterises their shapes
(``sepnms.world.render.shape_labels``) for their boxes, and picks the referents and their
expressions (``sepnms.world.expressions``).  Painting is ``sepnms.world.render.paint_image``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from sepnms.config import Config
from sepnms.errors import SepNMSError
from sepnms.world import render as wr
from sepnms.world.content import COLOR_NOISE, COLOR_RGB, IMAGE_SHAPES, PALETTE, SIZE_RANGES, WORLD_CATEGORIES
from sepnms.world.expressions import (
    ATTRIBUTE_TEMPLATES, RELATION_TEMPLATES, choose_expressions, expression_candidates)
from sepnms.world.scene import Scene, WorldObject


def _sample_objects(rng: np.random.Generator, n: int) -> list[tuple[int, str, str]]:
    """(kind, colour, size) for ``n`` objects: a focus category 2-3 times, often a second one
    twice, the rest random; same-category objects often share colour or size (so that colour
    alone does not always tell them apart)."""
    k = len(WORLD_CATEGORIES)
    kinds: list[int] = []
    f1 = int(rng.integers(k))
    kinds += [f1] * min(n, int(rng.integers(2, 4)))
    if n - len(kinds) >= 3 and rng.random() < 0.6:
        f2 = int((f1 + rng.integers(1, k)) % k)
        kinds += [f2, f2]
    while len(kinds) < n:
        kinds.append(int(rng.integers(k)))
    colors = [PALETTE[int(rng.integers(len(PALETTE)))][0] for _ in kinds]
    sizes = ["big" if rng.random() < 0.5 else "small" for _ in kinds]
    for i in range(n):
        for j in range(i):
            if kinds[i] == kinds[j]:
                if rng.random() < 0.35:
                    colors[i] = colors[j]
                if rng.random() < 0.25:
                    sizes[i] = sizes[j]
    return list(zip(kinds, colors, sizes))


def _overlap_ok(box, placed, max_frac: float = 0.1) -> bool:
    ax0, ay0, ax1, ay1 = box
    aa = (ax1 - ax0) * (ay1 - ay0)
    for bx0, by0, bx1, by1 in placed:
        iw = min(ax1, bx1) - min(max(ax0, bx0), min(ax1, bx1))
        ih = min(ay1, by1) - min(max(ay0, by0), min(ay1, by1))
        inter = max(0.0, iw) * max(0.0, ih)
        if inter > max_frac * min(aa, (bx1 - bx0) * (by1 - by0)):
            return False
    return True


def _place(rng, specs, width, height, size) -> Optional[list[WorldObject]]:
    """Nominal boxes for the objects (big ones first), little overlap; None if it fails."""
    order = sorted(range(len(specs)), key=lambda i: specs[i][2] != "big")
    boxes: dict[int, tuple] = {}
    for i in order:
        kind, color, sz = specs[i]
        cat = WORLD_CATEGORIES[kind]
        lo, hi = SIZE_RANGES[sz]
        long_side = rng.uniform(lo, hi) * size
        aspect = cat.aspect * rng.uniform(0.92, 1.08)
        w, h = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
        for _ in range(200):
            x0 = rng.uniform(2, width - 2 - w)
            y0 = rng.uniform(2, height - 2 - h)
            box = (x0, y0, x0 + w, y0 + h)
            if _overlap_ok(box, boxes.values()):
                boxes[i] = box
                break
        else:
            return None
    objs = []
    for i, (kind, color, sz) in enumerate(specs):
        base = np.asarray(COLOR_RGB[color], np.float64)
        rgb = tuple(float(v) for v in np.clip(base + rng.normal(0, COLOR_NOISE, 3), 0, 255))
        objs.append(WorldObject(kind, color, sz, rgb, boxes[i]))
    return objs


def _has_both_kinds(objs: list[WorldObject], r: int, size: float) -> bool:
    templates = set(expression_candidates(objs, r, size))
    return bool(templates & set(ATTRIBUTE_TEMPLATES)) and bool(templates & set(RELATION_TEMPLATES))


def sample_scene(rng: np.random.Generator, cfg: Config, max_tries: int = 200) -> Scene:
    """One image's objects and expressions (before painting).  Resamples until at least two
    objects (one if that keeps failing) can be referred to uniquely."""
    wc = cfg.world
    size = float(wc.image_size)
    best: Optional[Scene] = None
    for attempt in range(max_tries):
        fw, fh = IMAGE_SHAPES[int(rng.integers(len(IMAGE_SHAPES)))]
        width, height = int(round(fw * size)), int(round(fh * size))
        n = int(rng.integers(wc.min_objects, wc.max_objects + 1))
        objs = _place(rng, _sample_objects(rng, n), width, height, size)
        if objs is None:
            continue
        for o in objs:
            o.labels = wr.shape_labels(o.cat.shape, o.nominal, width, height)
            x, y, w, h = wr.mask_bbox(o.labels > 0)
            o.box = (x, y, x + w, y + h)
        counts = {}
        for o in objs:
            counts[o.kind] = counts.get(o.kind, 0) + 1
        eligible = [i for i, o in enumerate(objs) if counts[o.kind] >= 2]
        order = [eligible[j] for j in rng.permutation(len(eligible))]
        # objects that both kinds of expression can describe first (keeps the ~50/50 mix)
        order.sort(key=lambda i: not _has_both_kinds(objs, i, size))
        want = int(rng.integers(2, 4))
        refs, exprs = [], []
        for i in order:
            if len(refs) >= want:
                break
            e = choose_expressions(rng, objs, i, wc.sentences_per_ref, size)
            if e:
                refs.append(i)
                exprs.append(e)
        background = float(rng.uniform(150, 195) if rng.random() < 0.5 else rng.uniform(45, 90))
        scene = Scene(width, height, background, objs, refs, exprs)
        if len(refs) >= 2:
            return scene
        if refs and best is None:
            best = scene
    if best is not None:
        return best
    raise SepNMSError(
        f"could not build a scene with a uniquely describable referent in {max_tries} tries "
        f"(world.min_objects={wc.min_objects}, world.max_objects={wc.max_objects}, "
        f"world.image_size={wc.image_size}); allow more objects or a larger image"
    )
