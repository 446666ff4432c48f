"""MAttNet's released checkpoints (``output/<dataset>_<splitBy>/mrcn_cmr_with_st.pth`` and siblings).

MAttNet's ``tools/train.py`` saves ``torch.save({'model': model, 'opt': opt}, path)``: the whole
``JointMatching`` module, pickled by Python 2.7 and PyTorch 0.2-0.4, beside its ``opt`` dict.  Modern
``torch.load`` cannot read these files even with ``weights_only=False`` (the 0.3 ``LSTM`` object
lacks ``_flat_weights``), and unpickling them the ordinary way would import and run MAttNet's and
old torch's code.  :func:`load_mattnet_release` parses the container itself, admits only the names
such a file holds, maps each to an inert stand-in and returns the tensors under MAttNet's
``state_dict`` names (the names :class:`sepnms.grounding.mattnet.MAttNet` uses).

The container (PyTorch 0.3 ``torch/serialization.py``, ``_save``), all pickles protocol 2:

1. the magic number ``0x1950a86a20f9469cfc6c``; 2. the protocol version ``1001``;
3. ``sys_info`` (``little_endian``, ``type_sizes``);
4. the object, where a ``persistent_id`` replaced
   * each ``nn.Module`` class, the first time it occurs, by ``('module', cls, source_file, source)``;
   * each storage by ``('storage', torch.FloatStorage, root_key, 'cuda:0', root_numel, view)``
     (``view`` = ``(view_key, offset, numel)`` for a storage view, else None);
5. the storage keys, sorted; 6. per key in that order: its element count (int64) and raw data.

Inside the object: modules are ``NEWOBJ`` + ``BUILD`` of their ``__dict__`` (``_backend`` is
``torch.nn.backends.thnn._get_thnn_function_backend()``, ``_parameters``/``_buffers``/``_modules``
are ``collections.OrderedDict``); a tensor is ``torch._utils._rebuild_tensor(storage, offset, size,
stride)`` (0.2/0.3) or ``_rebuild_tensor_v2(..., requires_grad, backward_hooks)`` (0.4); a
Parameter is ``torch.nn.parameter.Parameter(tensor)`` + ``BUILD (requires_grad, volatile, hooks)``
(0.3) or ``Parameter(tensor, requires_grad)`` (0.4).  The cuDNN LSTM's eight weights are views into
one flat buffer (one storage, eight offsets) and its ``dropout_state`` holds
``torch.backends.cudnn.rnn.Unserializable`` objects.  BatchNorm has no ``num_batches_tracked``
before PyTorch 0.4.1: :func:`load_mattnet_release` supplies it (0; it only matters with
``momentum=None``).
"""
from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from sepnms.errors import InputError, UnsafePickleError
from sepnms.io.safe_pickle import check_expansion

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: MAttNet's module classes (lib/layers/*.py, imported by tools/train.py as ``layers.<file>``)
MATTNET_CLASSES: frozenset[tuple[str, str]] = frozenset({
    ("layers.joint_match", "JointMatching"), ("layers.joint_match", "Matching"),
    ("layers.joint_match", "RelationMatching"),
    ("layers.lang_encoder", "RNNEncoder"), ("layers.lang_encoder", "PhraseAttention"),
    ("layers.visual_encoder", "Normalize_Scale"), ("layers.visual_encoder", "LocationEncoder"),
    ("layers.visual_encoder", "SubjectEncoder"), ("layers.visual_encoder", "RelationEncoder"),
})
#: the torch.nn modules JointMatching is built from
TORCH_MODULES: frozenset[tuple[str, str]] = frozenset({
    ("torch.nn.modules.sparse", "Embedding"), ("torch.nn.modules.dropout", "Dropout"),
    ("torch.nn.modules.container", "Sequential"), ("torch.nn.modules.linear", "Linear"),
    ("torch.nn.modules.activation", "ReLU"), ("torch.nn.modules.activation", "Tanh"),
    ("torch.nn.modules.rnn", "LSTM"), ("torch.nn.modules.batchnorm", "BatchNorm1d"),
})
#: legacy storage classes -> element dtype
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
}
ROOT_CLASS = "layers.joint_match.JointMatching"
BATCHNORM_CLASS = "torch.nn.modules.batchnorm.BatchNorm1d"
COUNTER = "num_batches_tracked"
MAX_MODULE_DEPTH = 16


# ---------------------------------------------------------------------------------------
# inert stand-ins for what the pickle names


class _Refusal(Exception):
    """Raised inside the unpickler; becomes an InputError naming the file."""


class ModuleStub:
    """A pickled ``nn.Module``: its class name and the ``__dict__`` BUILD handed it (nothing runs)."""

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise _Refusal(f"the state of a {self.qualname} is a {type(state).__name__}, not an attribute dict")
        self.state = state


_STUBS: dict[tuple[str, str], type] = {
    key: type(key[1], (ModuleStub,), {"qualname": ".".join(key)}) for key in MATTNET_CLASSES | TORCH_MODULES
}


class _Frozen:
    """A stand-in the pickle must not BUILD into (a BUILD could move a validated tensor's offset)."""

    def __setstate__(self, state: Any) -> None:
        raise _Refusal(f"the pickle sets the state of a {type(self).__name__.lstrip('_')} (never in a release)")


class _OrderedDict(OrderedDict):
    """``collections.OrderedDict`` as the pickle gets it: a BUILD into the class or an instance is
    refused (Python 2.7 pickles an OrderedDict as a call with its items, no state)."""

    def __setstate__(self, state: Any) -> None:
        raise _Refusal("the pickle sets the state of an OrderedDict (never in a release)")


class _Unserializable:
    """``torch.backends.cudnn.rnn.Unserializable``: a cuDNN dropout descriptor, pickled as a placeholder string."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, str):
            raise _Refusal("a cudnn Unserializable holds something other than its placeholder string")


class _Backend(_Frozen):
    """``torch.nn.backends.thnn`` backend object of a 0.2-0.4 module."""


_THNN_BACKEND = _Backend()


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    location: str


@dataclass
class _StorageRef(_Frozen):
    root: _Storage
    offset: int = 0
    numel: int = 0


@dataclass
class _StorageType(_Frozen):
    name: str


@dataclass
class _TensorRef(_Frozen):
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass
class _ParamRef:
    tensor: _TensorRef
    requires_grad: bool = True

    def __setstate__(self, state: Any) -> None:  # 0.3: BUILD (requires_grad, volatile, backward_hooks)
        if not (isinstance(state, tuple) and len(state) == 3 and isinstance(state[0], bool)
                and (state[2] is None or state[2] == {})):
            raise _Refusal(f"a Parameter's state is not (requires_grad, volatile, no hooks): {type(state).__name__}")
        self.requires_grad = state[0]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _ReleaseUnpickler(pickle.Unpickler):
    """Admits MAttNet's classes, the torch.nn modules it uses, tensors, Parameters, storages and
    ``collections.OrderedDict``, each as an inert stand-in; refuses any other name."""

    def __init__(self, file, source: str, max_bytes: int):
        super().__init__(file, encoding="latin1")
        self.source = source
        self.max_bytes = max_bytes
        self.storages: dict[str, _Storage] = {}
        self.rebuilds: set[str] = set()
        self.class_sources: dict[str, Optional[str]] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        key = (module, name)
        if key in _STUBS:
            return _STUBS[key]
        if key == ("collections", "OrderedDict"):
            return _OrderedDict
        if key == ("torch._utils", "_rebuild_tensor"):
            return self._rebuild_tensor
        if key == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor_v2
        if key == ("torch.nn.parameter", "Parameter"):
            return self._parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if key == ("torch.nn.backends.thnn", "_get_thnn_function_backend"):
            return lambda: _THNN_BACKEND
        if key == ("torch.backends.cudnn.rnn", "Unserializable"):
            return _Unserializable
        raise UnsafePickleError(self.source, f"refused to load: the pickle references {module}.{name}, which a "
                                             "MAttNet release does not hold (only JointMatching's layers, torch "
                                             "tensors and containers are admitted; loading it could run code)")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D401 - pickle API
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            _, cls, source_file, _source = pid
            if not (isinstance(cls, type) and issubclass(cls, ModuleStub)):
                raise _Refusal(f"a module persistent id names {type(cls).__name__}, not a module class")
            self.class_sources[cls.qualname] = source_file if isinstance(source_file, str) else None
            return cls
        if isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage":
            _, stype, key, location, numel, view = pid
            if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(location, str) \
                    or not _is_int(numel) or numel < 0:
                raise _Refusal(f"malformed storage persistent id {pid[:5]!r}")
            dtype = STORAGE_DTYPES[stype.name]
            if numel * dtype.itemsize > self.max_bytes:
                raise _Refusal(f"storage {key} declares {numel} elements, more than the file holds")
            root = self.storages.setdefault(key, _Storage(key, dtype, numel, location))
            if (root.dtype, root.numel) != (dtype, numel):
                raise _Refusal(f"storage {key} is declared twice with different types or sizes")
            if view is None:
                return _StorageRef(root, 0, numel)
            if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])
                    and 0 <= view[1] and 0 <= view[2] and view[1] + view[2] <= numel):
                raise _Refusal(f"storage {key} has a malformed or out-of-range view {view!r}")
            return _StorageRef(root, view[1], view[2])
        raise _Refusal(f"unknown persistent id {str(pid)[:80]!r} (a legacy torch file has only 'module' and "
                       "'storage' ids)")

    def _rebuild_tensor(self, storage, offset, size, stride) -> _TensorRef:
        self.rebuilds.add("_rebuild_tensor")
        return self._tensor(storage, offset, size, stride)

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, backward_hooks=None,
                           *metadata) -> _TensorRef:
        self.rebuilds.add("_rebuild_tensor_v2")
        if not isinstance(requires_grad, bool) or not (backward_hooks is None or backward_hooks == {}) or \
                any(m is not None and m != {} for m in metadata):
            raise _Refusal("a tensor carries backward hooks or metadata (a release holds plain tensors)")
        return self._tensor(storage, offset, size, stride)

    @staticmethod
    def _tensor(storage, offset, size, stride) -> _TensorRef:
        if not isinstance(storage, _StorageRef):
            raise _Refusal(f"a tensor is rebuilt from a {type(storage).__name__}, not a storage")
        if not (_is_int(offset) and isinstance(size, tuple) and isinstance(stride, tuple)
                and all(_is_int(v) for v in size + stride) and len(size) == len(stride)):
            raise _Refusal("a tensor's offset, size or stride is malformed")
        if offset < 0 or any(v < 0 for v in size + stride):
            raise _Refusal("a tensor has a negative offset, size or stride")
        if all(size):
            numel = 1
            for s in size:
                numel *= s
            if numel > storage.numel:  # a stride-0 view of a huge size: its copy would not fit in memory
                raise _Refusal(f"a tensor of size {list(size)[:6]} has more elements than its storage "
                               f"({storage.numel})")
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= storage.numel:
                raise _Refusal(f"a tensor of size {list(size)} at offset {offset} reaches past its storage "
                               f"({storage.numel} elements)")
        return _TensorRef(storage, offset, size, stride)

    @staticmethod
    def _parameter(data=None, requires_grad=True) -> _ParamRef:
        if not isinstance(data, _TensorRef) or not isinstance(requires_grad, bool):
            raise _Refusal("a Parameter wraps something other than a tensor")
        return _ParamRef(data, requires_grad)


class _HeaderUnpickler(pickle.Unpickler):
    """The header pickles hold numbers, strings and dicts only."""

    def find_class(self, module: str, name: str) -> Any:
        raise _Refusal(f"the container header references {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refusal("the container header holds a persistent id")


# ---------------------------------------------------------------------------------------
# the loader


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


def _fail(path: Path, problem: str) -> InputError:
    return InputError(path, f"not a MAttNet release: {problem}")


def _header(f: io.BytesIO, path: Path, what: str) -> Any:
    try:
        return _HeaderUnpickler(f, encoding="latin1").load()
    except _Refusal as exc:
        raise _fail(path, str(exc)) from None
    except EOFError:
        raise _fail(path, f"truncated: the file ends in the {what}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt streams raise many types
        raise _fail(path, f"unreadable {what} ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})") from None


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
            raise _Refusal(f"{w} holds a {type(v).__name__}; MAttNet's opt holds plain options only")


def _collect(root: ModuleStub) -> tuple["OrderedDict[str, _TensorRef]", list[str]]:
    """MAttNet's state_dict order (each module: parameters, buffers, then children), with the
    BatchNorm counters the file lacks inserted where PyTorch >= 0.4.1 puts them."""
    out: "OrderedDict[str, Any]" = OrderedDict()
    supplied: list[str] = []
    seen: set[int] = set()

    def walk(mod: Any, prefix: str, depth: int) -> None:
        if not isinstance(mod, ModuleStub) or not hasattr(mod, "state"):
            raise _Refusal(f"module {prefix.rstrip('.') or '<root>'} is a {type(mod).__name__}, not a pickled module")
        if id(mod) in seen or depth > MAX_MODULE_DEPTH:
            raise _Refusal(f"module {prefix.rstrip('.')} occurs twice or nests too deep")
        seen.add(id(mod))
        st = mod.state
        parts = {k: st.get(k, OrderedDict()) for k in ("_parameters", "_buffers", "_modules")}
        for k, v in parts.items():
            if not isinstance(v, dict) or not all(isinstance(n, str) for n in v):
                raise _Refusal(f"{prefix or '<root>.'}{k} is a {type(v).__name__}, not a name dict")
        if "_backend" in st and st["_backend"] is not _THNN_BACKEND:
            raise _Refusal(f"{prefix or '<root>.'}_backend is not the THNN backend")
        for name, p in parts["_parameters"].items():
            if p is None:
                continue
            if not isinstance(p, _ParamRef):
                raise _Refusal(f"parameter {prefix}{name} is a {type(p).__name__}, not a Parameter")
            out[prefix + name] = p.tensor
        for name, b in parts["_buffers"].items():
            if b is None:
                continue
            if not isinstance(b, _TensorRef):
                raise _Refusal(f"buffer {prefix}{name} is a {type(b).__name__}, not a tensor")
            out[prefix + name] = b
        if mod.qualname == BATCHNORM_CLASS and COUNTER not in parts["_buffers"]:
            out[prefix + COUNTER] = None
            supplied.append(prefix + COUNTER)
        for name, child in parts["_modules"].items():
            if child is not None:
                walk(child, f"{prefix}{name}.", depth + 1)

    walk(root, "", 0)
    return out, supplied


def _storage_data(f: io.BytesIO, data: bytes, path: Path, keys: list[str],
                  storages: dict[str, _Storage]) -> dict[str, Tensor]:
    """The data section: per key, int64 element count + raw little-endian elements."""
    out: dict[str, Tensor] = {}
    pos = f.tell()
    for i, key in enumerate(keys):
        st = storages[key]
        if pos + 8 > len(data):
            raise _fail(path, f"truncated: the file ends before storage {i + 1} of {len(keys)} ({key})")
        (numel,) = struct.unpack_from("<q", data, pos)
        if numel != st.numel:
            raise _fail(path, f"storage {key} holds {numel} elements in the data section but the pickle "
                              f"declares {st.numel} (corrupt file)")
        pos += 8
        nbytes = numel * st.dtype.itemsize
        if pos + nbytes > len(data):
            raise _fail(path, f"truncated: storage {i + 1} of {len(keys)} ({key}) needs {nbytes} bytes, "
                              f"{len(data) - pos} are left")
        out[key] = torch.from_numpy(np.frombuffer(data, st.dtype, numel, pos).astype(st.dtype.newbyteorder("=")))
        pos += nbytes
    if pos != len(data):
        raise _fail(path, f"{len(data) - pos} unexpected bytes after the last storage (corrupt file)")
    return out


def _validate_release(obj: Any, path: Path) -> None:
    """The main object of a MAttNet release: ``{'model': JointMatching, 'opt': plain dict}``."""
    if not isinstance(obj, dict) or "model" not in obj or "opt" not in obj:
        shape = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
        raise _Refusal(f"expected {{'model': JointMatching, 'opt': dict}} (MAttNet's tools/train.py), got {shape}")
    model, opt = obj["model"], obj["opt"]
    if not isinstance(model, ModuleStub) or model.qualname != ROOT_CLASS:
        raise _Refusal(f"'model' is a {getattr(model, 'qualname', type(model).__name__)}, not {ROOT_CLASS}")
    if not isinstance(opt, dict) or not all(isinstance(k, str) for k in opt):
        raise _Refusal(f"'opt' is a {type(opt).__name__}, not an option dict")
    check_expansion(opt, str(path), max_elements=100_000)
    _plain(opt, "opt")


def read_legacy_container(data: bytes, path: Path, validate=None) -> tuple[Any, "_ReleaseUnpickler", dict[str, Tensor]]:
    """The legacy (pre-zip) torch container of ``data``: (main object with stand-ins, the
    unpickler (what it saw), ``{storage key: 1-D tensor}``).  ``validate(obj, path)`` checks the main
    object before the data section is read; it raises ``_Refusal`` for a wrong shape."""
    if data[:4] == b"PK\x03\x04":
        raise _fail(path, "this is a zip-format torch file (torch.save of PyTorch >= 1.6); MAttNet's releases are "
                          "the legacy format of PyTorch 0.2-0.4")
    if len(data) > 262 and data[257:262] == b"ustar":
        raise _fail(path, "this is the tar-format torch file of PyTorch < 0.1.10")
    f = io.BytesIO(data)
    magic = _header(f, path, "magic number")
    if magic != MAGIC_NUMBER:
        raise _fail(path, "no legacy torch magic number at the start (not a torch.save file)")
    version = _header(f, path, "protocol version")
    if version != PROTOCOL_VERSION:
        raise _fail(path, f"legacy protocol version {version!r}, expected {PROTOCOL_VERSION}")
    sys_info = _header(f, path, "sys_info")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise _fail(path, "written on a big-endian machine or without sys_info (only little-endian files are read)")

    unpickler = _ReleaseUnpickler(f, str(path), max_bytes=len(data))
    try:
        obj = unpickler.load()
        keys = _header(f, path, "storage key list")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise _Refusal("the storage key list is not a list of strings")
        if keys != sorted(keys) or len(set(keys)) != len(keys) or set(keys) != set(unpickler.storages):
            raise _Refusal(f"the storage key list ({len(keys)} keys) does not list the {len(unpickler.storages)} "
                           "storages the pickle references, sorted, once each")
        if validate is not None:
            validate(obj, path)
    except (InputError, UnsafePickleError):
        raise
    except _Refusal as exc:
        raise _fail(path, str(exc)) from None
    except RecursionError:
        raise _fail(path, "the pickle nests too deep") from None
    except EOFError:
        raise _fail(path, "truncated: the file ends inside the pickled object") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt streams raise many types
        raise _fail(path, f"unreadable pickle ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    return obj, unpickler, _storage_data(f, data, path, keys, unpickler.storages)


def materialize(ref: _TensorRef, storages: dict[str, Tensor]) -> Tensor:
    """The tensor a ``_TensorRef`` describes, copied out of its storage (contiguous)."""
    base = storages[ref.storage.root.key]
    return torch.as_strided(base, ref.size, ref.stride, ref.storage.offset + ref.offset).clone(
        memory_format=torch.contiguous_format)


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
    except _Refusal as exc:
        raise _fail(path, str(exc)) from None
    state: "OrderedDict[str, Tensor]" = OrderedDict()
    for name, ref in refs.items():
        if ref is None:  # a supplied BatchNorm counter
            state[name] = torch.tensor(0, dtype=torch.long)
            continue
        try:
            state[name] = materialize(ref, storages)
        except RuntimeError as exc:  # validated at unpickling; kept as a last guard
            raise _fail(path, f"{name}: {' '.join(str(exc).split())[:120]}") from None
    rebuild = "+".join(sorted(unpickler.rebuilds))
    return MAttNetRelease(state, dict(opt), supplied, rebuild, dict(unpickler.class_sources))


__all__ = ["MAttNetRelease", "load_mattnet_release", "MATTNET_CLASSES", "TORCH_MODULES", "MAGIC_NUMBER",
           "PROTOCOL_VERSION"]
