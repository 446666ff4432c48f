"""What the model reads: the prepared workdir files of one workdir (``Workspace``: the RefDB, the
vocabulary and word vectors, the candidate store, the sentence vectors, the context labels)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from sepnms.config import Config
from sepnms.data.candidates import CandidateStore
from sepnms.data.ctxdb import CtxDB, ctxdb_path, load_ctxdb
from sepnms.data.refdb import RefDB, load_refdb
from sepnms.errors import InputError
from sepnms.text.sentence_encoder import load_vectors
from sepnms.text.vocab import Vocab, load_vocab
from sepnms.workdir import vectors_path


@dataclass
class Workspace:
    """The prepared inputs of one workdir."""

    cfg: Config
    refdb: RefDB
    vocab: Vocab
    word_vectors: np.ndarray
    candidates: CandidateStore
    text_vectors: Optional[dict[int, np.ndarray]]
    ctxdb: Optional[CtxDB]

    @classmethod
    def open(cls, cfg: Config, need_text: bool = True, need_ctx: bool = False) -> "Workspace":
        prep = Path(cfg.workdir) / "prepare"
        if (prep / "refdb.json").is_file() and not (prep / "manifest.json").is_file():
            raise InputError(prep, "incomplete: `sepnms prepare` did not finish writing here (no manifest.json); "
                                   "re-run it")
        refdb = load_refdb(prep / "refdb.json")
        vocab, matrix = load_vocab(prep)
        if matrix.shape[1] != cfg.model.word_dim:
            raise InputError(prep / "word_vectors.npy", f"{matrix.shape[1]}-d vectors but model.word_dim is {cfg.model.word_dim}")
        text = load_vectors(vectors_path(cfg), cfg.model.text_dim) if need_text else None
        if text is not None:
            missing = [e["sent_id"] for e in refdb.expressions if int(e["sent_id"]) not in text]
            if missing:
                raise InputError(vectors_path(cfg), f"no vector for {len(missing)} expressions (e.g. sent_id {missing[0]}); re-run encode-text")
        ctx = load_training_ctxdb(cfg) if need_ctx else None
        return cls(cfg, refdb, vocab, matrix, CandidateStore(prep / "candidates.h5"), text, ctx)

    def word_ids(self, tokens: list[str], max_len: Optional[int]) -> list[int]:
        ids = self.vocab.encode(tokens, max_len)
        return ids if ids else [0]


def load_training_ctxdb(cfg: Config) -> CtxDB:
    """The context labels training reads (``train.ctx_source``); missing CLIP labels get an error
    that says how to make them or how to train on the GloVe labels instead."""
    path = ctxdb_path(cfg.workdir, cfg.train.ctx_source)
    if cfg.train.ctx_source == "clip" and not path.is_file():
        raise InputError(path, "CLIP-dagger context labels not found (train.ctx_source is clip, the paper's "
                               "labels): run `sepnms clip-ctx` first, or train on the GloVe labels with "
                               "`--set train.ctx_source=glove`")
    return load_ctxdb(path)
