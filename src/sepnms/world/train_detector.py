"""``sepnms world train-detector``: train the world's narrow Mask R-CNN C4 on generated scenes.

Scenes come from the world's own generator (``sepnms.world.layout.sample_scene`` +
``render.paint_image``, JPEG round trip as the world's files), drawn on the fly from
``numpy.random.default_rng([world_detector.train_seed, step, k])`` - a seed family no demo or
test world uses.  The losses are ``sepnms.detection.training`` (RPN + box head, py-faster-rcnn
targets) plus an attribute head (colour, size) on the foreground RoIs' fc7, discarded afterwards.
BatchNorm trains in batch mode; at the end its running statistics are re-estimated on fresh
scenes with the final weights (precise BN), so the eval-mode network matches what was trained.
The checkpoint is MAttNet's key layout (``sepnms.detection.checkpoint.save_detector``).
Seeded; on one CPU thread the same seed gives the same weights.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torch import nn

from sepnms.config import Config
from sepnms.detection.box_head import roi_fc7
from sepnms.detection.checkpoint import expected_keys, load_state, save_detector
from sepnms.io.atomic import check_can_write
from sepnms.io.checkpoints import torch_load_weights
from sepnms.detection.detector import MaskRCNNC4
from sepnms.detection.preprocess import preprocess
from sepnms.detection.training import DetectorLoss, ImageTargets, LossSettings, total_loss
from sepnms.world import render as wr
from sepnms.world.detector import world_detector_config
from sepnms.world.content import CLASS_INDEX, PALETTE, SIZE_RANGES
from sepnms.world.layout import sample_scene

log = logging.getLogger(__name__)

COLOR_INDEX = {name: i for i, (name, _) in enumerate(PALETTE)}
SIZE_INDEX = {name: i for i, name in enumerate(SIZE_RANGES)}


def scene_image(rng: np.random.Generator, cfg: Config, fmt: str = "jpg"):
    """One generated scene as the world writes it: (decoded uint8 RGB [H, W, 3], objects)."""
    scene = sample_scene(rng, cfg)
    pixels = wr.paint_image(rng, scene.width, scene.height, scene.background,
                            [o.labels for o in scene.objects], [o.rgb for o in scene.objects])
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG" if fmt == "jpg" else "PNG", quality=92)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return decoded, scene.objects


def scene_targets(objects, scale: float) -> ImageTargets:
    """Ground truth of a scene in resized pixels, legacy xyxy (``x2 = x + w - 1``)."""
    boxes = torch.tensor([[o.box[0], o.box[1], o.box[2] - 1.0, o.box[3] - 1.0] for o in objects],
                         dtype=torch.float32).reshape(-1, 4) * scale
    labels = torch.tensor([CLASS_INDEX[o.cat.coco_id] for o in objects], dtype=torch.long)
    attrs = {"color": torch.tensor([COLOR_INDEX[o.color] for o in objects], dtype=torch.long),
             "size": torch.tensor([SIZE_INDEX[o.size] for o in objects], dtype=torch.long)}
    return ImageTargets(boxes, labels, attrs)


def _batches(cfg: Config, seed: int, step: int, n: int) -> Iterator[tuple[torch.Tensor, ImageTargets]]:
    dc = world_detector_config(cfg)
    for k in range(n):
        rgb, objs = scene_image(np.random.default_rng([seed, step, k]), cfg, cfg.world.image_format)
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # the detector reads BGR, as cv2.imread decodes
        blob, info = preprocess(bgr, dc.pixel_means, dc.test_scale, dc.test_max_size)
        yield blob, scene_targets(objs, float(info[2]))


def _lr(step: int, cfg: Config) -> float:
    t = cfg.world_detector
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * (t.lr_final + (1 - t.lr_final) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def loss_settings(cfg: Config) -> LossSettings:
    t = cfg.world_detector
    return LossSettings(t.rpn_batch, t.rpn_fg_fraction, t.rpn_fg_iou, t.rpn_bg_iou, t.rpn_train_pre_nms_top_n,
                        t.rpn_train_post_nms_top_n, t.roi_batch, t.roi_fg_fraction, t.roi_fg_iou, t.attr_weight)


def attribute_heads(model: MaskRCNNC4) -> nn.ModuleDict:
    d = model.resnet.out_channels
    return nn.ModuleDict({"color": nn.Linear(d, len(COLOR_INDEX)), "size": nn.Linear(d, len(SIZE_INDEX))})


@torch.no_grad()
def calibrate_batchnorm(model: MaskRCNNC4, cfg: Config, seed: int, n_images: int) -> None:
    """Precise BN: every BatchNorm's running mean / var = the average over ``n_images`` fresh
    scenes (trunk on the images, layer4 on each image's top RPN proposals, as at test time)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if n_images <= 0 or not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    dc = model.dc
    for blob, _ in _batches(cfg, seed, 0, n_images):
        c4 = model.c4(blob)
        model.eval()  # proposals from the eval-mode RPN head (it has no BN)
        rois, _ = model.rpn(c4, torch.tensor([blob.shape[2], blob.shape[3], 1.0]))
        model.train()
        roi_fc7(c4, rois, model.resnet.layer4, dc.feat_stride, dc.pool_size, dc.roi_chunk)
    for m in bns:
        m.momentum = 0.1
    model.eval()


def _save(model: MaskRCNNC4, cfg: Config, calib_seed: int, calib_images: int, seed: int, out: Path) -> None:
    """Precise BN, then the checkpoint (mask branch: small seeded random tensors, never used)."""
    calibrate_batchnorm(model, cfg, calib_seed, calib_images)
    g = torch.Generator().manual_seed(seed)
    mask = {k: torch.randn(shape, generator=g) * 0.01 for k, shape in expected_keys(model).items()
            if k.startswith("mask_")}
    save_detector(model, out, mask)


def train_world_detector(cfg: Config, out: Path, seed: Optional[int] = None, steps: Optional[int] = None,
                         log_file: Optional[Path] = None,
                         on_log: Optional[Callable[[dict], None]] = None, init: Optional[Path] = None) -> dict:
    """Train the world detector of ``cfg`` (widths: ``world_detector_config``) and write it to
    ``out``; returns the figures of the run (last losses, seconds).  ``seed`` seeds the
    initialisation and sampling (default ``cfg.seed``); scenes come from
    ``cfg.world_detector.train_seed`` (with ``init``, a continued run: scenes from
    ``train_seed + 1000`` so it sees new ones)."""
    check_can_write(out)  # before the training, not after it
    t = cfg.world_detector
    if init is not None:
        t = t.model_copy(update={"train_seed": t.train_seed + 1000})
    seed = int(cfg.seed if seed is None else seed)
    steps = int(t.steps if steps is None else steps)
    torch.set_num_threads(t.threads)
    torch.manual_seed(seed)
    dc = world_detector_config(cfg)
    model = MaskRCNNC4(dc)
    if init is not None:  # continue from a checkpoint (its BN statistics are re-estimated at the end)
        load_state(model, torch_load_weights(Path(init), "detector checkpoint"), Path(init))
    heads = attribute_heads(model)
    crit = DetectorLoss(loss_settings(cfg))
    params = [p for n, p in model.named_parameters() if not n.startswith("resnet.fc.")] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    model.train()
    t0 = time.perf_counter()
    history: list[dict] = []
    acc: dict[str, float] = {}
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.model_copy(update={"world_detector": t.model_copy(update={"steps": steps})}))
        opt.zero_grad(set_to_none=True)
        for blob, target in _batches(cfg, t.train_seed, step, t.batch_images):
            losses = crit(model, blob, [target], heads)
            (total_loss(losses) / t.batch_images).backward()
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach()) / t.batch_images
        opt.step()
        if (step + 1) % t.log_every == 0 or step + 1 == steps:
            n = t.log_every if (step + 1) % t.log_every == 0 else (step + 1) % t.log_every
            row = {"step": step + 1, **{k: round(v / n, 4) for k, v in acc.items()},
                   "lr": round(opt.param_groups[0]["lr"], 6), "seconds": round(time.perf_counter() - t0, 1)}
            row["total"] = round(sum(v for k, v in row.items() if k in ("rpn_cls", "rpn_box", "cls", "box", "attr")), 4)
            history.append(row)
            acc = {}
            if on_log:
                on_log(row)
            if log_file is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(row) + "\n")
        if t.checkpoint_every and (step + 1) % t.checkpoint_every == 0 and step + 1 < steps:
            _save(copy.deepcopy(model), cfg, t.train_seed + 1, max(1, t.bn_calibration_images // 2), seed, out)
            model.train()
    _save(model, cfg, t.train_seed + 1, t.bn_calibration_images, seed, out)
    return {"out": str(out), "seed": seed, "init": str(init) if init else None, "train_seed": t.train_seed, "steps": steps,
            "batch_images": t.batch_images, "seconds": round(time.perf_counter() - t0, 1),
            "history": history}
