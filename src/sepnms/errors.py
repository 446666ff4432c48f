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
