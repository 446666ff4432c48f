"""Frozen BERT-family sentence vectors for the Ref-relatedness branch, computed once per expression.

Parity pooling (``mean_all``): tokenise with padding to ``max_length`` (incl. [CLS]/[SEP]),
truncation on, and average the last hidden layer over *all* positions, padding included, as the
released code does.  ``masked_mean`` averages over real tokens only.

The vectors are cached in ``<workdir>/text/sentence_vectors.h5`` (``sent_id`` int64 [E],
``vectors`` float32 [E, D]); BERT never runs inside the training loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np
import torch

from sepnms.errors import ConfigError, InputError
from sepnms.io.atomic import atomic_path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _quiet_transformers() -> None:
    """No per-shard progress bars from transformers for local saves/loads (ours report progress)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def build_tiny_encoder(folder: Path, words: Sequence[str], hidden: int, layers: int, heads: int, seed: int) -> Path:
    """Write a small random BERT (and a word-level WordPiece vocab) to ``folder``.

    Demo only: no pretrained BERT can be obtained offline.  It is saved with ``save_pretrained``
    so it is then loaded through exactly the same path as a user's ``bert-base-uncased``.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    _quiet_transformers()

    vocab = {w: i for i, w in enumerate(SPECIAL + sorted(set(words) - set(SPECIAL)))}
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=64)
    model = BertModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return folder


def load_encoder(folder: Path, device: str = "cpu"):
    """Load tokenizer + model from a local folder (never downloads)."""
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise InputError(folder, "not a transformers model folder (no config.json); set paths.text_encoder to a local BERT")
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
    except (OSError, ValueError) as exc:
        raise InputError(folder, f"could not load the text encoder: {exc}") from None
    return tok, model


@torch.no_grad()
def encode_sentences(
    tok, model, sentences: Sequence[str], max_length: int, pooling: str = "mean_all",
    batch_size: int = 64, device: str = "cpu", progress: bool = False,
) -> np.ndarray:
    """Return float32 [E, D] sentence vectors."""
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(sentences), batch_size), desc="encode-text", disable=not progress):
        batch = list(sentences[start:start + batch_size])
        enc = tok(batch, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state  # [B, L, D]
        if pooling == "mean_all":
            vec = hidden.mean(dim=1)
        elif pooling == "masked_mean":
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            raise ConfigError(f"text.pooling must be mean_all or masked_mean, not {pooling!r}")
        out.append(vec.float().cpu().numpy())
    dim = model.config.hidden_size
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def save_vectors(path: Path, sent_ids: Sequence[int], vectors: np.ndarray, attrs: Optional[dict] = None) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("sent_id", data=np.asarray(sent_ids, np.int64))
            f.create_dataset("vectors", data=np.asarray(vectors, np.float32))
            for k, v in (attrs or {}).items():
                f.attrs[k] = v


def load_vectors(path: Path, expect_dim: Optional[int] = None) -> dict[int, np.ndarray]:
    """``{sent_id: vector [D]}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "sentence vectors not found: run `sepnms encode-text` first")
    try:
        with h5py.File(path, "r") as f:
            ids, vecs = f["sent_id"][()], f["vectors"][()]
    except (OSError, KeyError) as exc:
        raise InputError(path, f"unreadable sentence-vector file ({exc})") from None
    if expect_dim is not None and vecs.shape[1] != expect_dim:
        raise InputError(path, f"vectors are {vecs.shape[1]}-d but model.text_dim is {expect_dim}")
    return {int(i): v for i, v in zip(ids, vecs)}
