"""propose: shared per-image path vs the per-expression reference, at the paper's model size.

The shared path runs the layer4 head once per image over its candidates and scores all
expressions of the image in one batch; the reference recomputes the head for every expression
(as the released code does).  Both run on the same world (generated with the paper's model dims:
1024-channel C4 features, 2048-d head, 512-d embeddings, 768-d text vectors) with the same
randomly initialised model, on CPU.  Printed: expressions/s of each, their ratio, expressions per
image (the ideal ratio when the head dominates), the goal (ratio >= 0.8 x expressions per image),
and the largest score difference between the two paths.

Two measurements: ``scoring`` times the per-image function alone (``score_image`` vs
``per_expression_scores``, head features already read); ``propose()`` times the whole command
(workspace and checkpoint loading, part files, merge) for every split.

    python benchmarks/bench_propose.py [--images 10] [--size paper|demo] [--repeat 2] [--device cuda]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import Timer, build_workdir, machine, save_random_checkpoint

SPLITS = ["train", "val", "testA", "testB"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10, help="images in the generated world (default 10)")
    ap.add_argument("--size", choices=["paper", "demo"], default="paper", help="model dims (default paper)")
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions of the scoring loop (best kept)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    print(machine(args.device))
    with tempfile.TemporaryDirectory(prefix="bench_propose_") as tmp:
        cfg, _ = build_workdir(Path(tmp), args.images, args.size, extra=[f"device={args.device}"])
        save_random_checkpoint(cfg)
        run(cfg, args)


def run(cfg, args) -> None:
    import torch

    from sepnms.data.head_features import HeadCache

    from sepnms.data.workspace import Workspace
    from sepnms.engine.propose import load_trained, per_expression_scores, propose, score_image
    from sepnms.io.proposals import read_proposals

    ws = Workspace.open(cfg)
    model = load_trained(cfg, ws, "sepnms")
    heads = HeadCache.for_config(cfg, ws.refdb, size=1 << 20)  # features.source: h5 or images
    work = [(iid, exprs) for s in SPLITS for iid, exprs in ws.refdb.by_image(s).items()]
    n_expr = sum(len(e) for _, e in work)
    n_cand = [len(ws.candidates.get(iid)) for iid, _ in work]
    per_image = n_expr / len(work)
    print(f"world: {len(work)} images, {n_expr} expressions ({per_image:.2f} per image), "
          f"{np.mean(n_cand):.1f} candidates per image; model {cfg.model.feat_channels}->{cfg.model.head_out_channels} "
          f"head, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters; torch threads "
          f"{torch.get_num_threads()}")
    for iid, _ in work:
        heads.get(iid)  # read once: the scoring timings exclude HDF5 reads

    def scoring(fn):
        out = []
        for iid, exprs in work:
            head, scale = heads.get(iid)
            w, h = ws.refdb.image_size(iid)
            out.extend(fn(model, head, scale, ws.candidates.get(iid), exprs, ws, float(w), float(h), cfg.device))
        return out

    times, results = {}, {}
    for name, fn in (("shared", score_image), ("reference", per_expression_scores)):
        best = float("inf")
        for _ in range(args.repeat):
            with Timer() as t:
                results[name] = scoring(fn)
            best = min(best, t.seconds)
        times[name] = best
    diff = max(float(np.abs(a.scores[c] - b.scores[c]).max())
               for a, b in zip(results["shared"], results["reference"]) for c in a.scores)
    _report("scoring", n_expr, times, per_image)
    print(f"  max |shared - reference| score difference: {diff:.2e} (float32)")

    e2e = {}
    for name, reference in (("shared", False), ("reference", True)):
        with Timer() as t:
            paths = propose(cfg, "sepnms", SPLITS, progress=False, reference=reference)
        e2e[name] = t.seconds
        results[name] = [e for s in SPLITS for e in read_proposals(paths[s])]
    diff = max(float(np.abs(a.scores[c] - b.scores[c]).max())
               for a, b in zip(results["shared"], results["reference"]) for c in a.scores)
    _report("propose()", n_expr, e2e, per_image)
    print(f"  max |shared - reference| score difference in the written tables: {diff:.2e}")


def _report(what: str, n_expr: int, seconds: dict[str, float], per_image: float) -> None:
    rate = {k: n_expr / v for k, v in seconds.items()}
    ratio = rate["shared"] / rate["reference"]
    goal = 0.8 * per_image
    print(f"{what}: shared {rate['shared']:.2f} expr/s ({seconds['shared']:.2f} s), reference "
          f"{rate['reference']:.2f} expr/s ({seconds['reference']:.2f} s); ratio {ratio:.2f}x "
          f"(goal >= 0.8 x {per_image:.2f} = {goal:.2f}: {'met' if ratio >= goal else 'NOT met'})")


if __name__ == "__main__":
    main()
