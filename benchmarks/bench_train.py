"""train: expressions/s of the paper-size model on CPU at a tiny world, and the share of step time
spent waiting for data.

The world is generated with the paper's model dims; the training settings are the paper's (32
expressions x 32 RoIs per batch, ``train.num_workers`` = 2 loader workers doing RoI sampling and
pooling, sentence vectors cached by encode-text beforehand).  ``train()`` reports the time spent
waiting for the next batch (``data_time_s``) and in forward/backward/step (``compute_time_s``)
over ``--steps`` steps from a fresh start (the loader's start-up is in the first wait).

    python benchmarks/bench_train.py [--steps 3] [--batch-size 32] [--workers 2] [--images 24] [--device cuda --amp]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import Timer, build_workdir, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="training steps timed (default 3)")
    ap.add_argument("--batch-size", type=int, default=32, help="expressions per batch (paper: 32)")
    ap.add_argument("--workers", type=int, default=2, help="data-loader workers (paper preset: 2)")
    ap.add_argument("--images", type=int, default=24, help="images in the generated world (default 24)")
    ap.add_argument("--size", choices=["paper", "demo"], default="paper")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--amp", action="store_true", help="mixed precision (train.amp; CUDA only)")
    args = ap.parse_args()
    print(machine(args.device))
    train_set = ["train.rois_per_expression=32", "train.max_positive=21", "train.max_referent=4"] \
        if args.size == "paper" else []
    extra = train_set + [f"train.batch_size={args.batch_size}", f"train.num_workers={args.workers}",
                         f"train.max_steps={args.steps}", "train.epochs=1000", "train.eval_every=1000000",
                         "train.checkpoint_every=1000000", "train.val_max_expressions=8", f"device={args.device}",
                         *(["train.amp=true"] if args.amp else [])]
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        cfg, _ = build_workdir(Path(tmp), args.images, args.size, extra=extra)
        run(cfg, args)


def run(cfg, args) -> None:
    import torch

    from sepnms.data.workspace import Workspace
    from sepnms.engine.train import train

    t = cfg.train
    n_train = len(Workspace.open(cfg, need_text=False).refdb.split(t.train_split))
    print(f"{args.size} model on {cfg.device}{' (amp)' if t.amp else ''}; {n_train} training expressions; batch {t.batch_size} expressions x "
          f"{t.rois_per_expression} RoIs; {t.num_workers} loader workers; torch threads {torch.get_num_threads()}")
    with Timer() as wall:
        r = train(cfg, "sepnms", resume=False, progress=False)
    data, compute = r["data_time_s"], r["compute_time_s"]
    steps = r["steps"]
    print(f"{steps} steps: {steps * t.batch_size / (data + compute):.2f} expressions/s "
          f"({(data + compute) / steps:.2f} s per step: data wait {data:.2f} s, compute {compute:.2f} s in all); "
          f"data-loading share {data / (data + compute):.1%} (goal < 10%: "
          f"{'met' if data / (data + compute) < 0.10 else 'NOT met'}); whole train() call {wall.seconds:.1f} s "
          f"(incl. model build, final validation and checkpoint)")


if __name__ == "__main__":
    main()
