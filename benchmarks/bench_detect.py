"""detect and features from images, at the paper's detector size (ResNet-101, short side 600).

1. ``sepnms detect`` (``engine.detect.detect``) over ``--images`` synthetic 640x480 JPEGs with a
   randomly initialised detector of the real size (536 keys, 1024-channel C4, 300 RoIs per image):
   images/s, process CPU seconds per image.  Random weights do the same arithmetic as the real
   checkpoint (the NMS sees other boxes, which costs little).
2. The C4 maps train / propose read: ``HeadCache`` from MAttNet-layout HDF5 files
   (``features.source: h5``) vs computed from the image files (``features.source: images``),
   maps/s of each and their ratio, and the HDF5 size per image (float32).

    python benchmarks/bench_detect.py [--images 3] [--device cpu|cuda] [--batch 1] [--amp none|bf16] [--workers 0]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import Timer, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3, help="640x480 images (default 3)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1, help="detector.batch_images")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--workers", type=int, default=0, help="detector.num_workers (image decoding)")
    args = ap.parse_args()
    print(machine(args.device))
    import torch

    from sepnms.config import load_config
    from sepnms.detection.checkpoint import expected_keys, save_detector
    from sepnms.detection.detector import MaskRCNNC4
    from sepnms.engine.detect import detect
    from sepnms.data.head_features import HeadCache
    from sepnms.io.head_feats import write_head

    with tempfile.TemporaryDirectory(prefix="bench_detect_") as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        (tmp / "images").mkdir()
        files = {}
        for i in range(args.images):
            # smooth random blobs (JPEG-compressible like a photo, not white noise)
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((640, 480), Image.BILINEAR)
            files[i + 1] = tmp / "images" / f"COCO_train2014_{i + 1:012d}.jpg"
            img.save(files[i + 1], quality=90)
        torch.manual_seed(0)
        cfg = load_config("paper", [f"workdir={tmp / 'work'}", f"device={args.device}",
                                    f"detector.batch_images={args.batch}", f"detector.amp={args.amp}",
                                    f"detector.num_workers={args.workers}",
                                    f"paths.detector_checkpoint={tmp / 'det.pth'}", f"paths.head_feats_dir={tmp / 'h5'}"])
        model = MaskRCNNC4(cfg.detector)
        save_detector(model, tmp / "det.pth", {k: torch.randn(s) * 0.01 for k, s in expected_keys(model).items()
                                                 if k.startswith("mask_")})
        # warm-up on one image (allocator, thread pools), then the timed run
        detect(cfg.model_copy(update={"workdir": tmp / "warm"}), tmp / "images", progress=False, shard=(0, args.images))
        cpu0 = time.process_time()
        with Timer() as t:
            detect(cfg, tmp / "images", progress=False)
        cpu = time.process_time() - cpu0
        print(f"detect: {args.images} images (640x480 -> 600x800) in {t.seconds:.1f} s: "
              f"{args.images / t.seconds:.3f} images/s, {cpu / args.images:.1f} CPU s/image")
        n = len(list((tmp / "work" / "detect").glob("*.pkl")))
        assert n == 2, "detect wrote no pickles"

        # features: HDF5 vs images
        from sepnms.data.head_features import ImageFeatures
        from sepnms.detection.features import c4_from_bgr
        from sepnms.io.images import read_bgr

        feats = ImageFeatures(cfg, files)
        for iid, p in files.items():
            head, info = c4_from_bgr(feats.model(), read_bgr(p), feats._device)
            write_head(tmp / "h5", iid, head, info)
        size_mb = np.mean([(tmp / "h5" / f"{iid}.h5").stat().st_size for iid in files]) / 2**20
        h5 = HeadCache(tmp / "h5", cfg.model.feat_channels, size=1)
        im = HeadCache(None, cfg.model.feat_channels, size=1, compute=feats)
        rates = {}
        for name, cache in (("h5", h5), ("images", im)):
            with Timer() as t:
                for iid in files:
                    cache._cache.clear()
                    cache.get(iid)
            rates[name] = len(files) / t.seconds
        print(f"C4 maps: h5 read {rates['h5']:.1f} maps/s, from images {rates['images']:.2f} maps/s, "
              f"ratio h5/images {rates['h5'] / rates['images']:.0f}x; one HDF5 map {size_mb:.1f} MiB (float32)")


if __name__ == "__main__":
    main()
