"""Errors the user sees.  The CLI prints them as one clear message (no traceback)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


class SepNMSError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, missing file)."""


class ConfigError(SepNMSError):
    """The config is invalid or lacks a value a stage needs."""


class InputError(SepNMSError):
    """An input file is missing or malformed.  The message names the file and the problem."""

    def __init__(self, path: Optional[Path | str], problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class UnsafePickleError(InputError):
    """A pickle asked to import something other than builtin containers or numpy arrays."""


class OutputExistsError(SepNMSError):
    """An output exists from a different configuration; refuse unless told to overwrite."""


class StorageError(SepNMSError):
    """The file system refused a write or read: disk full, read-only, permission denied.

    One line naming the file and the cause (``errno`` name), e.g.
    ``<work>/prepare/refdb.json: no space left on device (ENOSPC)``.
    """

    #: errno -> what the user reads
    CAUSES = {28: "no space left on device", 30: "read-only file system", 13: "permission denied",
              1: "operation not permitted", 122: "disk quota exceeded", 27: "file too large"}

    def __init__(self, path: Optional[Path | str], cause: str):
        self.path = Path(path) if path is not None else None
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{cause}")

    #: errno -> what the user reads, for a path that cannot be used as given (the advice differs)
    PATH_CAUSES = {2: "no such file or folder", 17: "exists and is not a folder", 20: "a component of the path is a file, not a folder",
                   21: "is a folder, not a file", 36: "file name too long", 40: "too many levels of symbolic links"}

    @classmethod
    def from_os_error(cls, exc: OSError, path: Optional[Path | str] = None) -> Optional["StorageError"]:
        """The StorageError for ``exc`` if it is a storage fault (errno in :attr:`CAUSES`), else None."""
        import errno as _errno

        code = exc.errno
        if code is None:  # h5py / torch wrap the C error in text: "errno = 28, error message = ..."
            import re

            found = re.search(r"errno\s*=\s*(\d+)", str(exc))
            code = int(found.group(1)) if found else None
        name = _errno.errorcode.get(code, str(code)) if code is not None else ""
        where = path or exc.filename
        if code in cls.PATH_CAUSES and where is not None:
            return cls(where, f"{cls.PATH_CAUSES[code]} ({name}); check the path")
        if code not in cls.CAUSES:
            return None
        return cls(where, f"{cls.CAUSES[code]} ({name}); free space or fix the permissions (or use "
                          "another workdir), then re-run")
