"""Restricted pickle loading.

Pickles are code: ``pickle.load`` on a crafted file runs anything.  The ecosystem's files
(refer ``refs(*).p``, Ref-NMS ``rpn_*.pkl``) hold only builtin containers and numpy arrays,
so this unpickler admits exactly those globals and refuses everything else with an error
naming the file and the global it asked for.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from sepnms.errors import InputError, UnsafePickleError

#: (module, name) pairs a data pickle may reference.  numpy reconstructs arrays through
#: ``_reconstruct`` + ``ndarray`` + ``dtype`` (and scalars through ``scalar``).
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "str"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "complex"),
        ("builtins", "bool"),
        ("__builtin__", "dict"),
        ("__builtin__", "list"),
        ("__builtin__", "tuple"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
        ("__builtin__", "unicode"),
        ("__builtin__", "str"),
        ("__builtin__", "int"),
        ("__builtin__", "long"),
        ("__builtin__", "float"),
        ("__builtin__", "bool"),
        ("__builtin__", "bytes"),
        ("__builtin__", "bytearray"),
        ("__builtin__", "complex"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)

_RENAMES = {
    ("__builtin__", "unicode"): ("builtins", "str"),
    ("__builtin__", "long"): ("builtins", "int"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only admits builtin containers/scalars and numpy arrays."""

    def __init__(self, file, *, source: str = "<pickle>", **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        key = (module, name)
        if key not in _ALLOWED:
            raise UnsafePickleError(
                self._source,
                f"refused to load: the pickle references {module}.{name}, which is not a builtin "
                "container or a numpy array (pickles can run code; only data pickles are accepted)",
            )
        if key == ("_codecs", "encode"):
            return self._latin1_encode
        module, name = _RENAMES.get(key, key)
        if module in ("numpy.core.multiarray", "numpy.core.numeric") and _has_numpy_core_underscore():
            module = "numpy._core." + module.rsplit(".", 1)[1]
        return super().find_class(module, name)


    def _latin1_encode(self, text: str, encoding: str = "latin1") -> bytes:
        """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, 'latin1')``; admit only that."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError(self._source, f"refused _codecs.encode with codec {encoding!r} (only latin1 data is admitted)")
        return text.encode("latin1")


def _has_numpy_core_underscore() -> bool:
    import numpy

    return int(numpy.__version__.split(".")[0]) >= 2


def loads(data: bytes, *, source: str = "<bytes>", encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with the restricted unpickler (``encoding`` for Python 2 strings)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated/corrupt streams raise many types
        raise InputError(source, f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def load(path: str | Path, *, encoding: str = "latin1") -> Any:
    """Load a data pickle from ``path`` safely; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    return loads(path.read_bytes(), source=str(path), encoding=encoding)


def dump(path: str | Path, obj: Any, *, protocol: int = 2) -> None:
    """Write ``obj`` atomically (protocol 2 by default: readable by Python 2 tools)."""
    from sepnms.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
