"""``sepnms import-weights``: the authors' released weights -> a project checkpoint.

``sepnms-release`` / ``refnms-release`` write ``<workdir>/models/<name>/best.pt`` (default name: the
run name of the format's model, ``sepnms`` or ``refnms``), the checkpoint ``propose`` reads, as if
the model had been trained here.  The word embedding comes from this workdir's vocabulary
(``sepnms prepare``); see ``sepnms.interop.release_weights``.

``mattnet-release`` writes the second stage's ``<workdir>/models/mattnet/best.pt`` (what ``sepnms
ground eval`` reads) from MAttNet's released ``.pth`` (``sepnms.interop.mattnet_release``) and the
vocabulary of MAttNet's ``data.json`` (``paths.data_json``, ``word_to_ix``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from sepnms.config import Config
from sepnms.engine.checkpoint import checkpoint_meta, save_checkpoint
from sepnms.errors import ConfigError, InputError, OutputExistsError
from sepnms.interop.release_weights import RELEASE_FORMATS, import_release_weights, key_mismatch, release_model_type
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


MATTNET_FORMAT = "mattnet-release"

#: (MAttNet opt key, the config key that must hold the same value)
_OPT_TO_CONFIG: tuple[tuple[str, str], ...] = (
    ("word_embedding_size", "grounding.word_embedding_size"), ("word_vec_size", "grounding.word_vec_size"),
    ("rnn_hidden_size", "grounding.rnn_hidden_size"), ("jemb_dim", "grounding.jemb_dim"),
    ("num_atts", "grounding.num_atts"), ("num_cxt", "grounding.num_cxt"),
    ("pool5_dim", "model.feat_channels"), ("fc7_dim", "model.head_out_channels"),
)
#: MAttNet options our network supports only at one value (its released models' settings)
_OPT_FIXED = {"rnn_num_layers": 1, "bidirectional": 1, "rnn_type": "lstm"}


def _config_value(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def import_mattnet_release(cfg: Config, source: str | Path, name: Optional[str] = None,
                           overwrite: bool = False) -> dict[str, Any]:
    """MAttNet's released checkpoint -> ``<workdir>/models/<name>/best.pt`` (default ``mattnet``).

    The file's ``opt`` sizes must equal the config's (``grounding.*``, ``model.feat_channels`` =
    pool5_dim, ``model.head_out_channels`` = fc7_dim; ConfigError naming each ``--set`` otherwise),
    its tensors MAttNet's 115 (+ 13 supplied BatchNorm counters) at the shapes the config builds,
    and ``word_to_ix`` of ``paths.data_json`` must have ``opt['vocab_size']`` words.
    """
    from sepnms.engine.ground.train import MODEL_NAME, _meta
    from sepnms.grounding.mattnet import build_mattnet
    from sepnms.grounding.vocab import UNK, GroundingVocab
    from sepnms.interop.mattnet_release import load_mattnet_release
    from sepnms.io.mattnet_data import load_data_json, word_list

    name = safe_name(name or MODEL_NAME, "model name")
    out = model_dir(cfg, name) / "best.pt"
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it with the imported weights")
    source = Path(source)
    release = load_mattnet_release(source)
    opt = release.opt

    fixed = [f"{k}={opt[k]!r} (supported: {v!r})" for k, v in _OPT_FIXED.items() if k in opt and opt[k] != v]
    if fixed:
        raise InputError(source, "this MAttNet was trained with " + ", ".join(fixed) + "; sepnms's MAttNet is the "
                                 "released one-layer bidirectional LSTM")
    differ = [(k, key, opt[k], _config_value(cfg, key)) for k, key in _OPT_TO_CONFIG
              if k in opt and opt[k] != _config_value(cfg, key)]
    if differ:
        raise ConfigError(f"{source}: the release was trained with other sizes than the config's: "
                          + ", ".join(f"opt {k}={v!r} but {key}={c!r}" for k, key, v, c in differ)
                          + "; use " + " ".join(f"--set {key}={v}" for _, key, v, _ in differ))

    data_json = cfg.need_path("data_json")
    words = word_list(load_data_json(data_json), data_json)
    rows = release.state_dict.get("rnn_encoder.embedding.weight")
    sizes = {"data.json word_to_ix": len(words)}
    if "vocab_size" in opt:
        sizes["opt vocab_size"] = opt["vocab_size"]
    if rows is not None:
        sizes["the embedding's rows"] = int(rows.shape[0])
    if len(set(sizes.values())) != 1:
        raise InputError(data_json, "word_to_ix does not fit the release: "
                         + ", ".join(f"{k} {v}" for k, v in sizes.items())
                         + " (use the data.json of the dataset and splitBy the model was trained on)")
    if UNK not in words or words[0] != "<PAD>":
        raise InputError(data_json, "word_to_ix has no <UNK> or does not start with <PAD> at index 0")
    vocab = GroundingVocab(list(words))

    net = build_mattnet(cfg.grounding, cfg.model, len(vocab))
    own = net.state_dict()
    theirs = release.state_dict
    mismatch = key_mismatch(own, theirs)[2]
    if mismatch:
        raise InputError(source, "the release's tensors do not match MAttNet at this config's sizes: " + mismatch)
    bad = [k for k, v in theirs.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(source, f"{bad[0]} holds NaN or Inf values")
    net.load_state_dict({k: theirs[k].to(own[k].dtype) for k in own}, strict=True)

    att_words: list[str] = []
    raw = load_data_json(data_json).get("att_to_ix")
    if isinstance(raw, dict) and raw:
        att_words = [w for w, _ in sorted(raw.items(), key=lambda kv: kv[1])]
    payload = {**_meta(cfg, vocab, att_words), "model": net.state_dict(), "opt": opt,
               "imported_from": {"file": str(source), "format": MATTNET_FORMAT, "sha256_16": file_digest(source),
                                 "rebuild": release.rebuild, "supplied": list(release.supplied)}}
    save_checkpoint(out, payload)
    for key, ours in (("dataset", cfg.dataset), ("splitBy", cfg.split_by)):
        if key in opt and opt[key] != ours:
            log.warning("the release was trained on %s=%r, the config evaluates %r", key, opt[key], ours)
    log.info("imported %d tensors of %s (MAttNet, %s) into %s", len(theirs) - len(release.supplied), source,
             release.rebuild, out)
    if name != MODEL_NAME:
        log.info("`sepnms ground eval` reads %s by default; pass --checkpoint %s",
                 model_dir(cfg, MODEL_NAME) / "best.pt", out)
    return {"checkpoint": str(out), "format": MATTNET_FORMAT, "tensors": len(theirs) - len(release.supplied),
            "supplied_counters": len(release.supplied), "vocab_size": len(vocab), "rebuild": release.rebuild,
            "opt": {k: opt[k] for k in ("dataset", "splitBy", "id", "vocab_size") if k in opt}}


__all__ = ["import_weights", "import_mattnet_release", "RELEASE_FORMATS", "MATTNET_FORMAT"]
