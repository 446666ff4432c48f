"""Project checkpoints of the first-stage models: what they hold, how they are written and read.

Kept apart from the trainer so that ``propose`` (and anything else that only loads weights) does not
import the training loop.  Where a checkpoint lives is :func:`sepnms.workdir.model_dir`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import torch

from sepnms.config import Config
from sepnms.data.workspace import Workspace
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path
from sepnms.io.checkpoints import torch_load_weights
from sepnms.models.sepnms_model import build_model
from sepnms.version import __version__
from sepnms.workdir import model_dir, run_name

CKPT_FORMAT = "sepnms-checkpoint"


def vocab_fingerprint(cfg: Config) -> Optional[dict[str, Any]]:
    """What the word embedding rows of a model mean: the sha256 and size of the workdir's
    ``prepare/vocab.json`` (None before prepare).  A model trained on another dataset or prepare
    run indexes other words; with equal vocabulary sizes it would load and score silently wrong."""
    path = Path(cfg.workdir) / "prepare" / "vocab.json"
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        size = len(json.loads(data).get("words", []))
    except (ValueError, AttributeError, UnicodeDecodeError):
        size = None
    return {"sha256": hashlib.sha256(data).hexdigest(), "words": size}


def checkpoint_meta(cfg: Config, model_type: str) -> dict[str, Any]:
    return {"format": CKPT_FORMAT, "version": 1, "sepnms_version": __version__, "preset": cfg.preset,
            "model_type": model_type, "model_config": cfg.model.model_dump(mode="json"),
            "config": cfg.model_dump(mode="json"), "vocab": vocab_fingerprint(cfg)}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_initial_checkpoint(cfg: Config, model_type: str = "sepnms", seed: int = 0, which: str = "best") -> Path:
    """Save a freshly initialised model as ``<models>/<name>/<which>.pt`` (benchmarks, tests and
    smoke runs of ``propose`` that need weights but no training)."""
    ws = Workspace.open(cfg, need_text=False)
    torch.manual_seed(seed)
    model = build_model(cfg.model, torch.from_numpy(ws.word_vectors), model_type)
    path = model_dir(cfg, run_name(cfg, model_type)) / f"{which}.pt"
    save_checkpoint(path, {**checkpoint_meta(cfg, model_type), "model": model.state_dict()})
    return path


def load_checkpoint(path: Path, cfg: Optional[Config] = None, model_type: Optional[str] = None) -> dict[str, Any]:
    """Load with ``weights_only=True``; check it is ours and matches the config's model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found (run `sepnms train` first)")
    ckpt = torch_load_weights(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise InputError(path, "not a sepnms checkpoint")
    if model_type is not None and ckpt["model_type"] != model_type:
        raise InputError(path, f"checkpoint of a {ckpt['model_type']!r} model, expected {model_type!r}")
    if cfg is not None and ckpt["model_config"] != cfg.model.model_dump(mode="json"):
        diff = [k for k, v in cfg.model.model_dump(mode="json").items() if ckpt["model_config"].get(k) != v]
        raise InputError(path, f"checkpoint was trained with another model config (preset {ckpt['preset']!r}; "
                               f"differs in {diff[:5]})")
    theirs = ckpt.get("vocab")
    mine = vocab_fingerprint(cfg) if cfg is not None else None
    if theirs and mine and theirs.get("sha256") != mine["sha256"]:
        raise InputError(path, f"checkpoint was trained on another vocabulary ({theirs.get('words')} words) than "
                               f"{Path(cfg.workdir) / 'prepare' / 'vocab.json'} ({mine['words']} words): a model of "
                               "another dataset or prepare run; train it on this workdir")
    return ckpt


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    """``model.load_state_dict(ckpt["model"])``, an InputError naming ``path`` when the shapes or
    names do not fit (a checkpoint of another dataset written before checkpoints recorded their
    vocabulary, or of another code version) instead of torch's multi-line size-mismatch text."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise InputError(path, f"checkpoint does not fit the model ({first}): trained on another dataset or "
                               "configuration?") from None
