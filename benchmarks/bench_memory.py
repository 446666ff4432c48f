"""Peak memory of ``sepnms propose`` on a world and on one four times larger.

``propose`` streams per image: it holds one image's head features (a cache of 2), the model, the
part buffer of at most ``propose.flush_every`` images, and - growing with the dataset - the
workspace (refdb, the sentence vector of every expression) and, while merging, an
O(expressions) index.  Each ``sepnms propose`` runs in its own subprocess; its peak RSS is the
child's ``ru_maxrss`` (``os.wait4``).  A third subprocess only loads the workspace and the model
and reads one image (the fixed cost), so that the growth can be told apart from the fixed part.

Printed: peak RSS of each run, the ratio large / small (goal < 1.3) and the peaks above the fixed
cost.

``--trend K`` adds a longer experiment on the small world: ``score_image`` over K images whose
candidate counts are drawn at random in 1..2x the world's largest pool (so that, as in a real
dataset, nearly every image has another count), printing the RSS every 32 images - once with the
head run over the RoIs in fixed chunks of ``propose.HEAD_CHUNK`` (what propose does) and once over
all M RoIs of an image at a time.  Each run is a fresh subprocess.

    python benchmarks/bench_memory.py [--images 40] [--factor 4] [--size demo|paper] [--trend 256]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import build_workdir, machine, save_random_checkpoint

SPLITS = ["train", "val", "testA", "testB"]

#: ``python -c PEAK <out file> <module or script.py> <args...>``: run it as __main__, then write
#: its VmHWM (KiB) to the out file
PEAK = r"""
import atexit, runpy, sys
out, target = sys.argv[1], sys.argv[2]


def record():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(out, "w").write(line.split()[1])  # KiB


atexit.register(record)
sys.argv = [target, *sys.argv[3:]]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""

FIXED = r"""
import sys
from sepnms.config import load_config
from sepnms.data.head_features import HeadCache
from sepnms.data.workspace import Workspace
from sepnms.engine.propose import load_trained
cfg = load_config(sys.argv[1], sys.argv[2:])
ws = Workspace.open(cfg)
model = load_trained(cfg, ws, "sepnms")
iid = ws.refdb.image_ids()[0]
HeadCache(cfg.need_path("head_feats_dir"), cfg.model.feat_channels, size=2).get(iid)
ws.candidates.get(iid)
"""


def peak_rss_mib(target: str, args: list[str], tmp: Path) -> float:
    """Run ``target`` (a module, or a ``.py`` script) with ``args`` in a subprocess; return its
    peak resident set size (MiB)."""
    out = tmp / "vmhwm.txt"
    out.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-c", PEAK, str(out), target, *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"{target} {' '.join(args[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return int(out.read_text()) / 1024


TREND = r"""
import sys
import numpy as np
import sepnms.engine.propose as P
from sepnms.config import load_config
from sepnms.data.candidates import Candidates
from sepnms.data.head_features import HeadCache
from sepnms.data.workspace import Workspace

n, chunk, config, overrides = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
P.HEAD_CHUNK = chunk
cfg = load_config(config, overrides)
ws = Workspace.open(cfg)
model = P.load_trained(cfg, ws, "sepnms")
heads = HeadCache(cfg.need_path("head_feats_dir"), cfg.model.feat_channels, size=2)
work = [(iid, e) for s in ("train", "val", "testA", "testB") for iid, e in ws.refdb.by_image(s).items()]
top = 2 * max(len(ws.candidates.get(iid)) for iid, _ in work)
rng = np.random.default_rng(0)
rss = []
for k in range(1, n + 1):
    iid, exprs = work[k % len(work)]
    head, scale = heads.get(iid)
    w, h = ws.refdb.image_size(iid)
    c = ws.candidates.get(iid)
    idx = rng.integers(0, len(c), int(rng.integers(1, top + 1)))
    pool = Candidates(c.image_id, c.box[idx], c.cls_idx[idx], c.det_score[idx], c.threshold)
    P.score_image(model, head, scale, pool, exprs, ws, float(w), float(h), cfg.device)
    if k % 32 == 0:
        rss.append(next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmRSS")))
print(top, " ".join(map(str, rss)))
"""


def trend(n: int, config: str, overrides: list[str]) -> None:
    """RSS every 32 of ``n`` images with random candidate counts, chunked head vs one pass."""
    from sepnms.engine.propose import HEAD_CHUNK

    for label, chunk in ((f"head in chunks of {HEAD_CHUNK} RoIs (propose)", HEAD_CHUNK),
                         ("head over all M RoIs at once", 1 << 30)):
        out = subprocess.run([sys.executable, "-c", TREND, str(n), str(chunk), config, *overrides],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"trend run failed:\n{out.stderr[-3000:]}")
        top, rss = out.stdout.split(maxsplit=1)
        print(f"trend, {n} images with 1..{top} candidates, {label}: RSS (MiB) every 32 images: {rss.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=40, help="images of the small world (default 40)")
    ap.add_argument("--factor", type=int, default=4, help="the large world has this many times more (default 4)")
    ap.add_argument("--size", choices=["demo", "paper"], default="demo", help="model dims (default demo)")
    ap.add_argument("--trend", type=int, default=0, metavar="K",
                    help="also the RSS trend over K images with random candidate counts (see above)")
    args = ap.parse_args()
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for n in (args.images, args.images * args.factor):
            cfg, overrides = build_workdir(Path(tmp) / f"w{n}", n, args.size)
            save_random_checkpoint(cfg)
            config = str(Path(tmp) / f"w{n}" / "world" / "config.yaml")
            sets = [a for o in overrides for a in ("--set", o)]
            script = Path(tmp) / "fixed_cost.py"
            script.write_text(FIXED)
            fixed = peak_rss_mib(str(script), [config, *overrides], Path(tmp))
            peak = peak_rss_mib("sepnms.cli", ["propose", "--config", config, *sets, "--quiet", "--model", "sepnms",
                                               "--splits", *SPLITS], Path(tmp))
            from sepnms.data.refdb import load_refdb

            n_expr = len(load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json").expressions)
            rows.append((n, n_expr, fixed, peak))
            if args.trend and n == args.images:
                trend(args.trend, config, overrides)
            print(f"world of {n} images ({n_expr} expressions): propose peak RSS {peak:.1f} MiB; "
                  f"fixed cost (imports, workspace, model, one image) {fixed:.1f} MiB; above it {peak - fixed:.1f} MiB")
    (n1, _, f1, p1), (n2, _, f2, p2) = rows
    print(f"peak RSS ratio {n2} / {n1} images: {p2 / p1:.3f} (goal < 1.3: {'met' if p2 / p1 < 1.3 else 'NOT met'}); "
          f"fixed-cost ratio {f2 / f1:.3f}; growth above the fixed cost {p1 - f1:.1f} -> {p2 - f2:.1f} MiB")


if __name__ == "__main__":
    main()
