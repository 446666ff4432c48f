"""Word vocabulary and the frozen GloVe matrix of the Ctx-relatedness branch.

Vocabulary = the tokens (of every split's expressions, Ref-NMS's rule, or of the training split:
``prepare.vocab_splits``) with count >= ``min_count`` that exist in GloVe, sorted; index 0 is
``<unk>`` with a zero vector (unknown words and padding both map to it; padding is masked).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path, atomic_write_json

UNK = "<unk>"


@dataclass
class Vocab:
    words: list[str]  # words[0] == UNK

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Sequence[str], max_len: int | None = None) -> list[int]:
        """Token ids (0 for unknown), truncated to ``max_len`` when given."""
        ids = [self.index.get(t, 0) for t in tokens]
        return ids[:max_len] if max_len is not None else ids


def build_vocab(
    token_lists: Iterable[Sequence[str]], glove: dict[str, np.ndarray], min_count: int
) -> tuple[Vocab, np.ndarray]:
    """Return ``(vocab, matrix [V, D] float32)``; row 0 (``<unk>``) is zero."""
    counts = Counter(t for tokens in token_lists for t in tokens)
    if not glove:
        raise InputError(None, "the GloVe file holds none of the dataset's words")
    dim = int(next(iter(glove.values())).shape[0])
    words = [UNK] + sorted(w for w, c in counts.items() if c >= min_count and w in glove)
    matrix = np.zeros((len(words), dim), dtype=np.float32)
    for i, w in enumerate(words[1:], 1):
        matrix[i] = glove[w]
    return Vocab(words), matrix


def save_vocab(folder: Path, vocab: Vocab, matrix: np.ndarray) -> None:
    atomic_write_json(folder / "vocab.json", {"words": vocab.words})
    with atomic_path(folder / "word_vectors.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, matrix)  # a handle: np.save would append ".npy" to the temp name


def load_vocab(folder: Path) -> tuple[Vocab, np.ndarray]:
    import json

    vpath, mpath = folder / "vocab.json", folder / "word_vectors.npy"
    for p in (vpath, mpath):
        if not p.is_file():
            raise InputError(p, "not found: run `sepnms prepare` first")
    from sepnms.io.schemas import load_json

    words = load_json(vpath, "sepnms vocabulary").get("words")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise InputError(vpath, "'words' must be a list of strings (a sepnms vocabulary)")
    matrix = np.load(mpath)
    if matrix.shape[0] != len(words):
        raise InputError(mpath, f"{matrix.shape[0]} rows but {len(words)} words in {vpath}")
    return Vocab(words), matrix
