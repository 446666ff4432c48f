"""The ``sepnms`` command: one subcommand per pipeline stage.  It only parses and calls the library.

This module holds the parser's skeleton (the subcommands in the order ``sepnms --help`` lists them) and
:func:`main` (one-line errors, exit 2); the subcommands live with their stage: :mod:`sepnms.cli.first_stage`
(detect ... evaluate, merge), :mod:`sepnms.cli.ground` (the second stage), :mod:`sepnms.cli.world` (world,
demo), :mod:`sepnms.cli.presentation` (predict, show, gallery) and :mod:`sepnms.cli.interop`
(import-weights, export).  The options they share are in :mod:`sepnms.cli.options`,
:mod:`sepnms.cli.shards` and :mod:`sepnms.cli.output`."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from typing import Callable, Optional

from sepnms.cli import first_stage, ground, interop, presentation, world
from sepnms.cli.options import AddCommand, Parser, command_config, config_args
from sepnms.errors import SepNMSError, StorageError


def cmd_config(args) -> None:
    print(command_config(args).to_yaml())


def add_config(add: AddCommand) -> None:
    add("config", cmd_config, "print the resolved config")


#: every subcommand's parser, in the order of ``sepnms --help``
SUBCOMMANDS = (
    world.add_world, first_stage.add_stats, first_stage.add_prepare, first_stage.add_encode_text,
    first_stage.add_clip_finetune, first_stage.add_clip_ctx, first_stage.add_train, interop.add_import_weights,
    first_stage.add_propose, first_stage.add_detect, first_stage.add_merge, first_stage.add_fuse,
    first_stage.add_evaluate, interop.add_export, ground.add_downstream, world.add_demo, presentation.add_predict,
    presentation.add_show, presentation.add_gallery, ground.add_ground, add_config,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sepnms",
        description="Sep-NMS: expression-aware proposals for two-stage referring expression comprehension.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def add(name: str, fn: Callable, help_: str, default_cfg: str = "paper") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        config_args(p, default_cfg)
        p.set_defaults(func=fn)
        return p

    for add_subcommand in SUBCOMMANDS:
        add_subcommand(add)
    return parser


_ALLOC_FAILED = re.compile(r"can't allocate memory|could not create a primitive|std::bad_alloc", re.IGNORECASE)


def _stage(args) -> str:
    """``ground train``-style name of the running stage, for one-line resource errors."""
    action = getattr(args, "action", None)
    return f"`sepnms {args.command}{' ' + action if action else ''}`"


def _needed(text: str) -> str:
    """``it needed 1.6 GiB; `` from an allocator message naming the bytes, else ``''``."""
    found = re.search(r"allocate (\d+) bytes", text)
    if not found:
        return ""
    n = float(found.group(1))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"it needed {n:.1f} {unit}; "
        n /= 1024
    return ""


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, one line from Parser.error)
        return int(exc.code or 0)
    if getattr(args, "device", None):
        args.overrides = [*args.overrides, f"device={args.device}"]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        try:
            args.func(args)
            sys.stdout.flush()
        except OSError as exc:  # disk full, read-only or forbidden work directory: one line, like bad input
            storage = None if isinstance(exc, BrokenPipeError) else StorageError.from_os_error(exc)
            if storage is None:
                raise
            raise storage from exc
        except MemoryError:
            raise SepNMSError(f"out of memory in {_stage(args)} (an input larger than expected, or too large a batch: "
                              "lower train.batch_size / text.batch_size, or use a machine with more memory)") from None
        except RuntimeError as exc:
            text = str(exc)
            if "out of memory" in text.lower():  # torch.OutOfMemoryError (CUDA) and allocator failures
                raise SepNMSError(f"out of memory in {_stage(args)} on {getattr(args, 'device', None) or 'the device'}: "
                                  f"{text.splitlines()[0][:160]} (lower the batch size)") from None
            if _ALLOC_FAILED.search(text):  # the CPU allocator, oneDNN
                raise SepNMSError(f"out of memory in {_stage(args)}: {_needed(text)}could not allocate "
                                  f"({' '.join(text.split())[:160]}); lower the batch size or the image size "
                                  "(detector.test_scale, detector.batch_images), or use a machine with more "
                                  "memory") from None
            if "file write failed" in text or "No space left" in text:  # torch.save on a full disk
                raise SepNMSError(f"write failed ({text.splitlines()[0][:160]}): is the disk full?") from None
            raise
    except SepNMSError as exc:
        if args.verbose:
            raise
        print(f"sepnms {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`sepnms config | head`): not an error of ours; send what is left
        # of stdout to /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        return 0  # the reader had what it wanted
    except KeyboardInterrupt:
        print(f"sepnms {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
