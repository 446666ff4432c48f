"""``sepnms world`` (write the embedded synthetic world, train its detector) and ``sepnms demo`` (the whole
method on that world)."""
from __future__ import annotations

import json
from pathlib import Path

from sepnms.cli.options import AddCommand, int_at_least
from sepnms.cli.output import print_json
from sepnms.errors import SepNMSError


def cmd_world(args) -> None:
    from sepnms.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.action == "train-detector":
        from sepnms.world.train_detector import train_world_detector

        def show(row: dict) -> None:
            if not args.quiet:
                print(json.dumps(row), flush=True)

        result = train_world_detector(cfg, Path(args.out), args.seed, args.steps,
                                      Path(args.log) if args.log else None, on_log=show,
                                      init=Path(args.init) if args.init else None)
        result.pop("history")
        print_json(result)
        return
    from sepnms.engine.world import build_world

    summary = build_world(Path(args.out), cfg, args.seed, progress=not args.quiet)
    print_json(summary)
    print(f"world written to {args.out}; next: sepnms prepare --config {Path(args.out) / 'config.yaml'}")


def cmd_demo(args) -> None:
    from sepnms.engine.demo import run_demo
    from sepnms.io.atomic import check_output_folder

    if args.config != "demo":  # the demo builds its world and configs from the demo preset; --set still applies
        raise SepNMSError(f"demo runs the demo preset on its embedded world; --config {args.config} would be ignored "
                          "(change values with --set KEY=VALUE, or run the stages one by one with your config)")
    check_output_folder(Path(args.workdir), "--workdir")
    metrics = run_demo(Path(args.workdir), args.seed, args.overrides, progress=not args.quiet)
    print_json(metrics)
    print(f"report: {Path(args.workdir) / 'report.md'}")


def add_world(add: AddCommand) -> None:
    p = add("world", cmd_world, "write the embedded synthetic world (real formats, detector output from its "
            "pixels) and its config.yaml; `world train-detector` trains the world's detector", "demo")
    p.add_argument("action", nargs="?", choices=["train-detector"],
                   help="train-detector: train the world's detector on generated scenes, write it to --out")
    p.add_argument("--out", required=True, help="output folder (train-detector: the checkpoint file)")
    p.add_argument("--seed", type=int_at_least(0), default=None, help="random seed (default: the config's seed)")
    p.add_argument("--steps", type=int_at_least(1), default=None, help="train-detector: steps (default world_detector.steps)")
    p.add_argument("--init", default=None, help="train-detector: continue from this checkpoint (new scenes)")
    p.add_argument("--log", default=None, help="train-detector: append the training figures (JSON lines) to this file")


def add_demo(add: AddCommand) -> None:
    p = add("demo", cmd_demo, "run the whole method on the embedded world and write report.md", "demo")
    p.add_argument("--workdir", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
