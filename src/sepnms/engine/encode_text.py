"""``sepnms encode-text``: one cached BERT sentence vector per expression."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sepnms.config import Config
from sepnms.data.refdb import load_refdb
from sepnms.engine.workdir import check_stage, write_manifest
from sepnms.errors import ConfigError, InputError
from sepnms.text.sentence_encoder import build_tiny_encoder, encode_sentences, load_encoder, save_vectors


def vectors_path(cfg: Config) -> Path:
    return Path(cfg.workdir) / "text" / "sentence_vectors.h5"


def encoder_dir(cfg: Config) -> Path:
    """The configured encoder folder, or (demo) the tiny encoder built in the workdir."""
    if cfg.paths.text_encoder is not None:
        return cfg.paths.text_encoder
    if cfg.text.build_tiny_encoder:
        return Path(cfg.workdir) / "text" / "tiny_encoder"
    raise ConfigError("paths.text_encoder is not set: point it at a local BERT folder (e.g. bert-base-uncased)")


def encode_text(cfg: Config, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    out = check_stage(cfg, "text", overwrite=overwrite)
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    folder = encoder_dir(cfg)
    if cfg.paths.text_encoder is None and not (folder / "config.json").is_file():
        words = sorted({t for e in refdb.expressions for t in e["tokens"]})
        build_tiny_encoder(folder, words, cfg.text.tiny_hidden, cfg.text.tiny_layers, cfg.text.tiny_heads, cfg.seed)
    tok, model = load_encoder(folder, cfg.device)
    if model.config.hidden_size != cfg.model.text_dim:
        raise InputError(folder, f"encoder hidden size {model.config.hidden_size} != model.text_dim {cfg.model.text_dim}")
    exprs = refdb.expressions
    vecs = encode_sentences(tok, model, [e["sent"] for e in exprs], cfg.text.max_length, cfg.text.pooling,
                            cfg.text.batch_size, cfg.device, progress)
    save_vectors(vectors_path(cfg), [e["sent_id"] for e in exprs], vecs,
                 {"encoder": str(folder), "pooling": cfg.text.pooling, "max_length": cfg.text.max_length})
    write_manifest(cfg, "text", out)
    return {"expressions": len(exprs), "dim": int(vecs.shape[1]), "encoder": str(folder)}
