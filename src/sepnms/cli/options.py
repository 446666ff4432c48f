"""The arguments every subcommand shares: the one-line-error parser, bounded integers, the config options
(``--config``, ``--set``, ``--quiet``, ``--device``) and the config they resolve to."""
from __future__ import annotations

import argparse
from typing import Callable, Protocol


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``sepnms <command>: error: ...``, exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


class AddCommand(Protocol):
    """``add(name, fn, help, default_cfg)``: a subcommand parser with the config options, calling ``fn(args)``."""

    def __call__(self, name: str, fn: Callable, help_: str, default_cfg: str = "paper") -> argparse.ArgumentParser: ...


def int_at_least(lo: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``lo`` (the bound is declared with the argument, like config.py's)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, not {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, not {value}")
        return value

    parse.__name__ = f"integer >= {lo}"
    return parse


def config_args(p: argparse.ArgumentParser, default: str = "paper") -> None:
    p.add_argument("--config", "-c", default=default,
                   help=f"a config YAML file or a preset name (paper, demo); default {default}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="shortcut for --set device=DEVICE (cpu, cuda, cuda:1); under torchrun, cuda means "
                        "cuda:<LOCAL_RANK>")


def command_config(args):
    """The config of the command, its device resolved for this process (see sepnms.distributed)."""
    from sepnms.config import load_config
    from sepnms.distributed import resolve_device

    cfg = load_config(args.config, args.overrides)
    return cfg.model_copy(update={"device": resolve_device(cfg.device)})
