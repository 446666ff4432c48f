"""MAttNet's vocabulary: tokens seen more than ``min_count`` times in the sentences of all splits
(``prepro.py``), plus the COCO category words and the special tokens ``<PAD>`` (= 0), ``<UNK>``, ``<BOS>``, ``<EOS>``.

Sentences become ``max_length`` label ids (truncated), padded with 0 (``<PAD>``); the
phrase attentions mask the padding out.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from sepnms.errors import InputError

PAD, UNK, BOS, EOS = "<PAD>", "<UNK>", "<BOS>", "<EOS>"
SPECIALS = (PAD, UNK, BOS, EOS)


@dataclass
class GroundingVocab:
    words: list[str]  # words[0] == PAD

    def __post_init__(self) -> None:
        if not self.words or self.words[0] != PAD:
            raise ValueError("the first word of a grounding vocabulary must be <PAD>")
        self.index = {w: i for i, w in enumerate(self.words)}
        self.unk = self.index[UNK]

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Sequence[str], max_length: int) -> list[int]:
        """Label ids of ``tokens`` (lower-cased), truncated to ``max_length``; at least one id
        (an empty sentence becomes ``[<UNK>]`` so that it has a valid attention)."""
        ids = [self.index.get(str(t).lower(), self.unk) for t in tokens][:max_length]
        return ids or [self.unk]

    def to_json(self) -> dict:
        return {"format": "sepnms-grounding-vocab", "words": self.words}

    @classmethod
    def from_json(cls, data: dict, source: Path | None = None) -> "GroundingVocab":
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list) or not words or words[0] != PAD or UNK not in words:
            raise InputError(source, "not a grounding vocabulary (needs a word list starting with <PAD>, with <UNK>)")
        return cls([str(w) for w in words])


def build_grounding_vocab(sentences: Iterable[Sequence[str]], category_names: Iterable[str],
                          min_count: int = 5) -> GroundingVocab:
    """Tokens with count > ``min_count`` over ``sentences`` (MAttNet: every split's), then the words
    of the category names not already in, then nothing else: unknown words map to ``<UNK>``."""
    counts = Counter(str(t).lower() for s in sentences for t in s)
    words = list(SPECIALS)
    seen = set(words)
    for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c > min_count and w not in seen:
            words.append(w)
            seen.add(w)
    for name in category_names:
        for w in str(name).lower().split():
            if w not in seen:
                words.append(w)
                seen.add(w)
    return GroundingVocab(words)


def max_length_for(dataset: str, configured: int | None) -> int:
    """MAttNet's label length: 20 for RefCOCOg, 10 otherwise (unless configured)."""
    if configured is not None:
        return int(configured)
    return 20 if dataset == "refcocog" else 10
