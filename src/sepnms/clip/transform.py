"""The one image transform of CLIP-dagger: what the heads see, in fine-tuning and in scoring.

``clip-finetune`` trains the heads on images that went through GR-GAN's recipe (its augmentation
- shorter-side resize, random crop, random flip - then this transform); ``clip-ctx`` and
``propose`` with ``clip.score_proposals`` score box crops through *the same* transform, so the
heads never see inputs of a kind they were not trained on:

    PIL RGB image -> [0, 1] tensor -> (optionally BGR) -> Normalize(mean 0.5, std 0.5)
    -> bilinear resize (align_corners=False) to S x S, aspect ratio not kept.

``bgr_parity`` reverses the channels before normalising, reproducing the released code's mistake
(it fed OpenCV's BGR pixels to CLIP); it only applies at scoring time.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: GR-GAN's normalisation (torchvision Normalize((0.5,) * 3, (0.5,) * 3)): [0, 1] -> [-1, 1]
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def to_dagger_input(image: Image.Image, size: int, bgr_parity: bool = False) -> torch.Tensor:
    """image (PIL, any mode; converted to RGB) [H, W] -> [3, size, size] float32 CLIP-dagger input."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)
    if bgr_parity:
        x = x.flip(0)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    x = (x - mean) / std
    return F.interpolate(x[None], size=(int(size), int(size)), mode="bilinear", align_corners=False)[0]


def from_dagger_input(x: torch.Tensor) -> torch.Tensor:
    """[..., 3, S, S] CLIP-dagger input -> pixels in [0, 1] (the inverse of the normalisation)."""
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x * std + mean
