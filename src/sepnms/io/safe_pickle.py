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
from typing import Any, Optional

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


#: default bounds on what a pickle may expand to (see :func:`loads`)
MAX_ELEMENTS_PER_BYTE = 16
MIN_MAX_ELEMENTS = 2_000_000
MAX_DEPTH = 100
MAX_ALLOC_BYTES = 1 << 28  # one constructor call (bytes(n), ndarray(shape)) may allocate at most 256 MiB


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only admits builtin containers/scalars and numpy arrays.

    Constructors that allocate from a number in the stream (``bytes(n)``, ``bytearray(n)``,
    ``numpy.ndarray(shape)``) are bounded by ``max_alloc`` bytes, and numpy object arrays
    (whose reconstruction allocates from the declared shape) are refused: a few bytes on disk
    must not become gigabytes in memory.
    """

    def __init__(self, file, *, source: str = "<pickle>", max_alloc: int = MAX_ALLOC_BYTES, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source
        self._max_alloc = max_alloc
        self._ndarray_factory = self._ndarray  # one bound method: _reconstruct recognises it by identity

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
        found = super().find_class(module, name)
        if name in ("bytes", "bytearray"):
            return self._bounded_buffer(found)
        if (module, name) == ("numpy", "ndarray"):
            return self._ndarray_factory
        if (module, name) == ("numpy", "dtype"):
            return self._dtype
        if name == "_reconstruct":
            return self._reconstruct(found)
        return found

    def _too_big(self, what: str, nbytes: int) -> InputError:
        return InputError(self._source, f"refused to load: the pickle declares {what} of {nbytes} bytes from a stream "
                                        f"of a few bytes (over the bound of {self._max_alloc} bytes per object; a "
                                        "corrupt or hostile file)")

    def _bounded_buffer(self, cls):
        def make(*args):
            if args and isinstance(args[0], int) and args[0] > self._max_alloc:
                raise self._too_big(f"a {cls.__name__} object", args[0])
            return cls(*args)
        return make

    def _dtype(self, *args, **kwargs):
        import numpy

        dt = numpy.dtype(*args, **kwargs)
        if dt.hasobject:
            raise InputError(self._source, "refused to load: a numpy array of Python objects (data pickles hold "
                                           "numeric arrays; object arrays can expand without bound)")
        return dt

    def _ndarray(self, shape=(), dtype=float, *args, **kwargs):
        import numpy

        dt = self._dtype(dtype)
        n = int(numpy.prod(numpy.asarray(shape, dtype=numpy.float64))) if numpy.ndim(shape) else int(shape)
        if n * dt.itemsize > self._max_alloc:
            raise self._too_big("an array", n * dt.itemsize)
        return numpy.ndarray(shape, dt, *args, **kwargs)

    def _reconstruct(self, real):
        import numpy

        def reconstruct(subtype, *args):
            return real(numpy.ndarray if subtype is self._ndarray_factory else subtype, *args)
        return reconstruct

    def _latin1_encode(self, text: str, encoding: str = "latin1") -> bytes:
        """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, 'latin1')``; admit only that."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError(self._source, f"refused _codecs.encode with codec {encoding!r} (only latin1 data is admitted)")
        return text.encode("latin1")


def _children(obj: Any) -> Optional[list]:
    """The elements of a container (None for a leaf); numpy arrays are leaves (their memory is real)."""
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    return None


def check_expansion(obj: Any, source: str, max_elements: int, max_depth: int = MAX_DEPTH) -> int:
    """The number of elements ``obj`` holds counted as a tree (a shared sub-structure counts once
    per reference, as any code that walks or copies it sees it); InputError past ``max_elements``,
    for nesting deeper than ``max_depth`` or a reference cycle.  Iterative: no RecursionError."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, int, Optional[list]]] = [(obj, 0, None)]
    while stack:
        node, depth, kids = stack.pop()
        oid = id(node)
        if kids is not None:  # all children done: sum them
            on_path.discard(oid)
            total = 1 + sum(sizes.get(id(k), 1) for k in kids)
            if total > max_elements:
                raise InputError(source, f"refused to load: the pickle expands to more than {max_elements} elements "
                                         "(shared references repeated over and over; a corrupt or hostile file)")
            sizes[oid] = total
            continue
        if oid in sizes:
            continue
        children = _children(node)
        if not children:
            continue
        if oid in on_path:
            raise InputError(source, "refused to load: the pickle holds a container that contains itself "
                                     "(data pickles are trees)")
        if depth >= max_depth:
            raise InputError(source, f"refused to load: containers nested deeper than {max_depth} levels")
        on_path.add(oid)
        stack.append((node, depth, children))
        stack.extend((c, depth + 1, None) for c in children if _children(c))
    return sizes.get(id(obj), 1)


def _has_numpy_core_underscore() -> bool:
    import numpy

    return int(numpy.__version__.split(".")[0]) >= 2


def loads(data: bytes, *, source: str = "<bytes>", encoding: str = "latin1",
          max_elements: Optional[int] = None, max_alloc: int = MAX_ALLOC_BYTES) -> Any:
    """Unpickle ``data`` with the restricted unpickler (``encoding`` for Python 2 strings).

    What the stream may expand to is bounded: ``max_elements`` elements counted as a tree
    (default ``max(MIN_MAX_ELEMENTS, MAX_ELEMENTS_PER_BYTE * len(data))``: a refs pickle holds
    well under one element per byte), nesting of ``MAX_DEPTH`` levels, and ``max_alloc`` bytes
    per allocating constructor.  Past a bound: InputError naming ``source``.
    """
    if max_elements is None:
        max_elements = max(MIN_MAX_ELEMENTS, MAX_ELEMENTS_PER_BYTE * len(data))
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding, max_alloc=max_alloc).load()
    except InputError:
        raise
    except MemoryError:
        raise InputError(source, "refused to load: the pickle expands beyond the memory available "
                                 "(a corrupt or hostile file)") from None
    except Exception as exc:  # truncated/corrupt streams raise many types
        raise InputError(source, f"not a readable pickle ({type(exc).__name__}: {exc})") from None
    check_expansion(obj, source, max_elements)
    return obj


def load(path: str | Path, *, encoding: str = "latin1", max_elements: Optional[int] = None) -> Any:
    """Load a data pickle from ``path`` safely (bounds as :func:`loads`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    return loads(path.read_bytes(), source=str(path), encoding=encoding, max_elements=max_elements)


def dump(path: str | Path, obj: Any, *, protocol: int = 2) -> None:
    """Write ``obj`` atomically (protocol 2 by default: readable by Python 2 tools)."""
    from sepnms.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
