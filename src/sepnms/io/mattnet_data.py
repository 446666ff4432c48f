"""MAttNet's ``cache/prepro/<dataset>_<splitBy>/data.json``.

We use its ``images`` list (``image_id``, ``width``, ``height``: the original size, for location
features); the other keys (refs, anns, sentences, word_to_ix) are passed through untouched.
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


def write_data_json(path: str | Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data)
