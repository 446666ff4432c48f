"""MAttNet's ``cache/prepro/<dataset>_<splitBy>/data.json``.

We use its ``images`` list (``image_id``, ``width``, ``height``: the original size, for location
features) and, for a MAttNet release, its ``word_to_ix`` (:func:`word_list`: the vocabulary the
released model's embedding rows index); the other keys (refs, anns, sentences) are passed through
untouched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_write_json
from sepnms.io.schemas import DataJson, load_json, validate


def load_data_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = load_json(path, "MAttNet data.json", expect=None)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(path, "expected an object with an 'images' list (MAttNet data.json)")
    for img in data["images"]:
        for key in ("image_id", "width", "height"):
            if not isinstance(img, dict) or key not in img:
                raise InputError(path, f"an image entry lacks '{key}'")
    validate(DataJson, data, path)  # every field's type, with the path of the bad one
    return data


def image_sizes(data: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """``{image_id: (width, height)}`` from a loaded data.json."""
    return {int(i["image_id"]): (int(i["width"]), int(i["height"])) for i in data["images"]}


def word_list(data: dict[str, Any], path: str | Path) -> list[str]:
    """``word_to_ix`` as the word of each index 0..V-1 (MAttNet's prepro.py: ``<PAD>`` = 0, then the
    training words, category words, ``<UNK>``, ``<BOS>``, ``<EOS>``); InputError naming the field if
    absent, or if the indices are not exactly 0..V-1 once each."""
    w2i = data.get("word_to_ix")
    if not isinstance(w2i, dict) or not w2i:
        raise InputError(path, "word_to_ix: missing or empty (MAttNet's prepro.py writes the vocabulary there)")
    bad = next((w for w, i in w2i.items() if not isinstance(i, int) or isinstance(i, bool)), None)
    if bad is not None:
        raise InputError(path, f"word_to_ix[{bad!r}] is {w2i[bad]!r}, not an index")
    words: list[Any] = [None] * len(w2i)
    for w, i in w2i.items():
        if not 0 <= i < len(w2i) or words[i] is not None:
            raise InputError(path, f"word_to_ix[{w!r}] = {i}: the indices are not 0..{len(w2i) - 1} once each")
        words[i] = w
    return words


def write_data_json(path: str | Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data)
