"""CLIP-dagger relatedness of detector proposals (the ``clip`` input of the ``sep+clip`` fusion).

The score of a proposal for an expression is computed from the *proposal's crop* (never from
ground-truth boxes, which would leak the answer into the detected setting):

    cos[s, m]   = cosine(image_head(crop m), text_head(expression s))
    score[s, m] = softmax over the image's M candidate crops of (score_scale * cos[s, :])[m]

i.e. the same rule as the CLIP context labels, with the candidates in place of the annotated
objects.  The scores of one expression sum to 1 over its image's candidates, so they depend on how
many candidates the image has; ``cos`` is returned too for other normalisations.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from PIL import Image

from sepnms.clip.crops import score_boxes
from sepnms.clip.model import CLIPDagger


def clip_scores_for_image(dagger: CLIPDagger, image: Image.Image, boxes, sentences: Sequence[str],
                          score_scale: float, image_size: Optional[int] = None,
                          bgr_parity: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-dagger relatedness of M candidate boxes of one image to S expressions.

    Args:
        image: the image (PIL, converted to RGB).
        boxes: [M, 4] xyxy candidate boxes (pixels).
        sentences: the S expressions (full sentences) of this image.
        score_scale: the softmax temperature's inverse (``cfg.clip.score_scale``, 10 in the paper).
    Returns:
        (cos [S, M], score [S, M]) float32 on CPU; ``score`` = softmax over the M candidates of
        ``score_scale * cos``.  The M crops are encoded once whatever S is.
    """
    return score_boxes(dagger, image, boxes, sentences, score_scale, image_size, bgr_parity)
