"""``sepnms encode-text``: one cached BERT sentence vector per expression.

The expressions are encoded image by image, in chunks of ``flush_every`` images, each chunk written
as a part file (``text/sentence_vectors.parts/part-<first image>.h5``, the final file's layout
plus an ``images`` attr; see ``sepnms.io.parts``).  A re-run after an interruption skips the
chunks already written; ``shard=(i, n)`` encodes every n-th image only; the parts are merged into
``text/sentence_vectors.h5`` (refdb expression order) once every image is covered.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sepnms.config import Config
from sepnms.data.refdb import RefDB, load_refdb
from sepnms.distributed import resolve_device
from sepnms.workdir import STAGE_SECTIONS, check_stage, write_manifest
from sepnms.errors import ConfigError, InputError
from sepnms.io.finite import check_finite
from sepnms.io.parts import PartFiles, chunked, describe_missing, h5_attr_keys, shard_keys
from sepnms.text.sentence_encoder import build_tiny_encoder, encode_sentences, load_encoder, save_vectors

log = logging.getLogger(__name__)


def vectors_path(cfg: Config) -> Path:
    return Path(cfg.workdir) / "text" / "sentence_vectors.h5"


def encoder_dir(cfg: Config) -> Path:
    """The configured encoder folder, or (demo) the tiny encoder built in the workdir."""
    if cfg.paths.text_encoder is not None:
        return cfg.paths.text_encoder
    if cfg.text.build_tiny_encoder:
        return Path(cfg.workdir) / "text" / "tiny_encoder"
    raise ConfigError("paths.text_encoder is not set: point it at a local BERT folder (e.g. bert-base-uncased)")


def _ensure_tiny_encoder(cfg: Config, refdb: RefDB, folder: Path) -> None:
    """Build the demo's tiny encoder once; built aside and renamed into place, so processes
    encoding shards at the same time never see (or load) a half-written folder."""
    if (folder / "config.json").is_file():
        return
    words = sorted({t for e in refdb.expressions for t in e["tokens"]})
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_encoder(tmp, words, cfg.text.tiny_hidden, cfg.text.tiny_layers, cfg.text.tiny_heads, cfg.seed)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process put its (identical, same seed) encoder there first
        if not (folder / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _part_images(path: Path) -> list[int]:
    return h5_attr_keys(path, "images", "sentence-vector")


def _outputs(cfg: Config) -> tuple[PartFiles, dict[str, Any]]:
    """(the part files, the attrs of the final file)."""
    folder = encoder_dir(cfg)
    attrs = {"encoder": str(folder), "pooling": cfg.text.pooling, "max_length": cfg.text.max_length}
    parts = PartFiles(vectors_path(cfg), ".h5", cfg.fingerprint(*STAGE_SECTIONS["text"]), _part_images)
    return parts, attrs


def write_merged_vectors(parts: list[Path], out: Path, sent_ids: list[int], attrs: dict[str, Any]) -> None:
    """Join sentence-vector parts into ``out`` (``sent_id`` [E], ``vectors`` [E, D], rows in
    ``sent_ids`` order), one part at a time: only one part's vectors are in memory."""
    row = {sid: i for i, sid in enumerate(sent_ids)}
    seen = np.zeros(len(sent_ids), bool)
    with h5py.File(out, "w") as g:
        g.create_dataset("sent_id", data=np.asarray(sent_ids, np.int64))
        vectors = None
        for p in parts:
            with h5py.File(p, "r") as f:
                ids, vecs = f["sent_id"][()], f["vectors"][()]
            if vectors is None:
                vectors = g.create_dataset("vectors", shape=(len(sent_ids), vecs.shape[1]), dtype=np.float32)
            rows = np.array([row[int(s)] for s in ids], np.int64)
            order = np.argsort(rows)
            vectors[rows[order]] = vecs[order]  # h5py wants increasing indices
            seen[rows] = True
        if vectors is None:
            g.create_dataset("vectors", shape=(len(sent_ids), 0), dtype=np.float32)
        if not seen.all():
            raise InputError(out, f"{int((~seen).sum())} expressions have no vector in the parts")
        for k, v in attrs.items():
            g.attrs[k] = v


def _merge(cfg: Config, parts: PartFiles, refdb: RefDB, attrs: dict[str, Any]) -> bool:
    sent_ids = [int(e["sent_id"]) for e in refdb.expressions]
    merged = parts.merge(refdb.by_image(), lambda paths, tmp: write_merged_vectors(paths, tmp, sent_ids, attrs))
    if merged:
        write_manifest(cfg, "text", vectors_path(cfg).parent)
    return merged


def merge_text(cfg: Config) -> dict[str, Any]:
    """Merge the part files of ``encode-text`` shards (``sepnms merge encode-text``, or rank 0
    under torchrun); an InputError names the missing images if incomplete."""
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    parts, attrs = _outputs(cfg)
    if not parts.exists() and not parts.final.is_file():
        raise InputError(parts.folder, "no sentence-vector parts: run `sepnms encode-text` first")
    if not _merge(cfg, parts, refdb, attrs):
        raise InputError(parts.folder, describe_missing(parts, parts.missing(refdb.by_image())))
    return {"vectors": str(parts.final), "expressions": len(refdb.expressions)}


def encode_text(cfg: Config, overwrite: bool = False, progress: bool = True, shard: tuple[int, int] = (0, 1),
                flush_every: int = 256, merge: bool = True) -> dict[str, Any]:
    """Encode every expression of the refdb (this shard's images); returns a summary.

    Chunks of ``flush_every`` images are encoded (batches of ``text.batch_size`` sentences) and
    written as one part each; with ``merge`` the parts become ``text/sentence_vectors.h5`` once
    every image is covered.
    """
    from tqdm import tqdm

    check_stage(cfg, "text", overwrite=overwrite)
    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)})  # cuda -> cuda:<LOCAL_RANK>
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    folder = encoder_dir(cfg)
    if cfg.paths.text_encoder is None:
        _ensure_tiny_encoder(cfg, refdb, folder)
    tok, model = load_encoder(folder, cfg.device)
    if model.config.hidden_size != cfg.model.text_dim:
        raise InputError(folder, f"encoder hidden size {model.config.hidden_size} != model.text_dim {cfg.model.text_dim}")
    parts, attrs = _outputs(cfg)
    done = parts.begin()
    by_image = refdb.by_image()
    mine = shard_keys(by_image, shard)
    bar = tqdm(total=len(mine), initial=sum(1 for iid in mine if iid in done), desc="encode-text",
               unit="img", disable=not progress)
    for chunk in chunked(mine, flush_every, done):
        exprs = [e for iid in chunk for e in by_image[iid]]
        vecs = encode_sentences(tok, model, [e["sent"] for e in exprs], cfg.text.max_length, cfg.text.pooling,
                                cfg.text.batch_size, cfg.device)
        check_finite({"sentence vectors": vecs}, f"encode-text, image_ids {chunk[0]}..{chunk[-1]}",
                     cfg.paths.text_encoder)
        save_vectors(parts.part_path(chunk), [e["sent_id"] for e in exprs], vecs,
                     {**attrs, "images": ",".join(map(str, chunk))})
        bar.update(len(chunk))
    bar.close()
    summary = {"expressions": len(refdb.expressions), "dim": int(model.config.hidden_size), "encoder": str(folder)}
    if not (merge and _merge(cfg, parts, refdb, attrs)):
        return {**summary, "parts": str(parts.folder), "images_this_shard": len(mine), "merged": False}
    return summary
