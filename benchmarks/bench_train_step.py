"""Where the demo's training time goes: CPU seconds per step for data (RoI sampling + pooling),
the whole model step (forward, backward, Adam) and the shared head alone, at two batch sizes.

CPU seconds (``resource.getrusage``) count the work whatever else runs on the machine; run it with
one intra-op thread (the default here, ``--threads``) so that idle spinning of a second thread on
a busy machine is not counted as work.  Demo model dims and training settings.

    python benchmarks/bench_train_step.py [--images 60] [--steps 6] [--threads 1]
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


def measure(cfg, batch_size: int, steps: int) -> dict[str, float]:
    import torch

    from sepnms.data.training_set import TrainingSet, collate
    from sepnms.data.workspace import Workspace
    from sepnms.engine.train import RoIForward, batch_loss, forward_batch
    from sepnms.models.sepnms_model import build_model

    torch.manual_seed(0)
    t = cfg.train
    ws = Workspace.open(cfg, need_text=True, need_ctx=True)
    model = build_model(cfg.model, torch.from_numpy(ws.word_vectors), "sepnms", None)
    opt = torch.optim.Adam(model.param_groups(t.lr_head, t.lr_new, t.lr_gru, t.weight_decay))
    ds = TrainingSet(ws, t.train_split)
    n = len(ds)
    c = cpu()
    batches = [collate([ds[(k * batch_size + i) % n] for i in range(batch_size)]) for k in range(steps)]
    data = (cpu() - c) / steps
    step = RoIForward(model).train()
    c = cpu()
    for b in batches:
        ref, ctx = forward_batch(step, b, "cpu")
        loss = batch_loss(ref, ctx, b, "cpu")
        opt.zero_grad()
        loss.backward()
        opt.step()
    compute = (cpu() - c) / steps
    c = cpu()
    for b in batches:
        model.head(b["pooled"].flatten(0, 1)).sum().backward()
    head = (cpu() - c) / steps
    return {"data": data, "compute": compute, "head": head, "per_expression": (data + compute) / batch_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=60, help="images in the generated world (default 60)")
    ap.add_argument("--steps", type=int, default=6, help="steps measured per batch size (default 6)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
        cfg, _ = build_workdir(Path(tmp), args.images, "demo")
        rois = cfg.train.rois_per_expression
        res = {b: measure(cfg, b, args.steps) for b in (16, 32)}
    for b, r in res.items():
        print(f"batch {b} x {rois} RoIs: data {r['data']:.3f} CPU s/step, model step {r['compute']:.3f} "
              f"(shared head fwd+bwd {r['head']:.3f} = {r['head'] / r['compute']:.0%} of it), "
              f"data = {r['data'] / (r['data'] + r['compute']):.0%} of the step; "
              f"{r['per_expression'] * 1000:.1f} CPU ms per expression")
    print(f"per-expression cost, batch 32 / batch 16: {res[32]['per_expression'] / res[16]['per_expression']:.2f}x")


if __name__ == "__main__":
    main()
