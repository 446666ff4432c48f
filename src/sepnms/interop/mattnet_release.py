"""MAttNet's released checkpoints (``output/<dataset>_<splitBy>/mrcn_cmr_with_st.pth`` and siblings).

MAttNet's ``tools/train.py`` saves ``torch.save({'model': model, 'opt': opt}, path)``: the whole
``JointMatching`` module, pickled by Python 2.7 and PyTorch 0.2-0.4, beside its ``opt`` dict.  Modern
``torch.load`` cannot read these files even with ``weights_only=False`` (the 0.3 ``LSTM`` object
lacks ``_flat_weights``), and unpickling them the ordinary way would import and run MAttNet's and
old torch's code.  :func:`load_mattnet_release` parses the container itself, admits only the names
such a file holds, maps each to an inert stand-in and returns the tensors under MAttNet's
``state_dict`` names (the names :class:`sepnms.grounding.mattnet.MAttNet` uses).

The file is the legacy torch container (:mod:`sepnms.interop.legacy_torch`); its pickle is read by the
restricted unpickler of :mod:`sepnms.interop.mattnet_unpickler`.  Here: the release's shape
(``{'model': JointMatching, 'opt': dict}``), MAttNet's state-dict order and :class:`MAttNetRelease`.
BatchNorm has no ``num_batches_tracked`` before PyTorch 0.4.1: :func:`load_mattnet_release` supplies
it (0; it only matters with ``momentum=None``).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from sepnms.errors import InputError
from sepnms.interop.legacy_torch import materialize, read_legacy_container, release_error
from sepnms.interop.mattnet_unpickler import THNN_BACKEND, ModuleStub, Refusal, _ParamRef, _TensorRef
from sepnms.io.safe_pickle import check_expansion

ROOT_CLASS = "layers.joint_match.JointMatching"
BATCHNORM_CLASS = "torch.nn.modules.batchnorm.BatchNorm1d"
COUNTER = "num_batches_tracked"
MAX_MODULE_DEPTH = 16


@dataclass
class MAttNetRelease:
    """A loaded MAttNet release: tensors under MAttNet's state-dict names, and its ``opt``."""

    state_dict: "OrderedDict[str, Tensor]"
    """Every parameter and buffer of JointMatching (float32 on the CPU, contiguous), plus the
    supplied ``num_batches_tracked`` counters (int64 scalars, 0)."""
    opt: dict[str, Any]
    """MAttNet's options (``vocab_size``, ``word_embedding_size``, ``word_vec_size``,
    ``rnn_hidden_size``, ``jemb_dim``, ``fc7_dim``, ``pool5_dim``, ``num_atts``, ...)."""
    supplied: list[str] = field(default_factory=list)
    """The ``num_batches_tracked`` keys the file lacked (PyTorch < 0.4.1)."""
    rebuild: str = ""
    """``_rebuild_tensor`` (PyTorch 0.2/0.3) or ``_rebuild_tensor_v2`` (0.4)."""
    class_sources: dict[str, Optional[str]] = field(default_factory=dict)
    """Each module class and the source file the saving process had it from."""


def _plain(value: Any, where: str) -> None:
    """``opt`` must hold plain data only (numbers, strings, None, containers of them)."""
    stack = [(value, where)]
    while stack:
        v, w = stack.pop()
        if v is None or isinstance(v, (bool, int, float, str, bytes)):
            continue
        if isinstance(v, dict):
            stack.extend((x, f"{w}[{k!r}]") for k, x in v.items())
            stack.extend((k, w) for k in v)
        elif isinstance(v, (list, tuple)):
            stack.extend((x, w) for x in v)
        else:
            raise Refusal(f"{w} holds a {type(v).__name__}; MAttNet's opt holds plain options only")


def _collect(root: ModuleStub) -> tuple["OrderedDict[str, _TensorRef]", list[str]]:
    """MAttNet's state_dict order (each module: parameters, buffers, then children), with the
    BatchNorm counters the file lacks inserted where PyTorch >= 0.4.1 puts them."""
    out: "OrderedDict[str, Any]" = OrderedDict()
    supplied: list[str] = []
    seen: set[int] = set()

    def walk(mod: Any, prefix: str, depth: int) -> None:
        if not isinstance(mod, ModuleStub) or not hasattr(mod, "state"):
            raise Refusal(f"module {prefix.rstrip('.') or '<root>'} is a {type(mod).__name__}, not a pickled module")
        if id(mod) in seen or depth > MAX_MODULE_DEPTH:
            raise Refusal(f"module {prefix.rstrip('.')} occurs twice or nests too deep")
        seen.add(id(mod))
        st = mod.state
        parts = {k: st.get(k, OrderedDict()) for k in ("_parameters", "_buffers", "_modules")}
        for k, v in parts.items():
            if not isinstance(v, dict) or not all(isinstance(n, str) for n in v):
                raise Refusal(f"{prefix or '<root>.'}{k} is a {type(v).__name__}, not a name dict")
        if "_backend" in st and st["_backend"] is not THNN_BACKEND:
            raise Refusal(f"{prefix or '<root>.'}_backend is not the THNN backend")
        for name, p in parts["_parameters"].items():
            if p is None:
                continue
            if not isinstance(p, _ParamRef):
                raise Refusal(f"parameter {prefix}{name} is a {type(p).__name__}, not a Parameter")
            out[prefix + name] = p.tensor
        for name, b in parts["_buffers"].items():
            if b is None:
                continue
            if not isinstance(b, _TensorRef):
                raise Refusal(f"buffer {prefix}{name} is a {type(b).__name__}, not a tensor")
            out[prefix + name] = b
        if mod.qualname == BATCHNORM_CLASS and COUNTER not in parts["_buffers"]:
            out[prefix + COUNTER] = None
            supplied.append(prefix + COUNTER)
        for name, child in parts["_modules"].items():
            if child is not None:
                walk(child, f"{prefix}{name}.", depth + 1)

    walk(root, "", 0)
    return out, supplied


def _validate_release(obj: Any, path: Path) -> None:
    """The main object of a MAttNet release: ``{'model': JointMatching, 'opt': plain dict}``."""
    if not isinstance(obj, dict) or "model" not in obj or "opt" not in obj:
        shape = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
        raise Refusal(f"expected {{'model': JointMatching, 'opt': dict}} (MAttNet's tools/train.py), got {shape}")
    model, opt = obj["model"], obj["opt"]
    if not isinstance(model, ModuleStub) or model.qualname != ROOT_CLASS:
        raise Refusal(f"'model' is a {getattr(model, 'qualname', type(model).__name__)}, not {ROOT_CLASS}")
    if not isinstance(opt, dict) or not all(isinstance(k, str) for k in opt):
        raise Refusal(f"'opt' is a {type(opt).__name__}, not an option dict")
    check_expansion(opt, str(path), max_elements=100_000)
    _plain(opt, "opt")


def load_mattnet_release(path: str | Path) -> MAttNetRelease:
    """Parse a MAttNet release file without importing or running anything from it.

    Returns:
        :class:`MAttNetRelease`: ``state_dict`` (MAttNet's key names, the file's exact values,
        ``num_batches_tracked`` supplied), ``opt`` (a plain dict).

    Raises:
        UnsafePickleError: the pickle names anything but MAttNet's classes, their torch.nn layers,
            tensors, Parameters, storages and OrderedDict (one line naming it).
        InputError: missing, truncated or corrupt file, another kind of torch file, a pickle of
            another shape than ``{'model': JointMatching, 'opt': dict}``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "MAttNet release file not found")
    obj, unpickler, storages = read_legacy_container(path.read_bytes(), path, _validate_release)
    model, opt = obj["model"], obj["opt"]
    try:
        refs, supplied = _collect(model)
    except Refusal as exc:
        raise release_error(path, str(exc)) from None
    state: "OrderedDict[str, Tensor]" = OrderedDict()
    for name, ref in refs.items():
        if ref is None:  # a supplied BatchNorm counter
            state[name] = torch.tensor(0, dtype=torch.long)
            continue
        try:
            state[name] = materialize(ref, storages)
        except RuntimeError as exc:  # validated at unpickling; kept as a last guard
            raise release_error(path, f"{name}: {' '.join(str(exc).split())[:120]}") from None
    rebuild = "+".join(sorted(unpickler.rebuilds))
    return MAttNetRelease(state, dict(opt), supplied, rebuild, dict(unpickler.class_sources))


__all__ = ["MAttNetRelease", "load_mattnet_release"]
