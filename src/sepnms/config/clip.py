"""CLIP-dagger (``clip``): its model, fine-tuning, context labels and proposal scores."""
from __future__ import annotations

from typing import Optional

from pydantic import model_validator

from sepnms.config.fields import Dropout, IoU, NonNegFloat, PosFloat, PosInt, Prob, Section


class ClipConfig(Section):
    arch: str = "RN101"
    """open_clip model name, or ``tiny`` (a small ModifiedResNet CLIP built from ``tiny_*``)."""
    embed_dim: PosInt = 512
    layer3_channels: PosInt = 1024
    image_size: PosInt = 224
    freeze_backbone: bool = True
    gamma1: PosFloat = 4.0
    gamma2: PosFloat = 5.0
    gamma3: PosFloat = 10.0
    batch_size: PosInt = 48
    epochs: PosInt = 150
    lr: PosFloat = 2e-4
    lr_decay: IoU = 0.98
    lr_min: NonNegFloat = 2e-5
    betas: tuple[Dropout, Dropout] = (0.5, 0.999)
    resize: PosInt = 355
    crop: PosInt = 299
    ctx_threshold: Prob = 0.08
    score_scale: PosFloat = 10.0
    referent_iou: IoU = 0.9
    bgr_parity: bool = False
    """Parity flag: the released code feeds BGR crops to CLIP by mistake."""
    score_proposals: bool = False
    """Make ``propose`` score every candidate crop with CLIP-dagger (needed by ``sep+clip``)."""
    amp: bool = False
    """Mixed precision (float16 autocast) for CLIP-dagger inference in ``clip-ctx`` and
    ``propose`` on CUDA; ignored on CPU.  (Fine-tuning follows ``train.amp``.)"""
    max_steps: Optional[PosInt] = None
    tiny_width: PosInt = 16
    tiny_layers: tuple[PosInt, PosInt, PosInt, PosInt] = (1, 1, 1, 1)
    tiny_text_width: PosInt = 64
    tiny_text_layers: PosInt = 2
    tiny_text_heads: PosInt = 2
    tiny_context_length: PosInt = 32
    tiny_vocab_size: PosInt = 49408

    @model_validator(mode="after")
    def _check_crop(self) -> "ClipConfig":
        if self.crop > self.resize:
            raise ValueError(f"clip.crop ({self.crop}) must not exceed clip.resize ({self.resize}): a random crop of the resized image")
        return self
