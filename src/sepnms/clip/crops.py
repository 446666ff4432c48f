"""Box crops for CLIP-dagger scoring, and the one scoring routine shared by the CLIP context
labels (``clip-ctx``) and the test-time proposal score (``propose``).

A crop is the box's pixels ``[floor(x1), floor(y1), ceil(x2), ceil(y2))`` clipped to the image (at
least one pixel), then :func:`sepnms.clip.transform.to_dagger_input` - the transform the heads were
fine-tuned with (normalise, bilinear resize to S x S).  ``bgr_parity`` reverses the channels
before normalising, reproducing the released code's mistake (it fed OpenCV's BGR pixels to CLIP).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from sepnms.clip.model import CLIPDagger
from sepnms.clip.transform import to_dagger_input

#: crops encoded per forward pass (a limit on memory only; all crops of an image are encoded once)
CROP_CHUNK = 256


def crop_boxes(image: Image.Image, boxes, size: int, bgr_parity: bool = False) -> torch.Tensor:
    """image (PIL), boxes [N, 4] xyxy (pixels) -> crops [N, 3, size, size] through ``to_dagger_input``."""
    image = image.convert("RGB")
    w, h = image.size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = torch.empty(len(boxes), 3, size, size)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        left = min(max(int(math.floor(x1)), 0), w - 1)
        top = min(max(int(math.floor(y1)), 0), h - 1)
        right = max(min(int(math.ceil(x2)), w), left + 1)
        bottom = max(min(int(math.ceil(y2)), h), top + 1)
        out[i] = to_dagger_input(image.crop((left, top, right, bottom)), size, bgr_parity)
    return out


def encode_crops(dagger: CLIPDagger, crops: torch.Tensor, chunk: int = CROP_CHUNK) -> torch.Tensor:
    """crops [N, 3, S, S] -> image codes [N, E] through ``dagger.image_code`` (one call for up to
    ``chunk`` crops)."""
    codes = [dagger.image_code(crops[i:i + chunk].to(dagger.device)) for i in range(0, len(crops), chunk)]
    return torch.cat(codes) if codes else torch.zeros(0, dagger.embed_dim, device=dagger.device)


@torch.no_grad()
def score_boxes(dagger: CLIPDagger, image: Image.Image, boxes, sentences: Sequence[str], score_scale: float,
                image_size: int | None = None, bgr_parity: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-dagger relatedness of every box crop of one image to every sentence.

    The crops are encoded once (however many sentences), the sentences once in one batch.

    Returns:
        cos [S, N]: cosine of the (head-projected) crop code and sentence code.
        prob [S, N]: softmax over the N boxes of ``score_scale * cos``, per sentence.
    """
    was_training = dagger.training
    dagger.eval()
    try:
        size = int(image_size or dagger.info["image_size"])
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0 or len(sentences) == 0:
            empty = torch.zeros(len(sentences), len(boxes))
            return empty, empty.clone()
        img = torch.nn.functional.normalize(encode_crops(dagger, crop_boxes(image, boxes, size, bgr_parity)).float(), dim=-1)
        txt = torch.nn.functional.normalize(dagger.sentence_codes(list(sentences)).float(), dim=-1)
        cos = (txt @ img.t()).cpu()
        prob = torch.softmax(score_scale * cos, dim=1)
        return cos, prob
    finally:
        dagger.train(was_training)
