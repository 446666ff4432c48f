"""The legacy (pre-zip) ``torch.save`` container of PyTorch 0.2-0.4, the format of MAttNet's releases.

The container (PyTorch 0.3 ``torch/serialization.py``, ``_save``), all pickles protocol 2:

1. the magic number ``0x1950a86a20f9469cfc6c``; 2. the protocol version ``1001``;
3. ``sys_info`` (``little_endian``, ``type_sizes``);
4. the object, where a ``persistent_id`` replaced
   * each ``nn.Module`` class, the first time it occurs, by ``('module', cls, source_file, source)``;
   * each storage by ``('storage', torch.FloatStorage, root_key, 'cuda:0', root_numel, view)``
     (``view`` = ``(view_key, offset, numel)`` for a storage view, else None);
5. the storage keys, sorted; 6. per key in that order: its element count (int64) and raw data.

:func:`read_legacy_container` reads the headers, unpickles the object with
:class:`~sepnms.interop.mattnet_unpickler.ReleaseUnpickler` (stand-ins only) and the data section into
one 1-D tensor per storage; :func:`materialize` copies a tensor stand-in out of its storage.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sepnms.errors import InputError, UnsafePickleError
from sepnms.interop.mattnet_unpickler import Refusal, ReleaseUnpickler, Storage, _TensorRef

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class _HeaderUnpickler(pickle.Unpickler):
    """The header pickles hold numbers, strings and dicts only."""

    def find_class(self, module: str, name: str) -> Any:
        raise Refusal(f"the container header references {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise Refusal("the container header holds a persistent id")


def release_error(path: Path, problem: str) -> InputError:
    """The one-line error for ``path``: ``not a MAttNet release: <problem>``."""
    return InputError(path, f"not a MAttNet release: {problem}")


def _header(f: io.BytesIO, path: Path, what: str) -> Any:
    try:
        return _HeaderUnpickler(f, encoding="latin1").load()
    except Refusal as exc:
        raise release_error(path, str(exc)) from None
    except EOFError:
        raise release_error(path, f"truncated: the file ends in the {what}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt streams raise many types
        raise release_error(path, f"unreadable {what} ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})") from None


def _storage_data(f: io.BytesIO, data: bytes, path: Path, keys: list[str],
                  storages: dict[str, Storage]) -> dict[str, Tensor]:
    """The data section: per key, int64 element count + raw little-endian elements."""
    out: dict[str, Tensor] = {}
    pos = f.tell()
    for i, key in enumerate(keys):
        st = storages[key]
        if pos + 8 > len(data):
            raise release_error(path, f"truncated: the file ends before storage {i + 1} of {len(keys)} ({key})")
        (numel,) = struct.unpack_from("<q", data, pos)
        if numel != st.numel:
            raise release_error(path, f"storage {key} holds {numel} elements in the data section but the pickle "
                              f"declares {st.numel} (corrupt file)")
        pos += 8
        nbytes = numel * st.dtype.itemsize
        if pos + nbytes > len(data):
            raise release_error(path, f"truncated: storage {i + 1} of {len(keys)} ({key}) needs {nbytes} bytes, "
                              f"{len(data) - pos} are left")
        out[key] = torch.from_numpy(np.frombuffer(data, st.dtype, numel, pos).astype(st.dtype.newbyteorder("=")))
        pos += nbytes
    if pos != len(data):
        raise release_error(path, f"{len(data) - pos} unexpected bytes after the last storage (corrupt file)")
    return out


def read_legacy_container(data: bytes, path: Path, validate=None) -> tuple[Any, "ReleaseUnpickler", dict[str, Tensor]]:
    """The legacy (pre-zip) torch container of ``data``: (main object with stand-ins, the
    unpickler (what it saw), ``{storage key: 1-D tensor}``).  ``validate(obj, path)`` checks the main
    object before the data section is read; it raises ``Refusal`` for a wrong shape."""
    if data[:4] == b"PK\x03\x04":
        raise release_error(path, "this is a zip-format torch file (torch.save of PyTorch >= 1.6); MAttNet's releases are "
                          "the legacy format of PyTorch 0.2-0.4")
    if len(data) > 262 and data[257:262] == b"ustar":
        raise release_error(path, "this is the tar-format torch file of PyTorch < 0.1.10")
    f = io.BytesIO(data)
    magic = _header(f, path, "magic number")
    if magic != MAGIC_NUMBER:
        raise release_error(path, "no legacy torch magic number at the start (not a torch.save file)")
    version = _header(f, path, "protocol version")
    if version != PROTOCOL_VERSION:
        raise release_error(path, f"legacy protocol version {version!r}, expected {PROTOCOL_VERSION}")
    sys_info = _header(f, path, "sys_info")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise release_error(path, "written on a big-endian machine or without sys_info (only little-endian files are read)")

    unpickler = ReleaseUnpickler(f, str(path), max_bytes=len(data))
    try:
        obj = unpickler.load()
        keys = _header(f, path, "storage key list")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise Refusal("the storage key list is not a list of strings")
        if keys != sorted(keys) or len(set(keys)) != len(keys) or set(keys) != set(unpickler.storages):
            raise Refusal(f"the storage key list ({len(keys)} keys) does not list the {len(unpickler.storages)} "
                           "storages the pickle references, sorted, once each")
        if validate is not None:
            validate(obj, path)
    except (InputError, UnsafePickleError):
        raise
    except Refusal as exc:
        raise release_error(path, str(exc)) from None
    except RecursionError:
        raise release_error(path, "the pickle nests too deep") from None
    except EOFError:
        raise release_error(path, "truncated: the file ends inside the pickled object") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt streams raise many types
        raise release_error(path, f"unreadable pickle ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    return obj, unpickler, _storage_data(f, data, path, keys, unpickler.storages)


def materialize(ref: _TensorRef, storages: dict[str, Tensor]) -> Tensor:
    """The tensor a ``_TensorRef`` describes, copied out of its storage (contiguous)."""
    base = storages[ref.storage.root.key]
    return torch.as_strided(base, ref.size, ref.stride, ref.storage.offset + ref.offset).clone(
        memory_format=torch.contiguous_format)
