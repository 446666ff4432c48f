"""``sepnms import-weights``: the authors' released state dict -> a project checkpoint.

Writes ``<workdir>/models/<name>/best.pt`` (default name: the run name of the format's model,
``sepnms`` or ``refnms``), the checkpoint ``propose`` reads, as if the model had been trained here.
The word embedding comes from this workdir's vocabulary (``sepnms prepare``); see
``sepnms.interop.release_weights``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from sepnms.config import Config
from sepnms.engine.checkpoint import checkpoint_meta, save_checkpoint
from sepnms.errors import OutputExistsError
from sepnms.interop.release_weights import RELEASE_FORMATS, import_release_weights, release_model_type
from sepnms.io.checkpoints import torch_load_weights
from sepnms.io.parts import file_digest
from sepnms.models.sepnms_model import build_model
from sepnms.text.vocab import load_vocab
from sepnms.workdir import model_dir, run_name, safe_name

log = logging.getLogger(__name__)


def import_weights(cfg: Config, source: str | Path, fmt: str, name: Optional[str] = None,
                   overwrite: bool = False) -> dict[str, Any]:
    """Import a released state dict; returns the report (checkpoint path, tensors copied, ...).

    Raises InputError (naming the file) for a missing, unloadable or mismatching file, and
    OutputExistsError when the checkpoint exists and ``overwrite`` is not set.
    """
    model_type = release_model_type(fmt)
    name = safe_name(name or run_name(cfg, model_type), "model name")
    out = model_dir(cfg, name) / "best.pt"
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it with the imported weights")
    source = Path(source)
    state_dict = torch_load_weights(source, what="released weights file")
    if cfg.prepare.vocab_splits != "all":
        log.warning("prepare.vocab_splits is %r: the released models were trained with Ref-NMS's vocabulary "
                    "(tokens of all splits, prepare.vocab_splits: all); their scores will differ here",
                    cfg.prepare.vocab_splits)
    _vocab, matrix = load_vocab(Path(cfg.workdir) / "prepare")
    model = build_model(cfg.model, torch.from_numpy(matrix), model_type)
    report = import_release_weights(model, state_dict, fmt, source)
    payload = {**checkpoint_meta(cfg, model_type), "model": model.state_dict(),
               "imported_from": {"file": str(source), "format": fmt, "sha256_16": file_digest(source)}}
    save_checkpoint(out, payload)
    log.info("imported %d tensors of %s (%s) into %s", report.tensors, source, fmt, out)
    if name != run_name(cfg, model_type):
        log.info("`sepnms propose --model %s` reads %s; this checkpoint is under the name %r",
                 model_type, model_dir(cfg, run_name(cfg, model_type)) / "best.pt", name)
    return {"checkpoint": str(out), **report.to_dict(), "vocab_size": int(matrix.shape[0])}


__all__ = ["import_weights", "RELEASE_FORMATS"]
