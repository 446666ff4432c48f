"""The world from pixels: CPU and wall seconds of writing a world, detecting it and measuring its
quality, plus the quality and statistics (benchmarks/RESULTS.md section 9).

    OMP_NUM_THREADS=1 python benchmarks/bench_world.py --seed 0 [--images 400] [--checkpoint FILE]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sepnms.config import load_config
from sepnms.engine.world import world_detect, world_quality, world_statistics
from sepnms.world import generate_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=None, help="default: the demo preset's world.n_images")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped world detector")
    args = ap.parse_args()
    over = ([f"world.n_images={args.images}"] if args.images else []) + (
        [f"world_detector.checkpoint={args.checkpoint}"] if args.checkpoint else [])
    cfg = load_config("demo", over)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "world"
        marks = [(time.perf_counter(), time.process_time())]
        summary = generate_world(out, cfg, args.seed, progress=False)
        marks.append((time.perf_counter(), time.process_time()))
        world_detect(out)
        marks.append((time.perf_counter(), time.process_time()))
        quality = world_quality(out)
        marks.append((time.perf_counter(), time.process_time()))
        stats = world_statistics(out)
    names = ("generate", "detect", "quality")
    print(json.dumps({"seed": args.seed, "n_images": summary["n_images"],
                      **{f"{n}_cpu_s": round(marks[i + 1][1] - marks[i][1], 1) for i, n in enumerate(names)},
                      **{f"{n}_wall_s": round(marks[i + 1][0] - marks[i][0], 1) for i, n in enumerate(names)}}))
    print(json.dumps({"box_ap50": quality["box_ap50"], "box_ap": quality["box_ap"],
                      **{k: v["accuracy"] for k, v in quality["probes"].items()}}))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
