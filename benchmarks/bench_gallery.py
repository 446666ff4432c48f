"""Gallery page size and open time in Chromium for a RefCOCO-val-sized evaluation.

Synthesizes the input of ``sepnms.evaluation.gallery.write_gallery`` at the size of RefCOCO (UNC)
val - 10,834 expressions over 1,500 images (COCO-sized JPEGs, 640 x 480), 80 categories - for
the demo's five methods and their five ``M@mattnet_dets`` rows (ten methods over five fused
tables), each keeping ``--kept`` proposals on average (the variants a few more), with context
boxes and the second stage's pick and outcome for every method.  The boxes are random; only the
sizes matter here.  Then writes the page, and opens it ``--repeat`` times in Chromium (the Debian
package, through Playwright's ``executable_path``), printing: page size (bytes, and gzip'd for
reference), the time to write it, and per open the time until the first page of cards is built
(the script's ``data-ready`` mark), DOMContentLoaded and load (the first page's images
included), the JS heap, and the time of a filter change and of a page change.

    python benchmarks/bench_gallery.py [--expressions 10834] [--images 1500] [--repeat 3]

Not a test; everything is written to a temporary folder that is deleted.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASES = ["det", "refnms", "sepnms", "sepnms_clipctx", "sepnms_clipctx_clipfuse"]


def synthesize(root: Path, n_expr: int, n_images: int, kept: float, seed: int = 0):
    from PIL import Image

    from sepnms.evaluation.gallery import Card, MethodOutcome, MethodView

    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    images = []
    base = rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)
    for i in range(n_images):
        name = f"COCO_train2014_{i:012d}.jpg"
        Image.fromarray(np.roll(base, i, axis=1)).resize((640, 480)).save(img_dir / name, quality=80)
        images.append((f"../images/{name}", 640, 480))
    methods = [MethodView(b, b, True, b in ("det", "refnms", "sepnms")) for b in BASES]
    methods += [MethodView(f"{b}@mattnet_dets", b, True, False) for b in BASES]
    splits = ["val"]
    pools = []
    for _ in range(n_images):  # a candidate pool per image, shared by the methods (so their boxes overlap)
        xy = rng.uniform(0, 560, (100, 2)) * [1, 0.75]
        wh = rng.uniform(20, 300, (100, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [640, 480])], 1)
        pools.append((boxes, rng.integers(0, 80, 100)))
    cards = []
    for s in range(n_expr):
        im = int(rng.integers(n_images))
        boxes, cats = pools[im]
        outcomes = {}
        for b in BASES:
            k_own = int(np.clip(rng.poisson(kept), 1, 30))
            k_var = k_own + int(rng.integers(1, 6))
            order = rng.choice(100, k_var, replace=False)
            top = 1.8 if b.startswith("sepnms") else 1.0
            scores = np.sort(rng.uniform(0, top, k_var))[::-1]
            for name, k in ((b, k_own), (f"{b}@mattnet_dets", k_var)):
                pick = int(rng.integers(k))
                outcomes[name] = MethodOutcome(boxes[order[:k]], cats[order[:k]], scores[:k], bool(rng.random() < 0.9),
                                               pick, bool(rng.random() < 0.75))
        gt = boxes[int(rng.integers(100))]
        ctx = boxes[rng.choice(100, int(rng.integers(0, 4)), replace=False)]
        words = rng.choice(["man", "left", "red", "shirt", "the", "on", "woman", "right", "car", "white"], 6)
        cards.append(Card(100000 + s, "val", im, " ".join(words), gt, ctx, outcomes))
    categories = [f"category {c}" for c in range(80)]
    return cards, methods, splits, images, categories


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expressions", type=int, default=10834)
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--kept", type=float, default=9.0, help="mean kept proposals per method and expression")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = ap.parse_args()
    if not args.chromium:
        print("no chromium binary (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from sepnms.evaluation.gallery import write_gallery

    root = Path(tempfile.mkdtemp(prefix="bench_gallery_"))
    try:
        t0 = time.perf_counter()
        cards, methods, splits, images, categories = synthesize(root, args.expressions, args.images, args.kept)
        t_syn = time.perf_counter() - t0
        t0 = time.perf_counter()
        page = write_gallery(root / "gallery" / "index.html", cards, methods, splits, images, categories, {},
                             "bench", notes=["synthetic"])
        t_write = time.perf_counter() - t0
        raw = page.read_bytes()
        kept = np.mean([len(o.boxes) for c in cards for o in c.outcomes.values()])
        print(f"input: {len(cards)} expressions, {len(images)} images (640x480 JPEG, referenced, not copied), "
              f"{len(methods)} methods over {len({m.base for m in methods})} tables, {kept:.2f} kept boxes per "
              f"method and expression (synthesized in {t_syn:.1f} s)")
        print(f"page: {len(raw) / 2**20:.2f} MiB ({len(raw) / len(cards):.0f} bytes per expression; gzip "
              f"{len(gzip.compress(raw)) / 2**20:.2f} MiB), written in {t_write:.2f} s")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            print(f"browser: Chromium {browser.version}, headless, viewport 1280x900")
            rows = []
            for r in range(args.repeat):
                tab = browser.new_page(viewport={"width": 1280, "height": 900})
                t0 = time.perf_counter()
                tab.goto(page.as_uri(), wait_until="commit")
                tab.wait_for_selector("body[data-ready='1']", timeout=120000)
                t_ready = time.perf_counter() - t0
                tab.wait_for_load_state("load")
                t_load = time.perf_counter() - t0
                nav = tab.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                                   " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
                heap = tab.evaluate("performance.memory ? performance.memory.usedJSHeapSize : -1")
                t0 = time.perf_counter()
                tab.select_option("#f-m2", "h0")
                tab.wait_for_function("document.getElementById('count').textContent.startsWith('" +
                                      str(sum(1 for c in cards if not c.outcomes['sepnms'].hit)) + " ')")
                t_filter = time.perf_counter() - t0
                t0 = time.perf_counter()
                tab.click("#next")
                tab.wait_for_function("location.hash === '#page=2'")
                t_next = time.perf_counter() - t0
                cards_shown = len(tab.query_selector_all(".card"))
                rects = len(tab.query_selector_all(".card svg rect"))
                rows.append((t_ready, nav[0] / 1000, t_load, heap, t_filter, t_next))
                print(f"open {r + 1}: first page built {t_ready:.2f} s; DOMContentLoaded {nav[0] / 1000:.2f} s; "
                      f"load (first page's images) {t_load:.2f} s; JS heap {heap / 2**20:.0f} MiB; "
                      f"filter change {t_filter * 1000:.0f} ms; next page {t_next * 1000:.0f} ms "
                      f"({cards_shown} cards, {rects} SVG rects on the page)")
                tab.close()
            browser.close()
        med = [statistics.median(c) for c in zip(*rows)]
        print(f"median of {args.repeat}: first page built {med[0]:.2f} s, load {med[2]:.2f} s, "
              f"filter {med[4] * 1000:.0f} ms, next page {med[5] * 1000:.0f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
