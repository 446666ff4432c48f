"""File-system checks before large writes.

A full disk in the middle of an HDF5 write can crash the HDF5 library itself (not a Python
exception), and a half-written output is never what the user wants; where the size of an output
is known beforehand, :func:`ensure_free` refuses to start when it cannot fit.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sepnms.errors import StorageError

#: headroom over the estimate: file-format overhead, and room for the file system itself
MARGIN_FRACTION = 0.10
MARGIN_BYTES = 16 << 20


def free_bytes(folder: str | Path) -> int:
    """Free bytes (for this user) on the file system of ``folder`` (or its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return int(shutil.disk_usage(folder).free)


def ensure_free(path: str | Path, nbytes: int, what: str = "output") -> None:
    """StorageError (one line, naming ``path``) unless about ``nbytes`` (plus a margin) are free
    where ``path`` will be written."""
    need = int(nbytes * (1 + MARGIN_FRACTION)) + MARGIN_BYTES
    have = free_bytes(Path(path).parent)
    if have < need:
        raise StorageError(path, f"not enough free space for the {what}: about {_human(need)} needed, {_human(have)} "
                                 "free (ENOSPC); free space or use another workdir, then re-run")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
