"""Shared set-up of the benchmarks: a generated world at paper (or demo) model size, prepared and
text-encoded in a work folder, a randomly initialised model saved as a checkpoint, and a
description of the machine.  Not a test: the benchmarks print what they measure."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sepnms.config import Config, load_config

#: the tiny BERT-family encoder built for the benchmarks has BERT-base's width (768 = paper
#: model.text_dim) but one layer: BERT runs once per expression in encode-text, never in propose/train
PAPER_TEXT = ["text.tiny_hidden=768", "text.tiny_heads=12", "text.tiny_layers=1"]


def model_overrides(size: str) -> list[str]:
    """``model.*=value`` overrides of the ``paper`` (or ``demo``) preset's model section."""
    model = load_config(size).model.model_dump(mode="json")
    return [f"model.{k}={v}" for k, v in model.items()]


def _glove_of_dim(world: Path, dim: int, out: Path) -> Path:
    """The world's 50-d GloVe words, mapped to ``dim`` dimensions by a fixed random linear map
    (only 50-d GloVe is available offline; the paper's word_dim is 300)."""
    from sepnms.io.glove import load_glove, write_glove_text

    vectors = load_glove(world / "glove" / "glove.6B.50d.world.txt")
    if dim == 50:
        return world / "glove" / "glove.6B.50d.world.txt"
    proj = np.random.default_rng(0).standard_normal((50, dim)).astype(np.float32) / np.sqrt(dim / 50)
    write_glove_text(out, {w: v @ proj for w, v in vectors.items()})
    return out


def build_workdir(root: Path, n_images: int, size: str = "paper", seed: int = 0,
                  extra: Optional[list[str]] = None, encode: bool = True) -> tuple[Config, list[str]]:
    """Generate a world of ``n_images`` at ``size`` model dims under ``root``, prepare it and
    (``encode``) cache the sentence vectors.  Returns (config, the overrides that give it from
    ``<root>/world/config.yaml``, for subprocesses)."""
    from sepnms.engine.world import build_world
    from sepnms.engine.encode_text import encode_text
    from sepnms.engine.prepare import prepare

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(root)
    model = model_overrides(size)
    world = root / "world"
    build_world(world, load_config("demo", model + [f"world.n_images={n_images}"]), seed, progress=False)
    word_dim = load_config(size).model.word_dim
    glove = _glove_of_dim(world, word_dim, root / f"glove.{word_dim}d.txt")
    overrides = model + (PAPER_TEXT if size == "paper" else []) + [
        f"workdir={root / 'work'}", f"paths.glove={glove}", *(extra or [])]
    cfg = load_config(world / "config.yaml", overrides)
    prepare(cfg, progress=False)
    if encode:
        encode_text(cfg, progress=False)
    return cfg, overrides


def save_random_checkpoint(cfg: Config, model_type: str = "sepnms", seed: int = 0) -> Path:
    """A randomly initialised model saved as ``best.pt``, so ``propose`` can load it."""
    from sepnms.engine.checkpoint import save_initial_checkpoint

    return save_initial_checkpoint(cfg, model_type, seed)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: str = "cpu") -> str:
    """One line: CPUs, CPU model, torch, load average (and the GPU when ``device`` is CUDA)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    gpu = ""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: CUDA is not available here")
        gpu = f", GPU {torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    return (f"machine: {os.cpu_count()} CPUs ({cpu_model()}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {sys.version.split()[0]}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}{gpu}")


class Timer:
    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
