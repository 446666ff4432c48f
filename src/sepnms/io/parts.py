"""Part files: outputs written piece by piece, resumable, shardable, then merged into one file.

A stage that works image by image (``propose``, ``encode-text``, ``clip-ctx``) does not hold its
whole output in memory and does not write it once at the end.  It writes *parts*::

    <folder>/<final name>.parts/
        meta.json                   {"fingerprint": ...}: what produced these parts
        part-<first key:012d><ext>  one chunk of work units (image ids), written atomically

Each part records the keys (image ids) it covers; the format-specific ``read_keys`` callback
returns them.  The part writers are atomic (temp file + rename), so a killed process leaves whole
parts or none, never a truncated one.  On a re-run:

* parts of the same fingerprint are kept and their keys skipped (no work is redone);
* parts of another fingerprint (other model, other config) are discarded as stale;
* a final file left by an earlier run stays until the merge of the new parts replaces it
  (atomically): a re-run that fails keeps the last complete output.

Several processes may write into the same folder (``--shard i/n``, torchrun ranks), each over
its own keys.  When every expected key is covered, :meth:`PartFiles.merge` joins the parts into
the final file (atomically) and removes the folder.  A lock file beside the final file
(``.<final name>.lock``, ``fcntl.flock``) serialises the start-of-run checks and the merge
between processes on one machine.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path, atomic_write_json
from sepnms.io.fs import ensure_free

log = logging.getLogger(__name__)

META = "meta.json"


def file_digest(path: Path) -> str:
    """A short sha256 of a file's bytes (to tie parts to the weights that produced them)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def chunked(keys: Sequence[int], size: int, done: set[int]) -> Iterator[list[int]]:
    """Consecutive chunks of ``size`` keys (fixed boundaries over ``keys``), minus the ``done``
    keys; chunks left empty are skipped.  Boundaries do not depend on ``done``, so a resumed run
    groups the remaining work exactly as an uninterrupted run would have."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, not {size}")
    for start in range(0, len(keys), size):
        todo = [k for k in keys[start:start + size] if k not in done]
        if todo:
            yield todo


def shard_keys(keys: Iterable[int], shard: tuple[int, int]) -> list[int]:
    """The keys of shard ``(i, n)``: every n-th of the sorted keys, starting at the i-th."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
    return [k for j, k in enumerate(sorted(keys)) if j % n == i]


class PartFiles:
    """The parts folder of one final output file.

    Args:
        final: the final output path (``.../val.h5``); parts go to ``.../val.parts/``.
        ext: the part files' extension (``.h5``, ``.json``).
        fingerprint: identifies what produces the parts (config, model weights ...).
        read_keys: part path -> the keys it covers (should read only what it needs).
    """

    def __init__(self, final: Path, ext: str, fingerprint: str, read_keys: Callable[[Path], Iterable[int]]):
        self.final = Path(final)
        self.folder = self.final.with_name(self.final.stem + ".parts")
        self.ext, self.fingerprint, self._read_keys = ext, fingerprint, read_keys

    # -- locking -----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock shared by every process working on this output (same machine)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        with open(self.final.with_name(f".{self.final.name}.lock"), "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- state -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.folder.is_dir()

    def paths(self) -> list[Path]:
        """The finished parts, sorted by name (temp files of writers in progress excluded)."""
        return sorted(self.folder.glob(f"part-*{self.ext}")) if self.exists() else []

    def done(self) -> set[int]:
        """The keys covered by finished parts."""
        keys: set[int] = set()
        for part in self.paths():
            keys.update(int(k) for k in self._read_keys(part))
        return keys

    def part_path(self, keys: Sequence[int]) -> Path:
        """Where the part covering ``keys`` goes (named by its first key; keys are never in two
        parts, so names never clash)."""
        if not keys:
            raise ValueError("a part covers at least one key")
        return self.folder / f"part-{int(keys[0]):012d}{self.ext}"

    def _meta_fingerprint(self) -> str | None:
        try:
            return json.loads((self.folder / META).read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None

    # -- life cycle --------------------------------------------------------------------
    def begin(self) -> set[int]:
        """Start (or resume) writing parts; returns the keys already done.

        Stale parts (another fingerprint, or no readable meta) are discarded (a warning says how
        many and why); a final file of an earlier run is kept until :meth:`merge` replaces it.
        Safe to call from several processes.
        """
        with self.lock():
            if self.exists() and self._meta_fingerprint() != self.fingerprint:
                log.warning("%s", self._stale_message())
                self._remove_folder()
            if not self.exists():
                # a final file of an earlier run stays until the merge replaces it atomically: a
                # re-run that fails keeps the last complete output
                self.folder.mkdir(parents=True)
                atomic_write_json(self.folder / META, {"fingerprint": self.fingerprint, "final": self.final.name})
            return self.done()

    def _stale_message(self) -> str:
        """What is discarded and why (for the warning of :meth:`begin`)."""
        old = self._meta_fingerprint()
        parts = self.paths()
        try:
            n_keys = len(self.done())
        except InputError:
            n_keys = None
        if not parts:
            what = "an empty parts folder (an earlier run stopped before finishing any part)"
        else:
            what = f"{len(parts)} part file(s)" + (f" covering {n_keys} image(s)" if n_keys is not None else "")
        why = ("its meta.json is missing or unreadable" if old is None else
               f"written by another model or configuration (fingerprint {old}, now {self.fingerprint})")
        return f"{self.folder}: discarding {what}: {why}; the work is redone"

    def missing(self, expected: Iterable[int]) -> set[int]:
        return set(int(k) for k in expected) - self.done()

    def merge(self, expected: Iterable[int], merger: Callable[[list[Path], Path], None]) -> bool:
        """If the parts cover every ``expected`` key, write the final file with
        ``merger(parts, tmp_path)`` (then renamed atomically onto the final path) and remove the
        parts folder.  Returns whether the final file now exists complete: False while keys are
        missing; True without work when another process merged already."""
        expected = sorted(set(int(k) for k in expected))
        with self.lock():
            if not self.exists():
                return self.final.is_file()
            if self._meta_fingerprint() != self.fingerprint:
                raise InputError(self.folder, "these parts were written by another configuration or model; "
                                              "re-run the stage to replace them")
            missing = self.missing(expected)
            if missing:
                return False
            ensure_free(self.final, sum(p.stat().st_size for p in self.paths()), "merged file")
            with atomic_path(self.final) as tmp:
                merger(self.paths(), tmp)
            self._remove_folder()
            return True

    def _remove_folder(self) -> None:
        """Rename away first (atomic), then delete: a crash mid-delete leaves no half folder."""
        trash = self.folder.with_name(f".{self.folder.name}.trash-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def h5_attr_keys(path: Path, attr: str, what: str) -> list[int]:
    """The keys (image ids) an HDF5 part covers, from its comma-separated ``attr`` (rows not read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            text = str(f.attrs.get(attr, ""))
    except OSError as exc:
        raise InputError(path, f"unreadable {what} part ({exc}); delete it and re-run") from None
    return [int(v) for v in text.split(",") if v]


def describe_missing(parts: PartFiles, missing: set[int], what: str = "images") -> str:
    """A message for an incomplete merge: how many keys are missing, and an example."""
    first = min(missing)
    return (f"{parts.folder}: {len(missing)} {what} not done yet (e.g. {first}); run the remaining shards "
            f"(or the stage without --shard) first")
