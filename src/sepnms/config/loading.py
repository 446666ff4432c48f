"""Loading a config: a preset name or a YAML file, merged over its preset, ``--set key=value``
overrides applied, validated into a ``Config`` (a refusal is one line naming the key, with the
nearest valid key suggested); and writing one back (``save_config``).

Relative paths in a config file are resolved against the directory of that file, so a world
directory (which carries its own ``config.yaml``) can be moved as a whole."""
from __future__ import annotations

import difflib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from sepnms.config.root import Config
from sepnms.errors import ConfigError


PRESETS = ("paper", "demo")


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    text = resources.files("sepnms.presets").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        full = f"{prefix}{name}"
        keys.append(full)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, full + "."))
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _valid_keys(Config), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _origin(loc: str, overrides: list[str]) -> str:
    """`` (from --set KEY=VALUE)`` when the offending key came from an override, else ``''``."""
    for item in reversed(overrides):  # the last override of a key is the one in force
        key = item.split("=", 1)[0].strip()
        if loc and (key == loc or key.startswith(loc + ".")):
            return f" (from --set {item})"
    return ""


def _format_validation_error(err: ValidationError, source: str, overrides: Optional[list[str]] = None) -> str:
    """One line: ``invalid config (<source>): <problem>[; <problem> ...]``."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        origin = _origin(loc, overrides or [])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key {loc!r}{_suggest(loc)}{origin}")
        else:
            problems.append(f"{loc or '<root>'}{origin}: {e['msg']}")
    return f"invalid config ({source}): " + "; ".join(problems)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict."""
    data = json.loads(json.dumps(data, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _parse_value(value)
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative paths of a config file absolute against ``base`` (its folder)."""
    paths = data.get("paths") or {}
    for key, value in list(paths.items()):
        if isinstance(value, str) and value and not Path(value).is_absolute():
            paths[key] = str((base / value).resolve())
    wd = data.get("workdir")
    if isinstance(wd, str) and not Path(wd).is_absolute():
        data["workdir"] = str((base / wd).resolve())


def load_config(
    source: str | Path | None = None,
    overrides: Optional[list[str]] = None,
) -> Config:
    """Load a config from a preset name or a YAML path, then apply overrides.

    A YAML file may name ``preset:``; its values are merged over that preset.
    """
    overrides = overrides or []
    src = str(source) if source is not None else "paper"
    if src in PRESETS:
        data = preset_dict(src)
        data["preset"] = src
    else:
        path = Path(src)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (or use a preset: {list(PRESETS)})")
        try:
            user = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                              f"{exc.start}): not a YAML config") from None
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())  # one line
            raise ConfigError(f"config file {path} is not valid YAML: {detail}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        preset = user.get("preset", "paper")
        data = _deep_merge(preset_dict(preset), user)
        _resolve_paths(data, path.resolve().parent)
    data = apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, src, overrides)) from None


def save_config(cfg: Config, path: Path) -> None:
    from sepnms.io.atomic import atomic_write_text

    atomic_write_text(path, cfg.to_yaml())
