"""Schemas of the structured files read at the boundary, validated once, with the path of the
bad field in the message.

The refer files (``refs(*).p``, ``instances.json``), MAttNet's ``data.json`` and our own
``refdb.json`` are checked here, field by field, right after they are read: a ``tokens: None``,
an image id written as a string, a string inside a bbox, a NaN coordinate or a missing key
becomes one line such as ``refs(unc).p: [12].sentences[0].tokens: Input should be a valid list
(got None)``, not a TypeError three stages later.  The models are strict (no ``"12"`` -> 12
coercion: the ecosystem's files never hold such values, so one is a sign of a broken file) and
allow extra keys (the refer files carry more than we use).

:func:`load_json` reads any JSON file with the same one-line errors: not UTF-8, not JSON,
nested too deeply, not an object.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sepnms.errors import InputError

Finite = Annotated[float, Field(allow_inf_nan=False)]
Box4 = Annotated[list[Finite], Field(min_length=4, max_length=4)]
Size = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


# -- refer: refs(*).p -----------------------------------------------------------------


class RefSentence(_Strict):
    tokens: list[str]
    sent: str
    sent_id: int


class Ref(_Strict):
    ref_id: int
    ann_id: int
    category_id: int
    image_id: int
    split: str
    sent_ids: list[int]
    sentences: Annotated[list[RefSentence], Field(min_length=1)]


REFS = TypeAdapter(Annotated[list[Ref], Field(min_length=1)])


# -- COCO instances.json --------------------------------------------------------------


class CocoImage(_Strict):
    id: int
    width: Size
    height: Size


class CocoAnnotation(_Strict):
    id: int
    image_id: int
    category_id: int
    bbox: Box4


class CocoCategory(_Strict):
    id: int
    name: str


class Instances(_Strict):
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


# -- MAttNet data.json ------------------------------------------------------------------


class DataJsonImage(_Strict):
    image_id: int
    width: Size
    height: Size


class DataJson(_Strict):
    images: list[DataJsonImage]


# -- our refdb.json ---------------------------------------------------------------------


class RefdbImage(_Strict):
    width: Size
    height: Size
    split: str


class RefdbExpression(_Strict):
    sent_id: int
    ref_id: int
    ann_id: int
    image_id: int
    split: str
    category_id: int
    gt_box: Box4
    tokens: list[str]
    sent: str


class Refdb(_Strict):
    format: str
    version: int
    dataset: str
    images: dict[str, RefdbImage]
    expressions: list[RefdbExpression]


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "<top level>"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate(schema: type[BaseModel] | TypeAdapter, data: Any, path: Optional[Path | str], what: str = "") -> None:
    """InputError naming ``path``, the bad field's path and the problem (the first of at most 3)
    unless ``data`` fits ``schema``.  ``data`` itself is not changed (the models are strict, so a
    valid structure is already what they describe)."""
    try:
        if isinstance(schema, TypeAdapter):
            schema.validate_python(data)
        else:
            schema.model_validate(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        got = "" if first["type"] == "missing" else f" (got {_show(first.get('input'))})"
        raise InputError(path, f"{what + ': ' if what else ''}{_loc(first['loc'])}: {first['msg']}{got}{more}") from None
    except RecursionError:
        raise InputError(path, f"{what + ': ' if what else ''}nested too deeply") from None


def load_json(path: str | Path, what: str = "", expect: type = dict) -> Any:
    """Read a JSON file; InputError (one line, naming the file) when it is missing, not UTF-8,
    not JSON, nested too deeply, or its top level is not an ``expect`` (object by default)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
                               f"{f' ({what})' if what else ''}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(path, "not usable JSON: nested too deeply") from None
    if expect is not None and not isinstance(data, expect):
        kind = {dict: "an object", list: "a list"}.get(expect, expect.__name__)
        raise InputError(path, f"the top level is a JSON {type(data).__name__}, expected {kind}"
                               f"{f' ({what})' if what else ''}")
    return data
