"""ground: sentences/s of the second stage (MAttNet) at paper size on CPU, training and evaluation.

A world is generated with the paper's model dims (1024-channel C4 maps, layer4 1024->512->2048)
and trained with the paper's ``grounding`` section (512-d language, bi-LSTM 512, 15 images per
batch, 3 sentences per ref, one visual and one language negative per sentence) for ``--steps``
iterations; the frozen layer4 is randomly initialised (no detector checkpoint offline; speed does
not depend on the weights).  ``train_grounding`` reports the time spent building batches (head
maps read, crops pooled, layer4 run for images not yet cached, negatives sampled) and in
forward/backward/step.  Evaluation scores every validation sentence against its image's
annotated objects (the ``gt`` setting) with the head map of each image read once.

    python benchmarks/bench_ground.py [--steps 3] [--images 30] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import Timer, machine, model_overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="training iterations timed (default 3)")
    ap.add_argument("--images", type=int, default=30, help="images in the generated world (default 30)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    print(machine(args.device))
    from sepnms.config import load_config
    from sepnms.engine.world import build_world

    with tempfile.TemporaryDirectory(prefix="bench_ground_") as tmp:
        root = Path(tmp)
        model = model_overrides("paper")
        build_world(root / "world", load_config("demo", model + [f"world.n_images={args.images}"]), 0, progress=False)
        paper = load_config("paper").grounding.model_dump(mode="json")
        grounding = [f"grounding.{k}={json.dumps(v)}" for k, v in paper.items()]
        cfg = load_config(root / "world" / "config.yaml", model + grounding + [
            f"workdir={root / 'work'}", "grounding.layer4_source=random", f"grounding.max_iters={args.steps}",
            "grounding.eval_every=1000000", "grounding.checkpoint_every=1000000", "grounding.val_max_sentences=1",
            f"device={args.device}"])
        run(cfg)


def run(cfg) -> None:
    import torch

    from sepnms.engine.ground.train import load_trained, train_grounding
    from sepnms.grounding.candidates import gt_sets, predict
    from sepnms.grounding.data import GroundingData, VisualFeatures
    from sepnms.grounding.mattnet import count_parameters

    g = cfg.grounding
    with Timer() as wall:
        r = train_grounding(cfg, resume=False, progress=False)
    net, vocab = load_trained(cfg, "last")
    data, compute = r["data_time_s"], r["compute_time_s"]
    sents = r["train_sentences_this_call"]
    print(f"paper-size MAttNet ({count_parameters(net) / 1e6:.2f} M trainable parameters, vocabulary {len(vocab)}) on "
          f"{cfg.device}; torch threads {torch.get_num_threads()}; batch {g.batch_images} images x {g.seq_per_ref} "
          f"sentences per ref")
    print(f"train: {r['iterations']} iterations, {sents} positive sentences ({sents / r['iterations']:.1f} per "
          f"iteration, x3 rows with the negatives): {sents / (data + compute):.2f} sentences/s "
          f"(batch building {data:.2f} s incl. layer4 on new images, forward/backward/step {compute:.2f} s); "
          f"head maps read {r['head_reads']} times for {r['iterations'] * g.batch_images} image slots; whole call "
          f"{wall.seconds:.1f} s")
    gdata = GroundingData.open(cfg)
    sets = gt_sets(gdata, g.val_split)
    feats = VisualFeatures(cfg, gdata, size=0)
    with Timer() as t:
        predict(net, vocab, feats, gdata, sets, cfg)
    n_img = len({s.image_id for s in sets.values()})
    print(f"eval (gt boxes, {g.val_split}): {len(sets)} sentences of {n_img} images, "
          f"{sum(len(s.boxes) for s in sets.values()) / len(sets):.1f} candidates each: {len(sets) / t.seconds:.2f} "
          f"sentences/s ({t.seconds:.2f} s; head maps read {feats.head_reads} times)")


if __name__ == "__main__":
    main()
