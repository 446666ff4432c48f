"""A tiny, independent emitter of pickles in the byte layout *Python 2* writes.

Used by the IO tests to build ``refs(*).p`` / ``rpn_*.pkl`` files the way the ecosystem's
Python-2 tools wrote them, without relying on Python 3's pickler (which never emits the
Python-2 ``str`` opcodes).  Type mapping:

* ``str``            -> a Python 2 ``str`` (bytes): STRING (protocol 0) or SHORT_BINSTRING /
  BINSTRING (protocol 2), holding the text encoded as latin1 (``'caf\\xe9'``);
* :class:`Unicode`   -> a Python 2 ``unicode``: UNICODE (protocol 0) or BINUNICODE (protocol 2);
* :class:`Long`      -> a Python 2 ``long``: LONG (protocol 0) or LONG1 (protocol 2);
* ``int``/``float``/``bool``/``None``/``list``/``tuple``/``dict`` -> the Python 2 opcodes;
* ``numpy.ndarray``  -> the layout numpy under Python 2 wrote (``numpy.core.multiarray
  _reconstruct`` + ``numpy ndarray`` + ``numpy dtype``, raw data as a Python 2 ``str``);
* :class:`Global`    -> ``c<module>\\n<name>\\n`` + an argument tuple + REDUCE (a call);
* :class:`Ref`       -> ``c<module>\\n<name>\\n`` alone (a bare reference);
* :class:`PersId`    -> the id object + BINPERSID (``pickler.persistent_id`` returned it);
* :class:`NewObj`    -> ``cls`` + args tuple + NEWOBJ, then the state + BUILD (``object.__reduce_ex__(2)``);
* :class:`Build`     -> any object, then a state + BUILD (a ``__reduce__`` with state).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np


class Unicode(str):
    """A Python 2 ``unicode`` object."""


class Long(int):
    """A Python 2 ``long`` object."""


@dataclass
class Global:
    """``module.name(*args)`` in the pickle (GLOBAL + args tuple + REDUCE)."""

    module: str
    name: str
    args: tuple = ()


@dataclass
class Ref:
    """A bare reference to ``module.name`` (GLOBAL), not called."""

    module: str
    name: str


@dataclass
class PersId:
    """A persistent id: ``pid`` pickled, then BINPERSID."""

    pid: Any


@dataclass
class NewObj:
    """``cls.__new__(cls, *args)`` (NEWOBJ), then BUILD ``state`` unless it is None; ``cls`` is any
    emittable (a :class:`Ref`, a :class:`PersId` wrapping one, ...)."""

    cls: Any
    args: tuple = ()
    state: Any = None


@dataclass
class Build:
    """``obj`` then ``state`` + BUILD."""

    obj: Any
    state: Any


@dataclass
class Raw:
    """Opcodes copied verbatim into the stream."""

    data: bytes


def _py2_repr(data: bytes) -> bytes:
    """Python 2's ``repr(str)``, as protocol 0 writes after the ``S`` opcode."""
    out = bytearray(b"'")
    for b in data:
        ch = bytes([b])
        if ch == b"\\":
            out += b"\\\\"
        elif ch == b"'":
            out += b"\\'"
        elif ch == b"\n":
            out += b"\\n"
        elif ch == b"\r":
            out += b"\\r"
        elif ch == b"\t":
            out += b"\\t"
        elif 32 <= b < 127:
            out += ch
        else:
            out += b"\\x%02x" % b
    return bytes(out + b"'")


class _Emitter:
    def __init__(self, protocol: int):
        assert protocol in (0, 2)
        self.proto = protocol
        self.out = bytearray()
        self.memo = 0

    def put(self) -> None:
        """Memoise the top of the stack, as Python 2's pickler does after each container."""
        if self.proto == 2:
            self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)
        else:
            self.out += b"p%d\n" % self.memo
        self.memo += 1

    def emit(self, obj: Any) -> None:  # noqa: C901 - a dispatch table
        o, p2 = self.out, self.proto == 2
        if isinstance(obj, Raw):
            o += obj.data
        elif obj is None:
            o += b"N"
        elif isinstance(obj, bool):
            o += (b"\x88" if obj else b"\x89") if p2 else (b"I01\n" if obj else b"I00\n")
        elif isinstance(obj, Long):
            if p2:
                n = int(obj)
                raw = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True) if n else b""
                o += b"\x8a" + bytes([len(raw)]) + raw
            else:
                o += b"L%dL\n" % int(obj)
        elif isinstance(obj, (int, np.integer)):
            n = int(obj)
            if not p2:
                o += b"I%d\n" % n
            elif 0 <= n < 256:
                o += b"K" + bytes([n])
            elif 0 <= n < 65536:
                o += b"M" + struct.pack("<H", n)
            elif -(2**31) <= n < 2**31:
                o += b"J" + struct.pack("<i", n)
            else:
                self.emit(Long(n))
        elif isinstance(obj, float):
            o += b"G" + struct.pack(">d", obj) if p2 else b"F" + repr(obj).encode() + b"\n"
        elif isinstance(obj, Unicode):
            if p2:
                data = str(obj).encode("utf-8", "surrogatepass")
                o += b"X" + struct.pack("<I", len(data)) + data
            else:
                text = str(obj).replace("\\", "\\u005c").replace("\n", "\\u000a")
                o += b"V" + text.encode("raw-unicode-escape") + b"\n"
            self.put()
        elif isinstance(obj, (str, bytes)):
            data = obj.encode("latin1") if isinstance(obj, str) else obj
            if not p2:
                o += b"S" + _py2_repr(data) + b"\n"
            elif len(data) < 256:
                o += b"U" + bytes([len(data)]) + data
            else:
                o += b"T" + struct.pack("<i", len(data)) + data
            self.put()
        elif isinstance(obj, list):
            o += b"]" if p2 else b"(l"
            self.put()
            if p2 and obj:
                o += b"("
                for item in obj:
                    self.emit(item)
                o += b"e"
            else:
                for item in obj:
                    self.emit(item)
                    o += b"a"
        elif isinstance(obj, tuple):
            if p2 and len(obj) == 0:
                o += b")"
            elif p2 and len(obj) <= 3:
                for item in obj:
                    self.emit(item)
                o += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(obj)]
            else:
                o += b"("
                for item in obj:
                    self.emit(item)
                o += b"t"
            self.put()
        elif isinstance(obj, dict):
            o += b"}" if p2 else b"(d"
            self.put()
            if p2 and obj:
                o += b"("
                for k, v in obj.items():
                    self.emit(k)
                    self.emit(v)
                o += b"u"
            else:
                for k, v in obj.items():
                    self.emit(k)
                    self.emit(v)
                    o += b"s"
        elif isinstance(obj, Ref):
            o += b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
            self.put()
        elif isinstance(obj, Global):
            o += b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
            self.put()
            self.emit(tuple(obj.args))
            o += b"R"
            self.put()
        elif isinstance(obj, PersId):
            assert self.proto == 2
            self.emit(obj.pid)
            o += b"Q"
        elif isinstance(obj, NewObj):
            assert self.proto == 2
            self.emit(obj.cls)
            self.emit(tuple(obj.args))
            o += b"\x81"
            self.put()
            if obj.state is not None:
                self.emit(obj.state)
                o += b"b"
        elif isinstance(obj, Build):
            self.emit(obj.obj)
            self.emit(obj.state)
            o += b"b"
        elif isinstance(obj, np.ndarray):
            self.emit_ndarray(obj)
        else:
            raise TypeError(f"py2 emitter: unsupported {type(obj).__name__}")

    def emit_ndarray(self, arr: np.ndarray) -> None:
        """numpy 1.x under Python 2: ``_reconstruct(ndarray, (0,), 'b')`` + BUILD state."""
        arr = np.ascontiguousarray(arr)
        assert arr.dtype.byteorder in ("=", "<", "|")
        self.emit(Global("numpy.core.multiarray", "_reconstruct", (Ref("numpy", "ndarray"), (0,), "b")))
        order = "|" if arr.dtype.itemsize == 1 else "<"
        dtype_state = (3, order, None, None, None, -1, -1, 0)
        self.out += b"("  # state tuple: (version, shape, dtype, is_fortran, rawdata)
        self.emit(1)
        self.emit(tuple(int(s) for s in arr.shape))
        self.emit(Global("numpy", "dtype", (arr.dtype.str[1:], 0, 1)))
        self.emit(dtype_state)
        self.out += b"b"  # BUILD the dtype
        self.emit(False)
        self.emit(arr.tobytes())  # a Python 2 str holding the raw buffer
        self.out += b"t"
        self.put()
        self.out += b"b"  # BUILD the array


def dumps(obj: Any, protocol: int = 2) -> bytes:
    """Pickle ``obj`` in the byte layout Python 2's ``cPickle.dumps(obj, protocol)`` writes."""
    em = _Emitter(protocol)
    if protocol >= 2:
        em.out += b"\x80" + bytes([protocol])
    em.emit(obj)
    em.out += b"."
    return bytes(em.out)
