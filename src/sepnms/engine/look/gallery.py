"""``sepnms gallery``: a static HTML page over an evaluation (``<workdir>/gallery/index.html``).

Each expression of the evaluated splits gets a card whose outcomes are those of ``sepnms show``
(:class:`sepnms.evaluation.outcomes.Evaluation`: kept = selected at evaluate's conf, the second stage's
answer where ``sepnms ground eval`` ran).  The page draws the boxes in the browser over the image
files themselves, referenced by their path relative to the page (nothing is copied or rendered
here); a card links to its ``show`` figure when ``<workdir>/show/<split>/<sent_id>.png`` exists.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import numpy as np

from sepnms.config import Config
from sepnms.data.images import image_file
from sepnms.data.refdb import load_refdb
from sepnms.workdir import ground_dir
from sepnms.evaluation.gallery import Card, MethodOutcome, MethodView, write_gallery
from sepnms.evaluation.outcomes import (Evaluation, category_names, evaluated_methods, load_metrics, resolve_methods,
                                        second_stage)
from sepnms.evaluation.palette import base_method

log = logging.getLogger(__name__)


def gallery_dir(cfg: Config) -> Path:
    return Path(cfg.workdir) / "gallery"


def gallery(cfg: Config, methods: Optional[list[str]] = None, splits: Optional[list[str]] = None,
            progress: bool = True) -> Path:
    """Write the gallery page; returns its path.

    ``methods`` default ``gallery.methods``, else every method evaluate scored
    (:func:`evaluated_methods`); ``splits`` default ``gallery.splits`` or ``evaluate.splits``.
    The boxes of ``gallery.visible`` (default ``show.methods``) are shown when the page opens.
    """
    from tqdm import tqdm

    gc = cfg.gallery
    splits = splits or gc.splits or list(cfg.evaluate.splits)
    metrics = load_metrics(cfg)
    if methods or gc.methods:
        methods = resolve_methods(cfg, methods or gc.methods, splits)
    else:
        methods = evaluated_methods(cfg, metrics, splits) or resolve_methods(cfg, None, splits)
    visible = set(gc.visible if gc.visible is not None else cfg.show.methods)
    if not visible & set(methods):
        visible = set(methods[:3])
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    names = category_names(cfg)
    categories: list[str] = []
    cat_index: dict[int, int] = {}

    def category(c: int) -> int:
        """The page's index of class index ``c`` (named by the dataset, else by its number)."""
        if c not in cat_index:
            cat_index[c] = len(categories)
            categories.append(names.get(c, str(c)))
        return cat_index[c]

    out = gallery_dir(cfg)
    picks_any = {m for s in splits for m in second_stage(ground_dir(cfg), methods, s)[1]}
    views = [MethodView(m, base_method(m), m in picks_any, m in visible) for m in methods]
    images: list[tuple[str, int, int]] = []
    image_index: dict[int, int] = {}
    cards: list[Card] = []
    for s in splits:
        ev = Evaluation(cfg, methods, s, ground_dir(cfg), refdb, names)
        for e in tqdm(ev.expressions, desc=f"gallery {s}", disable=not progress):
            iid = int(e["image_id"])
            if iid not in image_index:
                w, h = refdb.image_size(iid)
                rel = os.path.relpath(image_file(cfg, refdb, iid), out)
                image_index[iid] = len(images)
                images.append((quote(Path(rel).as_posix()), int(w), int(h)))
            sid = int(e["sent_id"])
            outcomes = {}
            for m, o in ev.outcomes(e).items():
                row = ev.table(m)[sid]
                cls = np.array([category(int(c)) for c in row.cls_idx[o.kept]], np.int64)
                outcomes[m] = MethodOutcome(row.box[o.kept], cls, row.scores["score"][o.kept], o.hit, o.pick,
                                            o.pick_hit)
            fig = Path(cfg.workdir) / "show" / s / f"{sid}.png"
            cards.append(Card(sid, s, image_index[iid], e["sent"], e["gt_box"], ev.ctx_boxes(e), outcomes,
                              quote(Path(os.path.relpath(fig, out)).as_posix()) if fig.is_file() else None))
    n_fig = sum(c.figure is not None for c in cards)
    notes = [f"{cfg.dataset_tag}: {len(cards)} expressions, {len(methods)} methods. Kept proposals are those "
             "evaluate counts (its conf per method and split); hit: a kept proposal with IoU > "
             f"{cfg.evaluate.hit_iou:g} to the referent; 2nd stage: the second stage's answer among them. "
             "Hover or click a box for its method, category, score and rank; the checkboxes show or hide a "
             f"method's boxes. {n_fig} cards link to their `sepnms show` figure."]
    top = max((float(np.max(o.scores)) for c in cards for o in c.outcomes.values() if len(o.scores)), default=0.0)
    if top > 1.0:
        over = sorted({m for c in cards for m, o in c.outcomes.items() if len(o.scores) and float(np.max(o.scores)) > 1})
        notes.append(f"Scores are fused scores, not probabilities: {', '.join(over)} reach above 1 (up to {top:.2f}); "
                     "compare a method's scores with its own conf, not across methods.")
    others = [k for k in metrics if k not in methods]
    return write_gallery(out / "index.html", cards, views, splits, images, categories, metrics,
                         f"Sep-NMS gallery ({cfg.dataset_tag})", gc.page_size, gc.card_px, notes, others)
