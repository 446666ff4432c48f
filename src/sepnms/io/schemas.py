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


# -- MAttNet-style detection files (evaluate --dets, ground eval --dets) ---------------------


class DetEntry(_Strict):
    """One entry of a MAttNet-style detection file (``sepnms.io.mattnet_dets``): ours and Ref-NMS's
    exporter's (per expression, ``sent_id``) or MAttNet's own (per image, ``score``).  Optional
    fields may be absent, never null or of another type."""

    box: Box4
    image_id: int = None  # type: ignore[assignment]  (absent is allowed; a null is not)
    sent_id: int = None  # type: ignore[assignment]
    ref_id: int = None  # type: ignore[assignment]
    det_id: int = None  # type: ignore[assignment]
    h5_id: int = None  # type: ignore[assignment]
    category_id: int = None  # type: ignore[assignment]
    category_name: str = None  # type: ignore[assignment]
    split: str = None  # type: ignore[assignment]
    score: Finite = None  # type: ignore[assignment]
    fin_score: Finite = None  # type: ignore[assignment]


DETS = TypeAdapter(list[DetEntry])


def check_dets(data: Any, path: Path | str) -> None:
    """InputError naming ``path`` and the bad entry unless ``data`` is a valid detection list: the
    schema (:class:`DetEntry`), boxes with a width and height >= 0, no entry twice."""
    for i, d in enumerate(data if isinstance(data, list) else []):
        if not isinstance(d, dict):
            raise InputError(path, f"detection file: [{i}] is not an object (got {_show(d)})")
    validate(DETS, data, path, "detection file")
    seen: dict[tuple, int] = {}
    for i, d in enumerate(data):
        box = d["box"]
        if box[2] < 0 or box[3] < 0:
            raise InputError(path, f"detection file: [{i}].box {box} has a negative {'width' if box[2] < 0 else 'height'} "
                                   "(boxes are [x, y, w, h] with w, h >= 0)")
        if d.get("sent_id") is None and d.get("image_id") is None:
            continue
        key = (d.get("sent_id"), d.get("image_id"), d.get("category_id"), d.get("det_id"), tuple(box))
        if key in seen:
            raise InputError(path, f"detection file: [{i}] repeats [{seen[key]}] (same sent_id, image_id, category, "
                                   "det_id and box): a duplicated entry would count twice")
        seen[key] = i


def check_dets_cover(path: Path, per_sent: dict[int, Any], per_image: dict[int, Any], sent_ids: set[int],
                     image_ids: set[int]) -> None:
    """InputError when a detection file names sentences (or images) that are not the dataset's: a
    file of another dataset would otherwise score 0 without a word."""
    keys, known, what = (per_sent, sent_ids, "sent_id") if per_sent else (per_image, image_ids, "image_id")
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        raise InputError(path, f"{len(unknown)} of {len(keys)} {what}s are not in this dataset (e.g. {unknown[0]}): "
                               "a detection file of another dataset or split-by?")


def check_dets_names(paths: list[Path], taken: set[str]) -> None:
    """Each ``--dets`` file becomes a method named after its file stem: refuse two files of one
    name, or a name that is already a method (a fused table, ``gt``, ``mattnet_dets``), whose
    results the file's would silently replace."""
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise InputError(p, f"two --dets files have the method name {p.stem!r} (also {seen[p.stem]}): rename one")
        if p.stem in taken:
            raise InputError(p, f"the method name {p.stem!r} of this --dets file is also a method of this evaluation "
                                "(a fused table, gt or mattnet_dets) whose results it would replace: rename the file")
        seen[p.stem] = p


# -- our metrics.json / hits.json (method -> split -> entry) ---------------------------------

METRICS_ROWS = TypeAdapter(dict[str, dict[str, dict[str, Any]]])


def load_metrics(path: Path, what: str, missing_ok: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {split: {...}}}`` of one of our metrics files (``eval/metrics.json``,
    ``ground/metrics.json``, ``ground/hits.json``), checked; ``{}`` when absent and ``missing_ok``."""
    path = Path(path)
    if missing_ok and not path.exists():
        return {}
    data = load_json(path, what)
    validate(METRICS_ROWS, data, path, f"{what}, expected {{method: {{split: {{...}}}}}}")
    return data


def merge_rows(earlier: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``earlier`` with the (method, split) entries of ``new`` put in: a run over some methods or
    splits keeps the rows of the others."""
    out = {m: dict(per) for m, per in earlier.items()}
    for method, per_split in new.items():
        out.setdefault(method, {}).update(per_split)
    return out


# -- our second-stage (MAttNet) checkpoints ---------------------------------------------------


def grounding_checkpoint_schema() -> type[BaseModel]:
    """The fields ``sepnms ground`` reads from its checkpoints (built on first use: it needs torch)."""
    global _GROUNDING_CKPT
    if _GROUNDING_CKPT is None:
        import torch

        class GroundingCheckpoint(BaseModel):
            model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)
            format: str
            grounding_config: dict[str, Any]
            pool5_dim: int
            fc7_dim: int
            vocab: list[str]
            model: dict[str, torch.Tensor]

        _GROUNDING_CKPT = GroundingCheckpoint
    return _GROUNDING_CKPT


_GROUNDING_CKPT: Optional[type[BaseModel]] = None
