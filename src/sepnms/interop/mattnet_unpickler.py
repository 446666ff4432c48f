"""What the pickle of a MAttNet release may name: inert stand-ins and the restricted unpickler.

Inside the pickled object: modules are ``NEWOBJ`` + ``BUILD`` of their ``__dict__`` (``_backend`` is
``torch.nn.backends.thnn._get_thnn_function_backend()``, ``_parameters``/``_buffers``/``_modules``
are ``collections.OrderedDict``); a tensor is ``torch._utils._rebuild_tensor(storage, offset, size,
stride)`` (0.2/0.3) or ``_rebuild_tensor_v2(..., requires_grad, backward_hooks)`` (0.4); a
Parameter is ``torch.nn.parameter.Parameter(tensor)`` + ``BUILD (requires_grad, volatile, hooks)``
(0.3) or ``Parameter(tensor, requires_grad)`` (0.4).  The cuDNN LSTM's eight weights are views into
one flat buffer (one storage, eight offsets) and its ``dropout_state`` holds
``torch.backends.cudnn.rnn.Unserializable`` objects.

:class:`ReleaseUnpickler` maps each admitted name to a stand-in that runs nothing: modules become
:class:`ModuleStub` subclasses holding their ``__dict__``, tensors ``_TensorRef`` (storage, offset,
size, stride; checked against the storage), Parameters ``_ParamRef``.  The stand-ins keep their
underscore class names: those names appear in the error messages.
"""
from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from sepnms.errors import UnsafePickleError

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


# ---------------------------------------------------------------------------------------
# inert stand-ins for what the pickle names


class Refusal(Exception):
    """Raised inside the unpickler; becomes an InputError naming the file."""


class ModuleStub:
    """A pickled ``nn.Module``: its class name and the ``__dict__`` BUILD handed it (nothing runs)."""

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise Refusal(f"the state of a {self.qualname} is a {type(state).__name__}, not an attribute dict")
        self.state = state


STUBS: dict[tuple[str, str], type] = {
    key: type(key[1], (ModuleStub,), {"qualname": ".".join(key)}) for key in MATTNET_CLASSES | TORCH_MODULES
}


class _Frozen:
    """A stand-in the pickle must not BUILD into (a BUILD could move a validated tensor's offset)."""

    def __setstate__(self, state: Any) -> None:
        raise Refusal(f"the pickle sets the state of a {type(self).__name__.lstrip('_')} (never in a release)")


class _OrderedDict(OrderedDict):
    """``collections.OrderedDict`` as the pickle gets it: a BUILD into the class or an instance is
    refused (Python 2.7 pickles an OrderedDict as a call with its items, no state)."""

    def __setstate__(self, state: Any) -> None:
        raise Refusal("the pickle sets the state of an OrderedDict (never in a release)")


class _Unserializable:
    """``torch.backends.cudnn.rnn.Unserializable``: a cuDNN dropout descriptor, pickled as a placeholder string."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, str):
            raise Refusal("a cudnn Unserializable holds something other than its placeholder string")


class _Backend(_Frozen):
    """``torch.nn.backends.thnn`` backend object of a 0.2-0.4 module."""


THNN_BACKEND = _Backend()


@dataclass
class Storage:
    key: str
    dtype: np.dtype
    numel: int
    location: str


@dataclass
class _StorageRef(_Frozen):
    root: Storage
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
            raise Refusal(f"a Parameter's state is not (requires_grad, volatile, no hooks): {type(state).__name__}")
        self.requires_grad = state[0]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class ReleaseUnpickler(pickle.Unpickler):
    """Admits MAttNet's classes, the torch.nn modules it uses, tensors, Parameters, storages and
    ``collections.OrderedDict``, each as an inert stand-in; refuses any other name."""

    def __init__(self, file, source: str, max_bytes: int):
        super().__init__(file, encoding="latin1")
        self.source = source
        self.max_bytes = max_bytes
        self.storages: dict[str, Storage] = {}
        self.rebuilds: set[str] = set()
        self.class_sources: dict[str, Optional[str]] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        key = (module, name)
        if key in STUBS:
            return STUBS[key]
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
            return lambda: THNN_BACKEND
        if key == ("torch.backends.cudnn.rnn", "Unserializable"):
            return _Unserializable
        raise UnsafePickleError(self.source, f"refused to load: the pickle references {module}.{name}, which a "
                                             "MAttNet release does not hold (only JointMatching's layers, torch "
                                             "tensors and containers are admitted; loading it could run code)")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D401 - pickle API
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            _, cls, source_file, _source = pid
            if not (isinstance(cls, type) and issubclass(cls, ModuleStub)):
                raise Refusal(f"a module persistent id names {type(cls).__name__}, not a module class")
            self.class_sources[cls.qualname] = source_file if isinstance(source_file, str) else None
            return cls
        if isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage":
            _, stype, key, location, numel, view = pid
            if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(location, str) \
                    or not _is_int(numel) or numel < 0:
                raise Refusal(f"malformed storage persistent id {pid[:5]!r}")
            dtype = STORAGE_DTYPES[stype.name]
            if numel * dtype.itemsize > self.max_bytes:
                raise Refusal(f"storage {key} declares {numel} elements, more than the file holds")
            root = self.storages.setdefault(key, Storage(key, dtype, numel, location))
            if (root.dtype, root.numel) != (dtype, numel):
                raise Refusal(f"storage {key} is declared twice with different types or sizes")
            if view is None:
                return _StorageRef(root, 0, numel)
            if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])
                    and 0 <= view[1] and 0 <= view[2] and view[1] + view[2] <= numel):
                raise Refusal(f"storage {key} has a malformed or out-of-range view {view!r}")
            return _StorageRef(root, view[1], view[2])
        raise Refusal(f"unknown persistent id {str(pid)[:80]!r} (a legacy torch file has only 'module' and "
                       "'storage' ids)")

    def _rebuild_tensor(self, storage, offset, size, stride) -> _TensorRef:
        self.rebuilds.add("_rebuild_tensor")
        return self._tensor(storage, offset, size, stride)

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, backward_hooks=None,
                           *metadata) -> _TensorRef:
        self.rebuilds.add("_rebuild_tensor_v2")
        if not isinstance(requires_grad, bool) or not (backward_hooks is None or backward_hooks == {}) or \
                any(m is not None and m != {} for m in metadata):
            raise Refusal("a tensor carries backward hooks or metadata (a release holds plain tensors)")
        return self._tensor(storage, offset, size, stride)

    @staticmethod
    def _tensor(storage, offset, size, stride) -> _TensorRef:
        if not isinstance(storage, _StorageRef):
            raise Refusal(f"a tensor is rebuilt from a {type(storage).__name__}, not a storage")
        if not (_is_int(offset) and isinstance(size, tuple) and isinstance(stride, tuple)
                and all(_is_int(v) for v in size + stride) and len(size) == len(stride)):
            raise Refusal("a tensor's offset, size or stride is malformed")
        if offset < 0 or any(v < 0 for v in size + stride):
            raise Refusal("a tensor has a negative offset, size or stride")
        if all(size):
            numel = 1
            for s in size:
                numel *= s
            if numel > storage.numel:  # a stride-0 view of a huge size: its copy would not fit in memory
                raise Refusal(f"a tensor of size {list(size)[:6]} has more elements than its storage "
                               f"({storage.numel})")
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= storage.numel:
                raise Refusal(f"a tensor of size {list(size)} at offset {offset} reaches past its storage "
                               f"({storage.numel} elements)")
        return _TensorRef(storage, offset, size, stride)

    @staticmethod
    def _parameter(data=None, requires_grad=True) -> _ParamRef:
        if not isinstance(data, _TensorRef) or not isinstance(requires_grad, bool):
            raise Refusal("a Parameter wraps something other than a tensor")
        return _ParamRef(data, requires_grad)
