"""Atomic writes: a temp file in the same folder, fsync, then rename.

A crash never leaves a half-written file under the final name, so a later stage cannot
mistake a partial output for a whole one.

Temp files are named ``.<name>.<host>-<pid>.<random><suffix>.tmp``.  A process killed outright
(SIGKILL, power loss) cannot remove its temp file; the next write of the same ``<name>`` on the
same host removes the temp files of writers that are no longer running.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove temp files of ``path`` left by dead writers on this host; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{path.name}.{_HOST}-") + r"(\d+)\.")
    removed = []
    for name in glob.glob(glob.escape(f".{path.name}.{_HOST}-") + "*.tmp", root_dir=path.parent):
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                (path.parent / name).unlink()
                removed.append(path.parent / name)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.
    ``suffix`` keeps an extension some writers need (e.g. ``.h5``); default: ``path``'s.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_HOST}-{os.getpid()}.",
        suffix=(suffix if suffix is not None else path.suffix) + ".tmp",
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False))
