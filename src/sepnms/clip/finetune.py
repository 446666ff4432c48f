"""``sepnms clip-finetune``: fine-tune the CLIP-dagger heads on COCO captions (GR-GAN's ITM recipe,
METHOD.md "CLIP-dagger").

- Data: a COCO captions file ``{"images": [{id, file_name}], "annotations": [{image_id, caption}]}``
  (``paths.captions``), images in ``paths.captions_images_dir``.  One item per image; each time an
  image is drawn, one of its captions is picked at random (as AttnGAN / GR-GAN do).
- Images: Resize(``clip.resize``, shorter side) -> RandomCrop(``clip.crop``) -> RandomHorizontalFlip
  -> :func:`sepnms.clip.transform.to_dagger_input` (ToTensor -> Normalize(0.5, 0.5) -> bilinear resize
  to ``clip.image_size``), the same transform every scoring path applies to its crops.
- Loss: DAMSM sentence + word loss (both directions), gammas from the config.
- Optimiser: Adam(``clip.lr``, ``clip.betas``) over the trainable parameters; the learning rate is
  multiplied by ``clip.lr_decay`` after each epoch while it is above ``clip.lr_min``.  (The released
  code re-creates Adam each epoch, resetting its moments; one optimiser is kept here.)
- ``clip.epochs`` epochs of ``N // clip.batch_size`` batches (drop_last), capped by ``clip.max_steps``.

Every random choice (epoch order, caption, crop, flip) is a function of (seed, epoch, index), so a
run interrupted and resumed from ``<workdir>/clip/last.pt`` reaches the same weights as an
uninterrupted one.  Outputs: the heads (``paths.clip_heads`` or ``<workdir>/clip/heads.pt``), the
full state beside them when the backbone was trained (or has no checkpoint file), TensorBoard
scalars in ``<workdir>/clip/tb``, ``finetune_summary.json`` and the stage manifest.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sepnms.clip.backbone import tokenize
from sepnms.clip.losses import damsm_loss
from sepnms.clip.model import CLIPDagger, build_dagger, default_heads_path, full_state_name
from sepnms.clip.transform import to_dagger_input
from sepnms.config import ClipConfig, Config
from sepnms.distributed import barrier, rank_world, resolve_device
from sepnms.errors import InputError, OutputExistsError
from sepnms.io.atomic import atomic_write_json
from sepnms.io.checkpoints import torch_load_weights
from sepnms.io.images import read_image
from sepnms.training.batches import EpochBatches
from sepnms.training.loop import LoopSettings, Trainer, TrainingLoop, distributed_module, training_run
from sepnms.workdir import STAGE_SECTIONS, check_stage, stage_dir, write_manifest

log = logging.getLogger(__name__)

CKPT_FORMAT = "sepnms-clip-finetune"


# ---------------------------------------------------------------------------------------
# data


def load_captions(path: str | Path, images_dir: str | Path, check_files: bool = True) -> list[tuple[Path, list[str]]]:
    """(image path, captions) for every image of a COCO captions file that has a caption, by image id."""
    path, images_dir = Path(path), Path(images_dir)
    if not path.is_file():
        raise InputError(path, "captions file not found (paths.captions)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise InputError(path, "expected a COCO captions object with 'images' and 'annotations' lists")
    files: dict[int, str] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise InputError(path, f"an image entry lacks 'id' or 'file_name': {str(img)[:100]}")
        files[int(img["id"])] = str(img["file_name"])
    caps: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise InputError(path, f"an annotation lacks 'image_id' or 'caption': {str(ann)[:100]}")
        iid = int(ann["image_id"])
        if iid not in files:
            raise InputError(path, f"caption of image_id {iid}, which is not in 'images'")
        caps.setdefault(iid, []).append(str(ann["caption"]).strip())
    items = [(images_dir / files[iid], caps[iid]) for iid in sorted(caps)]
    if not items:
        raise InputError(path, "no image has a caption")
    if check_files:
        missing = [p for p, _ in items if not p.is_file()]
        if missing:
            raise InputError(missing[0], f"image not found ({len(missing)} of {len(items)} captioned images "
                                         f"missing from {images_dir}; check paths.captions_images_dir)")
    return items


class CaptionImages(Dataset):
    """Item ``epoch * N + i`` -> (image [3, S, S], tokens [L]) of image ``i``, with the random
    caption / crop / flip of that (seed, epoch, i)."""

    def __init__(self, items: list[tuple[Path, list[str]]], c: ClipConfig, context_length: int, seed: int,
                 max_pixels: Optional[int] = None):
        self.items, self.c, self.context_length, self.seed = items, c, context_length, seed
        self.max_pixels = max_pixels  # images.max_pixels (io.images.read_image)

    def __len__(self) -> int:
        return len(self.items)

    def transform(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        c = self.c
        image = TF.resize(image, c.resize)  # shorter side -> resize (bilinear), as transforms.Resize(int)
        w, h = image.size
        top = int(rng.integers(0, h - c.crop + 1))
        left = int(rng.integers(0, w - c.crop + 1))
        image = image.crop((left, top, left + c.crop, top + c.crop))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return to_dagger_input(image, c.image_size)

    def __getitem__(self, gidx: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.items)
        epoch, i = divmod(int(gidx), n)
        rng = np.random.default_rng([self.seed, epoch, i])
        path, captions = self.items[i]
        caption = captions[int(rng.integers(len(captions)))]
        image = Image.fromarray(read_image(path, max_pixels=self.max_pixels))
        return self.transform(image, rng), tokenize([caption], self.context_length)[0]


def lr_at_epoch(c: ClipConfig, epoch: int) -> float:
    """``clip.lr`` times ``clip.lr_decay`` once per finished epoch while above ``clip.lr_min``."""
    lr = c.lr
    for _ in range(epoch):
        if lr > c.lr_min:
            lr *= c.lr_decay
    return lr


# ---------------------------------------------------------------------------------------
# the stage


def batch_losses(dagger: CLIPDagger, images: torch.Tensor, tokens: torch.Tensor, c: ClipConfig
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sentence loss, word loss) of one batch."""
    img_code, regions = dagger.encode_image(images)
    sent_code, words, lengths = dagger.encode_text(tokens)
    return damsm_loss(img_code.float(), regions.float(), sent_code.float(), words.float(), lengths,
                      c.gamma1, c.gamma2, c.gamma3)


class DaggerLosses(torch.nn.Module):
    """(sentence loss, word loss) of a batch, as one module (what DistributedDataParallel wraps)."""

    def __init__(self, dagger: CLIPDagger, c: ClipConfig):
        super().__init__()
        self.dagger, self.c = dagger, c

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_losses(self.dagger, images, tokens, self.c)


class DaggerTrainer(Trainer):
    """GR-GAN's ITM recipe on captions: what is CLIP-dagger's own in the one loop (no validation;
    the per-epoch means of the losses are its history)."""

    def __init__(self, cfg: Config, dagger: CLIPDagger, fingerprint: str, batches_per_epoch: int, device: str):
        c = cfg.clip
        self.c, self.dagger, self.fingerprint, self.nb, self.device = c, dagger, fingerprint, batches_per_epoch, device
        self.optimizer = torch.optim.Adam(dagger.trainable_parameters(), lr=c.lr, betas=tuple(c.betas))
        self.step_module: torch.nn.Module = DaggerLosses(dagger, c)
        self.lr = c.lr

    def initial_state(self) -> dict[str, Any]:
        return {"epoch": 0, "batch": 0, "epoch_loss": 0.0, "epoch_sentence": 0.0, "epoch_word": 0.0}

    def payload(self) -> dict[str, Any]:
        return {"format": CKPT_FORMAT, "version": 1, "fingerprint": self.fingerprint,
                "model": {k: v.detach().cpu() for k, v in self.dagger.trainable_state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def read_last(self, path: Path) -> dict[str, Any]:
        try:
            ck = torch_load_weights(path)  # one line; never advises weights_only=False
        except InputError as exc:
            raise InputError(path, f"{exc.problem}; delete it or pass --overwrite") from None
        if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
            raise InputError(path, "not a clip-finetune checkpoint; delete it or pass --overwrite")
        if ck.get("fingerprint") != self.fingerprint:
            raise OutputExistsError(f"{path} is a clip-finetune checkpoint of another configuration "
                                    f"(fingerprint {ck.get('fingerprint')}, now {self.fingerprint}); pass --overwrite "
                                    "to start again")
        return ck

    def restore(self, ckpt: dict[str, Any], path: Path) -> None:
        missing, unexpected = self.dagger.load_state_dict(ckpt["model"], strict=False)
        trainable = set(self.dagger.trainable_state_dict())
        if unexpected or any(k in trainable for k in missing):
            raise InputError(path, "checkpoint does not fit the model; delete it or pass --overwrite")
        self.optimizer.load_state_dict(ckpt["optimizer"])

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], state: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, Any]]:
        self.lr = lr_at_epoch(self.c, state["epoch"])
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr
        images, tokens = batch
        s_loss, w_loss = self.step_module(images.to(self.device, non_blocking=True),
                                          tokens.to(self.device, non_blocking=True))
        return s_loss + w_loss, {"sentence_loss": s_loss, "word_loss": w_loss, "lr": self.lr}

    def after_step(self, state: dict[str, Any], values: dict[str, float], scalar) -> None:
        state["batch"] += 1
        state["epoch_loss"] += values["loss"]
        state["epoch_sentence"] += values["sentence_loss"]
        state["epoch_word"] += values["word_loss"]
        end_of_epoch = state["batch"] >= self.nb
        if end_of_epoch or state["step"] >= self.total:
            k = state["batch"]
            state["history"].append({"epoch": state["epoch"], "step": state["step"], "lr": self.lr, "batches": k,
                                     "loss": state["epoch_loss"] / k, "sentence_loss": state["epoch_sentence"] / k,
                                     "word_loss": state["epoch_word"] / k})
            scalar("epoch/loss", state["epoch_loss"] / k, state["epoch"])
        if end_of_epoch:
            state.update(epoch=state["epoch"] + 1, batch=0, epoch_loss=0.0, epoch_sentence=0.0, epoch_word=0.0)

    def checkpoint_now(self, state: dict[str, Any]) -> bool:
        return state["batch"] == 0  # an epoch has just ended


def clip_finetune(cfg: Config, overwrite: bool = False, progress: bool = True,
                  stop_after_steps: Optional[int] = None) -> dict[str, Any]:
    """Fine-tune CLIP-dagger; returns a summary.  Resumes from ``<workdir>/clip/last.pt`` when present
    (``overwrite`` starts again).  ``stop_after_steps`` stops after that many steps in this call (as an
    interruption would, saving ``last.pt``) - for tests of resuming.

    Under ``torchrun`` each rank takes every ``WORLD_SIZE``-th batch (DistributedDataParallel; the
    effective batch is ``WORLD_SIZE x clip.batch_size``); rank 0 writes the checkpoints, the heads and
    the summary, and its own batches' losses are the history."""
    with training_run(cfg.device, stage_dir(cfg, "clip"), "sepnms clip-finetune"):
        return _finetune(cfg, overwrite, progress, stop_after_steps)


def _finetune(cfg: Config, overwrite: bool, progress: bool, stop_after_steps: Optional[int]) -> dict[str, Any]:
    c = cfg.clip
    rank, world = rank_world()
    sections = STAGE_SECTIONS["clip"]
    fingerprint = cfg.fingerprint(*sections)
    folder = check_stage(cfg, "clip", overwrite=overwrite)
    heads_path = default_heads_path(cfg)
    captions_path = cfg.need_path("captions")
    items = load_captions(captions_path, cfg.need_path("captions_images_dir"))
    device = resolve_device(cfg.device)

    dagger = build_dagger(cfg, seed=cfg.seed).to(device)
    nb = EpochBatches(len(items), c.batch_size, c.epochs, cfg.seed, rank=rank, world_size=world).batches_per_epoch()
    trainer = DaggerTrainer(cfg, dagger, fingerprint, nb, device)
    total_steps = nb * c.epochs
    if c.max_steps is not None:
        total_steps = min(total_steps, c.max_steps)
    trainer.total = total_steps
    loop = TrainingLoop(trainer, LoopSettings(
        name="clip-finetune", folder=folder, total=total_steps, checkpoint_every=max(cfg.train.checkpoint_every, 1),
        progress=progress, amp=cfg.train.amp and device.startswith("cuda"), restart_hint="--overwrite"), device)
    state = loop.resume(resume=not overwrite)  # --overwrite: the old last.pt stays until this run saves its own

    trainer.step_module = distributed_module(trainer.step_module, device, cfg.seed, state["step"],
                                             find_unused_parameters=True)
    sampler = EpochBatches(len(items), c.batch_size, c.epochs, cfg.seed, state["epoch"], state["batch"], rank, world,
                           stream=(1 << 20,))
    if nb == 0:
        raise InputError(captions_path, f"{len(items)} captioned images, fewer than one batch of "
                                        f"clip.batch_size={c.batch_size}")
    dataset = CaptionImages(items, c, dagger.context_length, cfg.seed, cfg.images.max_pixels)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.train.num_workers,
                        pin_memory=device.startswith("cuda"))

    dagger.train()
    t0 = time.perf_counter()
    if loop.run(loader, stop_after_steps):
        return {"interrupted": True, "step": state["step"]}
    summary = {"steps": state["step"], "epochs_done": state["epoch"], "images": len(items),
               "batches_per_epoch": nb, "heads": str(heads_path), "full_state": None,
               "final_loss": state["history"][-1]["loss"] if state["history"] else None,
               "history": state["history"], "seconds_this_call": time.perf_counter() - t0}
    if rank == 0:
        save_full = (not dagger.frozen) or dagger.info.get("checkpoint") is None
        full_name = full_state_name(heads_path) if save_full else None
        if save_full:
            dagger.save_full(heads_path.parent / full_name)
        dagger.save_heads(heads_path, full_state=full_name)
        summary["full_state"] = str(heads_path.parent / full_name) if full_name else None
        atomic_write_json(folder / "finetune_summary.json", summary, indent=2)
        write_manifest(cfg, "clip", folder, extra={"heads": str(heads_path), "steps": state["step"]})
    barrier()
    return summary
