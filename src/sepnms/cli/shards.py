"""Part-file stages (detect, propose, encode-text, clip-ctx): the ``--shard I/N`` and ``--flush-every``
options, and running a stage over one shard, the torchrun ranks or everything."""
from __future__ import annotations

import argparse
import logging
from typing import Any, Optional

from sepnms.cli.options import int_at_least
from sepnms.errors import SepNMSError

log = logging.getLogger("sepnms")


def shard_args(p: argparse.ArgumentParser, flush_default: Optional[int]) -> None:
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="do shard I of N (every N-th image) only; join the parts with `sepnms merge` once every "
                        "shard is done.  Under torchrun the ranks split the images and rank 0 merges by itself")
    p.add_argument("--flush-every", type=int_at_least(1), default=flush_default, metavar="IMAGES",
                   help="write a part file every this many images (resume point after an interruption)"
                        + (f"; default {flush_default}" if flush_default else ""))


def parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``i/n`` -> (i, n); None when not given."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SepNMSError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if not 0 <= i < n:
        raise SepNMSError(f"--shard {text}: need 0 <= i < n")
    return i, n


def flush_kwargs(args) -> dict[str, int]:
    """``{"flush_every": N}`` from ``--flush-every N``; empty when not given."""
    if args.flush_every is None:
        return {}
    if args.flush_every < 1:
        raise SepNMSError(f"--flush-every must be >= 1, not {args.flush_every}")
    return {"flush_every": args.flush_every}


def merge_command(args, what: str, extra: tuple[str, ...] = ()) -> str:
    """The ``sepnms merge`` command line that joins this run's parts: the same config, overrides
    and stage arguments (``--images D`` of detect), quoted for the shell."""
    import shlex

    words = ["sepnms", "merge", what, "--config", args.config, *extra]
    for item in args.overrides:
        words += ["--set", item]
    return " ".join(shlex.quote(str(w)) for w in words)


def run_sharded_stage(args, cfg, run, merge, what: str, extra: tuple[str, ...] = ()) -> Any:
    """Run a part-file stage over ``--shard`` / torchrun ranks / everything (sepnms.distributed)."""
    from sepnms.distributed import process_group, run_sharded

    shard = parse_shard(args.shard)
    with process_group(cfg.device):
        result = run_sharded(run, merge, shard)
    if shard is not None and shard[1] > 1:
        log.info("shard %d/%d of %s done; once every shard is done: %s", shard[0], shard[1], what,
                 merge_command(args, what, extra))
    return result
