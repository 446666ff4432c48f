"""Every numeric config value declares its bounds in its type (issue 21, docs/BAD_INPUTS.md "Round three").

The test walks the whole ``Config`` model - every section, every field, every element of a tuple,
list or dict of numbers - so a numeric field added later without bounds fails here.  A field
"declares its bounds" when the model itself refuses, for that field: NaN and infinities (floats),
a value that is not a number, a bool (integers), and at least one of -1e30 / +1e30 (a lower or
an upper bound).
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from pydantic import BaseModel, ValidationError

from sepnms.config import Config, load_config
from sepnms.errors import ConfigError


@dataclass(frozen=True)
class NumericLeaf:
    """One number of the config: ``key`` (``detector.blocks``), ``index`` inside a tuple / list /
    dict value (None for a plain field), its type (int / float) and its default."""

    key: str
    index: Any
    kind: type
    default: Any

    @property
    def name(self) -> str:
        return self.key if self.index is None else f"{self.key}[{self.index}]"

    def value_with(self, value: Any, current: Any) -> Any:
        """The field's value with this leaf replaced by ``value``."""
        if self.index is None:
            return value
        if isinstance(current, dict):
            return {**current, self.index: value}
        seq = list(current)
        seq[self.index] = value
        return type(current)(seq) if isinstance(current, tuple) else seq


def _strip(ann):
    """``Optional[X]`` / ``Annotated[X, ...]`` -> X."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin is typing.Union:
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return ann
            ann = args[0]
        else:
            return ann


def _is_number(ann) -> bool:
    return ann in (int, float)


def numeric_leaves(model: type[BaseModel] = Config, prefix: str = "", instance: Optional[BaseModel] = None) -> list[NumericLeaf]:
    """Every number of the config model, found from the type annotations (not from a list)."""
    instance = instance if instance is not None else model()
    out: list[NumericLeaf] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = _strip(field.annotation)
        default = getattr(instance, name)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += numeric_leaves(ann, key + ".", default)
        elif _is_number(ann):
            out.append(NumericLeaf(key, None, ann, default))
        elif typing.get_origin(ann) in (tuple, list):
            args = [_strip(a) for a in typing.get_args(ann) if a is not Ellipsis]
            if args and all(_is_number(a) for a in args):
                assert default, f"{key}: a list of numbers needs a non-empty default for this test"
                for i in range(len(default)):
                    out.append(NumericLeaf(key, i, args[min(i, len(args) - 1)], default[i]))
        elif typing.get_origin(ann) is dict:
            vt = _strip(typing.get_args(ann)[1])
            if _is_number(vt):
                assert default, f"{key}: a dict of numbers needs a non-empty default for this test"
                out += [NumericLeaf(key, k, vt, v) for k, v in default.items()]
    return out


LEAVES = numeric_leaves()


def _refused(leaf: NumericLeaf, value: Any) -> bool:
    data = Config().model_dump(mode="python")
    node = data
    parts = leaf.key.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = leaf.value_with(value, node[parts[-1]])
    try:
        Config.model_validate(data)
    except ValidationError:
        return True
    return False


def test_the_walk_finds_the_numbers_of_every_section():
    """The walk is driven by the annotations: it must reach nested tuples, lists and dicts."""
    names = {leaf.name for leaf in LEAVES}
    for expected in ("seed", "detector.det_lower_step", "detector.blocks[2]", "detector.anchor_scales[0]",
                     "detector.pixel_means[1]", "grounding.betas[0]", "world.split_fractions[train]",
                     "train.max_steps", "clip.tiny_layers[3]", "gallery.page_size"):
        assert expected in names, expected
    sections = {leaf.key.split(".")[0] for leaf in LEAVES}
    assert {"prepare", "model", "text", "train", "fusion", "evaluate", "propose", "clip", "show", "gallery",
            "detector", "features", "world", "grounding"} <= sections


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: leaf.name)
def test_every_numeric_field_declares_its_bounds(leaf):
    assert not _refused(leaf, leaf.default), f"{leaf.name}: its own default {leaf.default!r} is refused"
    refused = [v for v in (math.nan, math.inf, -math.inf, "abc", [1]) if _refused(leaf, v)]
    assert len(refused) == 5, f"{leaf.name} accepts one of NaN, +-inf, a string, a list: declare it finite and typed"
    if leaf.kind is int:
        assert _refused(leaf, True), f"{leaf.name} accepts a bool: declare it strict (PosInt / NonNegInt)"
        assert _refused(leaf, 2.5), f"{leaf.name} accepts 2.5"
        big = 10 ** 30
    else:
        big = 1e30
    assert _refused(leaf, -big) or _refused(leaf, big), (
        f"{leaf.name} has neither a lower nor an upper bound: declare one in its type (config/fields.py PosInt, Prob, ...)")


# the values of issue 21 that hung, raised a traceback, or were accepted and did something else
@pytest.mark.parametrize("override", [
    "detector.det_lower_step=0", "detector.det_lower_step=-0.1", "detector.test_scale=0", "detector.test_scale=-600",
    "detector.test_max_size=0", "detector.feat_stride=0", "detector.pool_size=0", "detector.rpn_nms_thresh=nan",
    "detector.rpn_nms_thresh=2", "detector.det_score=nan", "detector.det_score=-1", "grounding.eval_every=0",
    "grounding.checkpoint_every=0", "grounding.lr_decay_every=0", "grounding.lr=-0.001", "grounding.lr=nan",
    "grounding.lr=.inf", "grounding.eps=-1", "grounding.betas=[2, 0.999]", "grounding.num_cxt=-1",
    "grounding.max_iters=0", "grounding.lr=0", "grounding.grad_clip=-1", "grounding.word_embedding_size=0",
    "grounding.visual_sample_ratio=5", "grounding.max_length=0", "grounding.margin=nan", "show.n=0", "show.n=-3",
    "world.min_objects=9", "clip.crop=400",
])
def test_issue_21_config_values_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as info:
        load_config("demo", [override])
    msg = str(info.value)
    assert "\n" not in msg and key in msg, msg
