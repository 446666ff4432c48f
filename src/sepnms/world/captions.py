"""COCO-style captions of the embedded world's images (``captions/captions_train2014.json``).

:func:`make_captions` writes five per image: two inventories ("two red kites and a blue oven on
a light gray background") and relations or pairs drawn at random, with the relations of
``sepnms.world.expressions``.  :func:`caption_words` splits a caption into the words the GloVe
subset must hold.
"""
from __future__ import annotations

import numpy as np

from sepnms.world.expressions import RELATION_PHRASES, relation_holds
from sepnms.world.scene import Scene, WorldObject

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


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


def caption_words(caption: str) -> list[str]:
    """The words of a caption, lower case, punctuation dropped."""
    return [w for w in caption.lower().replace(",", " ").replace(".", " ").split() if w]
