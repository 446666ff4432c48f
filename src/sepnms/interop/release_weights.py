"""The authors' released weights <-> this project's model.

The Ref-NMS and Sep-NMS releases are plain state dicts (``torch.save(model.state_dict())``,
PyTorch 1.1) of a class both call ``AttVanillaPredictorV2``.  Their key names:

==========================  ===============================================  ==========================
release key prefix          what it is                                       project key prefix
==========================  ===============================================  ==========================
``head.``                   ResNet layer4 (torchvision Bottlenecks)          ``head.``
``rnn.``                    GRU(300, 256, bidirectional, batch_first)        ``ctx_relatedness.gru.``
``vis_a_fc.{0,2}``          attention key MLP 2048 -> 1024 -> 512            ``ctx_relatedness.key_mlp.``
``att_fc``                  Linear(1024, 1) over concat(key, word state)     ``ctx_relatedness.attn_fc.``
``vis_r_fc.{0,2}``          score MLP 2048 -> 1024 -> 512                    ``ctx_relatedness.score_mlp.``
``rank_fc``                 Linear(512, 1): the Ctx logit                    ``ctx_relatedness.score_fc.``
``vis_a_fck.{0,2}``         (Sep-NMS) visual MLP over concat(pool, loc 5)    ``ref_relatedness.visual_mlp.``
``mapping_sent.{0,1,4,5}``  (Sep-NMS) Linear/BN/Linear/BN over BERT 768      ``ref_relatedness.text_mlp.``
==========================  ===============================================  ==========================

The Sep-NMS forward returns ``(ref logit = dot / 0.06, ctx logit)`` in that order, which is
what :meth:`SepNMSModel.relatedness` returns.  The word embedding is not in the files (the
release looks GloVe vectors up outside the model): the project's vocabulary and GloVe matrix
stay in ``ctx_relatedness.embedding`` (for the release's numbers, the vocabulary must follow
Ref-NMS's rule, ``prepare.vocab_splits: all``; docs/METHOD.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from sepnms.errors import ConfigError, InputError

#: --format value -> the project's model type
RELEASE_FORMATS: dict[str, str] = {"refnms-release": "refnms", "sepnms-release": "sepnms"}

#: project prefix -> release prefix (the Sequential indices coincide, so prefixes suffice)
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("head.", "head."),
    ("ctx_relatedness.gru.", "rnn."),
    ("ctx_relatedness.key_mlp.", "vis_a_fc."),
    ("ctx_relatedness.attn_fc.", "att_fc."),
    ("ctx_relatedness.score_mlp.", "vis_r_fc."),
    ("ctx_relatedness.score_fc.", "rank_fc."),
    ("ref_relatedness.visual_mlp.", "vis_a_fck."),
    ("ref_relatedness.text_mlp.", "mapping_sent."),
)
#: project tensors that are not in a release file (kept from the project)
NOT_IN_RELEASE = ("ctx_relatedness.embedding.weight",)
#: BatchNorm step counters: no effect on the forward pass, so a file without them still imports
_COUNTER = "num_batches_tracked"
_DATA_PARALLEL = "module."


@dataclass
class ImportReport:
    """What an import did (JSON-ready via :meth:`to_dict`)."""

    format: str
    model_type: str
    tensors: int
    """Release tensors copied into the model."""
    kept_from_project: list[str] = field(default_factory=list)
    """Project tensors not in a release file (the GloVe embedding)."""
    absent_counters: list[str] = field(default_factory=list)
    """BatchNorm ``num_batches_tracked`` buffers the file lacks (the model keeps its own)."""
    stripped_prefix: Optional[str] = None
    """``module.`` when the file was saved from a DataParallel wrapper."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def release_model_type(fmt: str) -> str:
    """The project model type (``sepnms`` / ``refnms``) of a release format; ConfigError if unknown."""
    if fmt not in RELEASE_FORMATS:
        raise ConfigError(f"unknown release format {fmt!r}; choose one of {sorted(RELEASE_FORMATS)}")
    return RELEASE_FORMATS[fmt]


def release_key_map(model: torch.nn.Module) -> dict[str, str]:
    """{release key: project key} for every tensor of ``model`` that a release file holds."""
    out: dict[str, str] = {}
    for key in model.state_dict():
        if key in NOT_IN_RELEASE:
            continue
        for ours, theirs in _PREFIXES:
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = key
                break
        else:  # a model tensor nobody mapped: a bug here, not a bad file
            raise AssertionError(f"no release name for model tensor {key!r}")
    return out


def _shape(t: Any) -> str:
    return "x".join(map(str, t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _listing(keys: list[str], shapes: Mapping[str, Any], limit: int = 4) -> str:
    shown = ", ".join(f"{k} [{_shape(shapes[k])}]" for k in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def key_mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Any],
                 optional: Callable[[str], bool] = lambda k: False) -> tuple[list[str], list[str], str]:
    """Compare a file's tensors ``found`` with the ``expected`` ones (name -> a tensor of the right
    shape): (missing names, unexpected names, one text naming up to 4 of each and every shape
    mismatch; "" when they fit).  Names for which ``optional`` is true may be missing."""
    missing = [k for k in expected if k not in found and not optional(k)]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and tuple(getattr(found[k], "shape", ())) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing, expected)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected, found)}")
    if wrong:
        shown = ", ".join(f"{k} is {_shape(found[k])} in the file but {_shape(expected[k])} in the model"
                          for k in wrong[:4])
        parts.append(f"{len(wrong)} shape mismatch(es): {shown}" + (", ..." if len(wrong) > 4 else ""))
    return missing, unexpected, "; ".join(parts)


def _other_format_hint(fmt: str, missing: list[str], unexpected: list[str]) -> str:
    if fmt == "sepnms-release" and missing and all(k.startswith(("vis_a_fck.", "mapping_sent.")) for k in missing):
        return "; it looks like a Ref-NMS release: use --format refnms-release"
    if fmt == "refnms-release" and unexpected and all(k.startswith(("vis_a_fck.", "mapping_sent.")) for k in unexpected):
        return "; it looks like a Sep-NMS release: use --format sepnms-release"
    return ""


def import_release_weights(model: torch.nn.Module, state_dict: Any, fmt: str,
                           source: Optional[str | Path] = None) -> ImportReport:
    """Copy a released state dict into ``model`` (a :class:`SepNMSModel` of the matching type).

    Strict: every tensor of the file must map to a model tensor of the same shape and every
    model tensor but the GloVe embedding must come from the file (a missing BatchNorm
    ``num_batches_tracked`` counter is tolerated and reported).  Nothing is copied unless the
    whole file matches.

    Args:
        model: the model to fill; its ``model_type`` must be that of ``fmt``.
        state_dict: the loaded release file (``{name: Tensor}``).
        fmt: ``sepnms-release`` or ``refnms-release``.
        source: the file, named in error messages.

    Raises:
        ConfigError: unknown ``fmt`` or a model of the other type.
        InputError(source, ...): not a state dict, or missing / unexpected keys or shape
            mismatches (all named in one line).
    """
    model_type = release_model_type(fmt)
    if getattr(model, "model_type", None) != model_type:
        raise ConfigError(f"--format {fmt} needs a {model_type!r} model, got {getattr(model, 'model_type', None)!r}")
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise InputError(source, f"not a {fmt} file: expected a state dict {{name: tensor}}, "
                                 f"got {type(state_dict).__name__}{' (empty)' if isinstance(state_dict, Mapping) else ''}")
    if state_dict.get("format") == "sepnms-checkpoint":
        raise InputError(source, "this is already a sepnms checkpoint, not a released state dict: copy it to "
                                 "<workdir>/models/<name>/best.pt instead of importing it")
    bad_names = [k for k in state_dict if not isinstance(k, str)]
    if bad_names:
        raise InputError(source, f"not a {fmt} file: key {bad_names[0]!r} is not a tensor name")
    stripped = None
    if all(k.startswith(_DATA_PARALLEL) for k in state_dict):
        state_dict = {k[len(_DATA_PARALLEL):]: v for k, v in state_dict.items()}
        stripped = _DATA_PARALLEL
    non_tensor = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if non_tensor:
        raise InputError(source, f"not a {fmt} file: {_listing(non_tensor, state_dict)} "
                                 f"{'is' if len(non_tensor) == 1 else 'are'} not tensors")

    key_map = release_key_map(model)
    own = model.state_dict()
    missing, unexpected, mismatch = key_mismatch({theirs: own[ours] for theirs, ours in key_map.items()}, state_dict,
                                                 optional=lambda k: k.endswith(_COUNTER))
    if mismatch:
        raise InputError(source, f"does not match the {fmt} layout for this config: " + mismatch
                         + _other_format_hint(fmt, missing, unexpected))

    new_state = dict(own)
    absent = []
    for theirs, ours in key_map.items():
        if theirs not in state_dict:
            absent.append(theirs)
            continue
        value = state_dict[theirs]
        if not value.is_floating_point() and own[ours].is_floating_point():
            raise InputError(source, f"{theirs} holds {value.dtype} values, expected floating point")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(source, f"{theirs} holds NaN or Inf values")
        new_state[ours] = value.detach().to(device=own[ours].device, dtype=own[ours].dtype).clone()
    model.load_state_dict(new_state, strict=True)
    return ImportReport(fmt, model_type, len(key_map) - len(absent), list(NOT_IN_RELEASE), absent, stripped)


def export_release_weights(model: torch.nn.Module, fmt: Optional[str] = None) -> dict[str, Tensor]:
    """The model's tensors under the release's key names (the GloVe embedding left out), so the
    authors' scripts can load a model trained here.  ``fmt`` defaults to the model's type."""
    model_type = getattr(model, "model_type", None)
    fmt = fmt or {v: k for k, v in RELEASE_FORMATS.items()}.get(model_type)
    if fmt is None or release_model_type(fmt) != model_type:
        raise ConfigError(f"cannot export a {model_type!r} model as {fmt!r}")
    own = model.state_dict()
    return {theirs: own[ours].detach().cpu().clone() for theirs, ours in release_key_map(model).items()}
