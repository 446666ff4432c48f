"""The iteration order of a CPython 2.7 ``dict``, which MAttNet's ``tools/run_detect.py`` (Python
2.7) used for its ``dets.json``: images in ``refer.Imgs.items()`` order (keyed by the int
``image_id``) and, within an image, classes in ``cls_to_dets.items()`` order (keyed by the class
name), each class's boxes in NMS order; ``det_id = h5_id`` counts up in that order.

A 2.7 dict is an open-addressing table (``Objects/dictobject.c``): slot ``hash & mask``, then the
probe ``i = 5 i + perturb + 1; perturb >>= 5``; it starts with 8 slots and, after an insertion
that leaves ``fill * 3 >= 2 * size``, is rebuilt with the smallest power of two > 4 x used (2 x
above 50000 entries), re-inserting in old slot order.  Iteration walks the slots.  Hashes
(no ``-R`` randomisation): an int hashes to itself (-1 -> -2); a ``str`` / ``unicode`` by the
2.7 string hash (64-bit ``long``).
"""
from __future__ import annotations

from typing import Hashable, Iterable, Sequence

_MASK64 = (1 << 64) - 1


def py2_hash(key: int | str) -> int:
    """CPython 2.7's ``hash(key)`` (64-bit build) of an int or a str / unicode of code points < 2**16."""
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"py2_hash takes an int or a str, not {type(key).__name__}")
    if isinstance(key, int):
        if not -(1 << 63) <= key < (1 << 63):
            raise ValueError("py2_hash: only ints of a C long")
        return -2 if key == -1 else key
    if not key:
        return 0
    codes = [ord(c) for c in key]
    x = (codes[0] << 7) & _MASK64
    for c in codes:
        x = ((1000003 * x) & _MASK64) ^ c
    x ^= len(codes)
    x = x - (1 << 64) if x >= (1 << 63) else x
    return -2 if x == -1 else x


def _insert(table: list, mask: int, key: Hashable, h: int) -> None:
    i = h & _MASK64 & mask
    perturb = h & _MASK64
    j = i
    while table[j & mask] is not None:
        j = ((j << 2) + j + perturb + 1) & _MASK64
        perturb >>= 5
    table[j & mask] = key


def py2_dict_order(keys: Iterable[int | str]) -> list:
    """The keys (distinct, in insertion order) in the order a CPython 2.7 dict built by inserting
    them one by one iterates them."""
    table: list = [None] * 8
    used = 0
    for key in keys:
        mask = len(table) - 1
        _insert(table, mask, key, py2_hash(key))
        used += 1
        if used * 3 >= len(table) * 2:  # no deletions: fill == used
            minused = (2 if used > 50000 else 4) * used
            size = 8
            while size <= minused:
                size <<= 1
            old, table = table, [None] * size
            for k in old:
                if k is not None:
                    _insert(table, size - 1, k, py2_hash(k))
    return [k for k in table if k is not None]


def rank_in_py2_order(keys: Sequence[int | str]) -> dict:
    """``{key: position}`` of ``py2_dict_order(keys)``."""
    return {k: i for i, k in enumerate(py2_dict_order(keys))}
