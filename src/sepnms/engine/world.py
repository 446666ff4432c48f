"""``sepnms world``: the embedded world from pixels to detector output, and its quality.

1. ``sepnms.world.generate_world`` writes the images, the annotations (refer, COCO instances,
   MAttNet ``data.json``, mentions, objects), GloVe, captions, the world's trained detector
   (``<world>/detector/``, a copy of the checkpoint shipped in the package) and ``config.yaml``.
2. ``sepnms.engine.detect.detect`` - the very code of ``sepnms detect`` - runs that detector over
   the world's images: ``rpn/rpn_boxes.pkl``, ``rpn/rpn_box_scores.pkl``, ``rpn/dets.json``
   (MAttNet's own detections) and ``head_feats/`` (its C4 maps, float32).
3. :func:`world_quality` measures the detector (box AP50, COCOeval) and its features (linear
   probes of category, colour and size) on this world - a seed the detector never saw - and
   writes ``quality.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sepnms.config import Config, load_config
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_write_json

#: where detector outputs sit in the world folder (the paths its config.yaml names)
WORLD_OUTPUTS = {"rpn_boxes": "rpn/rpn_boxes.pkl", "rpn_box_scores": "rpn/rpn_box_scores.pkl",
                 "dets": "rpn/dets.json", "head_feats_dir": "head_feats"}
QUALITY_FILE = "quality.json"


def world_detect(world_dir: Path, progress: bool = False) -> dict[str, str]:
    """Run ``sepnms detect`` (``save_head=float32``) over the world's images with its own config
    and move the outputs to the paths ``config.yaml`` names (:data:`WORLD_OUTPUTS`)."""
    from sepnms.engine.detect import detect, detect_paths

    world_dir = Path(world_dir)
    build = world_dir / ".detect"
    if build.exists():
        shutil.rmtree(build)
    cfg = load_config(str(world_dir / "config.yaml"), [f"workdir={build}"])
    detect(cfg, save_head="float32", progress=progress)
    produced = detect_paths(cfg)
    for key, rel in WORLD_OUTPUTS.items():
        dst = world_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(produced[key], dst)
    shutil.rmtree(build)
    return {k: str(world_dir / v) for k, v in WORLD_OUTPUTS.items()}


def world_quality(world_dir: Path, cfg: Optional[Config] = None) -> dict[str, Any]:
    """Box AP50 and the linear probes of the world in ``world_dir`` (see
    ``sepnms.evaluation.world_quality``); written to ``<world>/quality.json`` and returned."""
    from sepnms.evaluation.world_quality import box_ap50, box_features, linear_probes
    from sepnms.io.head_feats import read_head
    from sepnms.io.rpn import load_rpn
    from sepnms.world.content import COCO_IDS

    world_dir = Path(world_dir)
    cfg = cfg or load_config(str(world_dir / "config.yaml"))
    rpn = load_rpn(world_dir / WORLD_OUTPUTS["rpn_boxes"], world_dir / WORLD_OUTPUTS["rpn_box_scores"])
    instances = cfg.instances_path()
    det = box_ap50(instances, rpn.boxes, rpn.scores, list(COCO_IDS), cfg.world.quality_score_thresh)
    objects_path = world_dir / "objects.json"
    try:
        objects = json.loads(objects_path.read_text())
        anns = json.loads(instances.read_text())["annotations"]
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(objects_path, f"cannot read the world's ground truth ({exc})") from None
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    feats, image_of, labels = [], [], {"category": [], "color": [], "size": []}
    for iid in sorted(by_image):
        head, info = read_head(world_dir / WORLD_OUTPUTS["head_feats_dir"], iid)
        group = by_image[iid]
        xyxy = np.array([[x, y, x + w - 1, y + h - 1] for x, y, w, h in (a["bbox"] for a in group)], np.float32)
        feats.append(box_features(head, info, xyxy, cfg.model.feat_stride))
        for a in group:
            o = objects[str(a["id"])]
            image_of.append(iid)
            labels["category"].append(int(a["category_id"]))
            labels["color"].append(o["color"])
            labels["size"].append(o["size"])
    probes = linear_probes(np.concatenate(feats), {k: np.array(v) for k, v in labels.items()},
                           np.array(image_of), cfg.world.quality_fit_fraction, seed=int(cfg.seed))
    out = {"detector": str(cfg.paths.detector_checkpoint), "n_images": len(by_image),
           "box_ap50": det["ap50"], "box_ap": det["ap"], "n_detections": det["n_detections"],
           "probes": probes,
           "goal": {"box_ap50": 0.8, "probe": 0.95}}
    atomic_write_json(world_dir / QUALITY_FILE, out, indent=2)
    return out


def world_statistics(world_dir: Path) -> dict[str, Any]:
    """``sepnms stats`` of the world (relational share from its ``mentions.json``)."""
    from sepnms.engine.stats import dataset_stats

    world_dir = Path(world_dir)
    out = dataset_stats(load_config(str(world_dir / "config.yaml")), world_dir / "mentions.json")
    out.pop("dataset")
    return out


def build_world(out_dir: Path, cfg: Config, seed: Optional[int] = None, progress: bool = True,
                quality: bool = True) -> dict[str, Any]:
    """The whole world (see the module docstring); returns the generator's summary plus the
    detector's figures (``mean_proposals``, ``mattnet_dets_per_image``, ``detect_seconds``) and,
    with ``quality``, ``quality`` (also in ``quality.json``)."""
    from sepnms.io.rpn import load_rpn
    from sepnms.world import generate_world

    from sepnms.detection.checkpoint import load_detector
    from sepnms.world.detector import world_checkpoint, world_detector_config

    out_dir = Path(out_dir)
    load_detector(world_checkpoint(cfg), world_detector_config(cfg))  # refuse before writing anything
    summary = generate_world(out_dir, cfg, seed, progress=progress)
    t0 = time.perf_counter()
    paths = world_detect(out_dir, progress=progress)
    summary["detect_seconds"] = round(time.perf_counter() - t0, 2)
    rpn = load_rpn(paths["rpn_boxes"], paths["rpn_box_scores"])
    n = max(1, len(rpn.boxes))
    summary["mean_proposals"] = round(sum(len(v) for v in rpn.boxes.values()) / n, 2)
    summary.update(world_statistics(out_dir))
    summary["mattnet_dets_per_image"] = round(len(json.loads(Path(paths["dets"]).read_text())) / n, 2)
    if quality:
        t1 = time.perf_counter()
        summary["quality"] = world_quality(out_dir)
        summary["quality_seconds"] = round(time.perf_counter() - t1, 2)
    summary["seconds"] = round(summary["seconds"] + time.perf_counter() - t0, 2)
    return summary
