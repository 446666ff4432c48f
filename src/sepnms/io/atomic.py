"""Atomic writes: a temp file in the same folder, fsync, then rename.

A crash never leaves a half-written file under the final name, so a later stage cannot
mistake a partial output for a whole one.

Temp files are named ``.<name>.<host>-<pid>.<random><suffix>.tmp``.  A process killed outright
(SIGKILL, power loss) cannot remove its temp file; the next write of the same ``<name>`` on the
same host removes the temp files of writers that are no longer running.
"""
from __future__ import annotations

import contextlib
import contextvars
import glob
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

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


def file_mode() -> int:
    """The mode a new file gets under the current umask (``0o666 & ~umask``): outputs follow the
    umask like any file the user creates (``mkstemp`` alone would make them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_output_target(path: str | Path) -> None:
    """Refuse to write ``path`` unless it is absent or a regular file, under folders (or absent
    folders): a rename onto a device node, a FIFO or a folder would replace something that is not
    ours (as root, ``/dev/full``).  StorageError naming the path otherwise."""
    from sepnms.errors import StorageError

    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # a component is a file: found below
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise StorageError(path, "is a folder, not a file; name a file to write")
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(path, "exists and is not a regular file (a device, FIFO or socket); refusing to "
                                     "replace it, name a new file")
        return
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise StorageError(path, f"{parent} is a file, not a folder; cannot write under it")
            return


def check_can_write(path: str | Path) -> None:
    """Before long work whose result goes to ``path``: :func:`check_output_target`, then create
    its folder and a temporary file beside it (removed at once), so an unwritable place (read-only,
    no permission, a pseudo file system such as /proc) is a StorageError now, not after the work."""
    from sepnms.errors import StorageError

    path = Path(path)
    check_output_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise (StorageError.from_os_error(exc, path) or StorageError(path, f"cannot write here: {exc}")) from None


def check_output_folder(folder: str | Path, what: str = "output folder") -> None:
    """Refuse an output folder that is a file, or lies under a file (StorageError naming it)."""
    from sepnms.errors import StorageError

    folder = Path(folder)
    for p in [folder, *folder.parents]:
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == folder else f"lies under {p}, a file"
                raise StorageError(folder, f"{what} {where}, not a folder; name a folder")
            return


#: the pending renames of the innermost :func:`transaction` (None outside one)
_PENDING: contextvars.ContextVar[Optional[list[tuple[Path, Path]]]] = contextvars.ContextVar("_PENDING", default=None)


@contextlib.contextmanager
def transaction() -> Iterator[None]:
    """Write several files all or nothing: inside, :func:`atomic_path` writes and syncs its temp
    file but defers the rename; at the end every temp file is renamed onto its target (a short
    burst of renames, nothing is written any more).  On an exception - a full disk, a fault in a
    writer - every temp file is removed and every target is left as it was."""
    if _PENDING.get() is not None:  # nested: the outer transaction commits
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    finally:
        _PENDING.reset(token)
    done = 0
    try:
        for tmp, path in pending:
            os.replace(tmp, path)
            done += 1
    except BaseException:
        for tmp, _ in pending[done:]:  # stopped among the renames: no temp file stays behind
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.
    ``suffix`` keeps an extension some writers need (e.g. ``.h5``); default: ``path``'s.
    The file gets the mode of a new file under the umask (:func:`file_mode`).  Inside a
    :func:`transaction` the rename waits for the end of the transaction.
    """
    path = Path(path)
    check_output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{_HOST}-{os.getpid()}.",
            suffix=(suffix if suffix is not None else path.suffix) + ".tmp",
            dir=path.parent,
        )
    except OSError as exc:  # a folder that takes no new file (/proc), read-only, full: name the output
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, file_mode())
        pending = _PENDING.get()
        if pending is not None:
            pending.append((tmp_path, path))
        else:
            os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # name the file being written
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False))
