"""Referring expressions of the embedded world: which structures pick out a referent, and their words.

Half the expressions name only the referent ("the red kite", "the donut on the left"), half name
a context object too ("the kite left of the green oven").  :func:`expression_candidates` lists
every structure that identifies the referent uniquely (attribute filters, position with a
margin, relations that hold for it and clearly fail for every other matching object);
:func:`realize` words one (random phrasing, synonyms); :func:`choose_expressions` picks a
referent's expressions, alternating the two kinds.  :func:`relation_holds` is also what the
captions (``sepnms.world.captions``) describe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sepnms.world.content import WorldCategory
from sepnms.world.scene import Expression, WorldObject

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
