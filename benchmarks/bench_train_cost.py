"""What issue 18 changed in the cost of a demo training step: the data of an expression in its first
epoch vs later epochs (its candidate pool and RoI labels kept, every C4 map cached), and the shared
head's forward + backward in contiguous vs channels-last memory format.

CPU seconds (``resource.getrusage``), one intra-op thread by default (``--threads``), demo dims.

    python benchmarks/bench_train_cost.py [--images 160] [--repeat 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

from _common import build_workdir, machine


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=160, help="images in the generated world (default 160)")
    ap.add_argument("--repeat", type=int, default=10, help="head passes measured per format (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args()
    import torch

    from sepnms.data.training_set import TrainingSet
    from sepnms.data.workspace import Workspace
    from sepnms.models.sepnms_model import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench_train_cost_") as tmp:
        cfg, _ = build_workdir(Path(tmp), args.images, "demo")
        ws = Workspace.open(cfg, need_text=True, need_ctx=True)
        ds = TrainingSet(ws, cfg.train.train_split)
        n = len(ds)
        per_epoch = []
        for epoch in range(2):
            c = cpu()
            for i in range(n):
                ds[epoch * n + i]
            per_epoch.append((cpu() - c) / n)
        print(f"data of one expression ({n} training expressions, {cfg.train.rois_per_expression} RoIs, "
              f"features.cache_images={cfg.features.cache_images}): epoch 0 {1000 * per_epoch[0]:.2f} CPU ms, "
              f"epoch 1 {1000 * per_epoch[1]:.2f} CPU ms")
        model = build_model(cfg.model, torch.from_numpy(ws.word_vectors), "sepnms", None)
        head = model.head.train()
        x = torch.randn(cfg.train.batch_size * cfg.train.rois_per_expression, cfg.model.feat_channels,
                        cfg.model.pool_size, cfg.model.pool_size)
        res = {}
        for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
            head.to(memory_format=fmt)
            xi = x.contiguous(memory_format=fmt)
            for _ in range(2):
                head(xi).sum().backward()
            c = cpu()
            for _ in range(args.repeat):
                head(xi).sum().backward()
            res[name] = (cpu() - c) / args.repeat
        print(f"head forward+backward of {x.shape[0]} RoIs: contiguous {1000 * res['contiguous']:.1f} CPU ms, "
              f"channels_last {1000 * res['channels_last']:.1f} CPU ms "
              f"({res['channels_last'] / res['contiguous']:.2f}x)")


if __name__ == "__main__":
    main()
