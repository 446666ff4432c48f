"""``sepnms gallery``: a static HTML page over an evaluation (``<workdir>/gallery/index.html``).

Each expression of the evaluated splits gets a card whose outcomes are those of ``sepnms show``
(:class:`sepnms.engine.show.Evaluation`: kept = selected at evaluate's conf); its thumbnail is the
``show`` figure drawn small, written under ``gallery/thumbs/<split>/<sent_id>.png``, at most
``gallery.max_thumbnails`` of them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from sepnms.config import Config
from sepnms.data.refdb import load_refdb
from sepnms.engine.show import Evaluation, load_metrics, resolve_methods
from sepnms.evaluation.figures import method_colour
from sepnms.evaluation.gallery import Card, write_gallery

log = logging.getLogger(__name__)


def gallery_dir(cfg: Config) -> Path:
    return Path(cfg.workdir) / "gallery"


def gallery(cfg: Config, methods: Optional[list[str]] = None, splits: Optional[list[str]] = None,
            max_thumbnails: Optional[int] = -1, progress: bool = True) -> Path:
    """Write the gallery page and its thumbnails; returns the page's path.

    ``methods`` default ``gallery.methods`` or ``show.methods`` (those with fused tables);
    ``splits`` default ``gallery.splits`` or ``evaluate.splits``; ``max_thumbnails`` default
    ``gallery.max_thumbnails`` (None: every card).
    """
    from tqdm import tqdm

    from sepnms.engine.predict import category_names

    gc = cfg.gallery
    splits = splits or gc.splits or list(cfg.evaluate.splits)
    methods = resolve_methods(cfg, methods or gc.methods, splits)
    limit = gc.max_thumbnails if max_thumbnails == -1 else max_thumbnails
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    categories = category_names(cfg)
    evals = {s: Evaluation(cfg, methods, s, refdb, categories) for s in splits}
    out = gallery_dir(cfg)
    cards: list[tuple[Card, Evaluation, dict]] = []
    for s, ev in evals.items():
        for e in ev.expressions:
            o = ev.outcomes(e)
            cards.append((Card(int(e["sent_id"]), s, int(e["image_id"]), e["sent"], {m: o[m].hit for m in methods},
                               {m: int(len(o[m].kept)) for m in methods}), ev, o))
    todo = cards if limit is None else cards[:limit]
    for card, ev, o in tqdm(todo, desc="gallery thumbnails", disable=not progress):
        rel = Path("thumbs") / card.split / f"{card.sent_id}.png"
        ev.figure(ev.refdb.by_sent[card.sent_id], out / rel, gc.thumb_px, dpi=100, max_labels=3, outcomes=o,
                  title_px=0, fontsize=5.0)
        card.thumb = rel.as_posix()
    notes = [f"{cfg.dataset_tag}: {len(cards)} expressions, methods {', '.join(methods)}. Kept proposals are "
             "those evaluate counts (its conf per method and split); green dashed: ground truth; cyan dotted: "
             "context objects; thick box: top-1."]
    if limit is not None and len(cards) > limit:
        notes.append(f"Thumbnails for the first {limit} cards only (gallery.max_thumbnails).")
    width = len(methods) * gc.thumb_px + (len(methods) - 1) * 8 + 14
    return write_gallery(out / "index.html", [c for c, _, _ in cards], methods, splits, load_metrics(cfg),
                         {m: method_colour(m) for m in methods}, f"Sep-NMS gallery ({cfg.dataset_tag})",
                         gc.page_size, width, notes)
