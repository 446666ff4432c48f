"""The work directory: where each stage writes, and a manifest that ties outputs to a config.

Each stage writes into ``<workdir>/<stage>/`` and records ``manifest.json`` with a fingerprint of
the config sections it depends on.  Re-running a stage with a different configuration into the
same folder is refused unless ``overwrite`` is set, so outputs of two configurations never mix.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional

from sepnms.config import Config
from sepnms.errors import ConfigError, OutputExistsError
from sepnms.io.atomic import atomic_write_json
from sepnms.version import __version__

#: config sections each stage's output depends on
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("dataset", "split_by", "paths", "prepare"),
    "text": ("dataset", "split_by", "paths", "text"),
    "clip": ("dataset", "split_by", "paths", "clip"),
}


def stage_dir(cfg: Config, stage: str) -> Path:
    return Path(cfg.workdir) / stage


def check_stage(cfg: Config, stage: str, sections: tuple[str, ...] | None = None,
                folder: Path | None = None, overwrite: bool = False) -> Path:
    """Create the stage folder; refuse if it holds outputs of a different configuration."""
    sections = sections or STAGE_SECTIONS[stage]
    folder = folder or stage_dir(cfg, stage)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    fp = cfg.fingerprint(*sections)
    if manifest.is_file() and not overwrite:
        from sepnms.io.schemas import load_json

        old = load_json(manifest, f"{stage} manifest").get("fingerprint")
        if old != fp:
            raise OutputExistsError(
                f"{folder} holds outputs of a different configuration (fingerprint {old}, now {fp}, "
                f"sections {list(sections)}). Use another workdir, or pass --overwrite to replace them."
            )
    return folder


def write_manifest(cfg: Config, stage: str, folder: Path, sections: tuple[str, ...] | None = None,
                   extra: dict[str, Any] | None = None) -> None:
    sections = sections or STAGE_SECTIONS[stage]
    atomic_write_json(
        folder / "manifest.json",
        {"stage": stage, "fingerprint": cfg.fingerprint(*sections), "sections": list(sections),
         "sepnms_version": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
         **(extra or {})},
        indent=2,
    )


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it is safe as one path component under the workdir, else ConfigError.

    Method, model and tag names become folder and file names (``<workdir>/fused/<method>/``,
    ``export/matt_dets_<method>_<tag>_...json``); a name such as ``../../x`` would write outside
    the work directory.  Allowed: letters, digits and ``_ . + -``, starting with a letter or
    digit, at most 100 characters (so no ``/``, ``\\``, ``..`` component or hidden name).
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not a safe file name: use letters, digits and _ . + - "
            "(starting with a letter or digit; no path separators or '..')"
        )
    return name


def run_name(cfg: Config, model_type: Optional[str] = None) -> str:
    """``sepnms`` / ``refnms``, suffixed ``_clipctx`` when trained on CLIP-dagger context labels."""
    name = model_type or cfg.train.model
    return name + ("_clipctx" if cfg.train.ctx_source == "clip" else "")


def model_dir(cfg: Config, name: str) -> Path:
    """``<workdir>/models/<name>``: where a trained model's checkpoints (``best.pt``, ``last.pt``) live."""
    return Path(cfg.workdir) / "models" / name


def vectors_path(cfg: Config) -> Path:
    """``text/sentence_vectors.h5``: the sentence vectors ``encode-text`` writes and the model reads."""
    return Path(cfg.workdir) / "text" / "sentence_vectors.h5"


def ground_dir(cfg: Config) -> Path:
    """``<workdir>/ground``: what ``ground eval`` writes (metrics, hits, predictions)."""
    return Path(cfg.workdir) / "ground"


def fused_path(cfg: Config, method: str, split: str) -> Path:
    """``fused/<method>/<split>.h5``: a fused first-stage table (``sepnms fuse``)."""
    return Path(cfg.workdir) / "fused" / method / f"{split}.h5"


def save_portable_config(cfg: Config, path: Path) -> Path:
    """Write ``cfg`` as a complete config YAML at ``path``; paths inside ``path``'s folder are
    written relative to it (``load_config`` resolves them against the file's folder), so the
    folder can be moved as a whole.  The demo writes ``<demo dir>/config.yaml`` this way."""
    import yaml

    from sepnms.io.atomic import atomic_write_text

    path = Path(path)
    base = path.resolve().parent
    data = cfg.model_dump(mode="json")

    def rel(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        p = Path(value)
        if p.is_absolute() and p.resolve().is_relative_to(base):
            return p.resolve().relative_to(base).as_posix() or "."
        return value

    data["paths"] = {k: rel(v) for k, v in data["paths"].items()}
    data["workdir"] = rel(data["workdir"])
    atomic_write_text(path, "# written by `sepnms demo`: `sepnms <command> -c this file` runs on the demo's outputs\n"
                      + yaml.safe_dump(data, sort_keys=False))
    return path
