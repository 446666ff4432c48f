"""CLIP-dagger scoring (clip-ctx; the same routine scores proposal crops in propose): crop
embeddings computed once per image vs re-encoding the crops for every expression.

``label_image`` encodes the N object crops of an image once and all its S expressions in one
batch; the reference calls it once per expression (crops re-cut and re-encoded S times), which
is what a per-expression loop costs.  Printed: expressions/s of both, the ratio, expressions per
image (the ideal ratio when the image tower dominates) and the largest probability difference.

The CLIP is built with random weights (``pretrained=None``; no checkpoint can be downloaded here):
``--arch RN101`` (default) is the paper's backbone size (224 px crops), ``--arch tiny`` the demo's.

    python benchmarks/bench_clip.py [--arch RN101|tiny] [--images 4] [--device cuda]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import Timer, build_workdir, machine

RN101 = ["clip.arch=RN101", "clip.embed_dim=512", "clip.layer3_channels=1024", "clip.image_size=224"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["RN101", "tiny"], default="RN101")
    ap.add_argument("--images", type=int, default=4, help="images scored (default 4)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    print(machine(args.device))
    with tempfile.TemporaryDirectory(prefix="bench_clip_") as tmp:
        cfg, _ = build_workdir(Path(tmp), max(args.images, 4), "demo", encode=False,
                               extra=(RN101 if args.arch == "RN101" else []) + [f"device={args.device}"])
        run(cfg, args)


def run(cfg, args) -> None:
    from sepnms.clip.labeller import _open_image, label_image
    from sepnms.clip.model import build_dagger
    from sepnms.data.refdb import load_refer
    from sepnms.io.refer import xywh_to_xyxy

    dagger = build_dagger(cfg, seed=0, checkpoint=None).to(cfg.device).eval()
    refer = load_refer(cfg)
    images = []
    for iid in sorted(refer.refs_by_image)[: args.images]:
        anns = refer.anns_by_image.get(iid, [])
        sents = [s["sent"] for ref in refer.refs_by_image[iid] for s in ref["sentences"]]
        boxes = np.asarray([xywh_to_xyxy(a["bbox"]) for a in anns], dtype=np.float64)
        images.append((_open_image(cfg.images_dir() / refer.img_by_id[iid]["file_name"]), boxes, sents))
    n_expr = sum(len(s) for _, _, s in images)
    n_crops = sum(len(b) for _, b, _ in images)
    c = cfg.clip
    print(f"CLIP {c.arch} on {cfg.device} (random weights, {sum(p.numel() for p in dagger.parameters()) / 1e6:.1f} M parameters, "
          f"{c.image_size} px crops); {len(images)} images, {n_crops / len(images):.2f} object crops and "
          f"{n_expr / len(images):.2f} expressions per image; torch threads {torch.get_num_threads()}")

    def cached():
        return [label_image(dagger, im, boxes, sents, c.score_scale, c.image_size)[1] for im, boxes, sents in images]

    def per_expression():
        return [torch.cat([label_image(dagger, im, boxes, [s], c.score_scale, c.image_size)[1] for s in sents])
                for im, boxes, sents in images]

    cached()  # warm-up (first-call kernel selection)
    with Timer() as t_cached:
        a = cached()
    with Timer() as t_ref:
        b = per_expression()
    diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
    rate_c, rate_r = n_expr / t_cached.seconds, n_expr / t_ref.seconds
    per_image = n_expr / len(images)
    print(f"cached crops: {rate_c:.2f} expr/s ({t_cached.seconds:.2f} s); re-encoded per expression: "
          f"{rate_r:.2f} expr/s ({t_ref.seconds:.2f} s); ratio {rate_c / rate_r:.2f}x "
          f"({per_image:.2f} expressions per image)")
    print(f"  max |cached - per-expression| probability difference: {diff:.2e}")


if __name__ == "__main__":
    main()
