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

import numpy as np
import torch
from torchvision.ops import box_iou, nms
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


def object_clip_term(box, det_score, cos, scale: float = 10.0, min_det: float = 0.3,
                     nms_iou: float = 0.5) -> np.ndarray:
    """CLIP-dagger relatedness of M candidates on the scale of a softmax over the image's objects.

    The candidates of an image repeat each region once per class, so a softmax over all M crops
    gives every candidate about 1/M (hundreds on RefCOCO) and the term vanishes beside x and r.
    The released term was a softmax over the image's few objects; without ground truth, the
    objects are the *unique confident detections*:

    1. objects = class-agnostic NMS (IoU > ``nms_iou`` suppresses) over the candidates with
       ``S_det >= min_det``, by descending ``S_det`` (the top candidate when none reaches it);
    2. p = softmax over the objects of ``scale * cos`` (their own crops' cosines);
    3. each candidate takes p of the object it overlaps most (IoU, ties to the higher-scoring
       object).

    Args:
        box: [M, 4] xyxy; det_score: [M]; cos: [M] cosine of each candidate crop with the
            expression (column ``clip_cos``).
    Returns:
        [M] float64 in [0, 1]; the objects' values sum to 1.
    """
    box = np.asarray(box, dtype=np.float32).reshape(-1, 4)
    det = np.asarray(det_score, dtype=np.float32).reshape(-1)
    cos = np.asarray(cos, dtype=np.float64).reshape(-1)
    m = box.shape[0]
    if m == 0:
        return np.zeros(0)
    confident = np.flatnonzero(det >= min_det)
    if confident.size == 0:
        confident = np.array([int(np.argmax(det))])
    order = confident[np.lexsort((confident, -det[confident]))]
    keep = nms(torch.from_numpy(box[order]), torch.from_numpy(det[order]), float(nms_iou)).numpy()
    objects = order[np.sort(keep)]
    p = torch.softmax(torch.from_numpy(scale * cos[objects]), dim=0).numpy()
    overlap = box_iou(torch.from_numpy(box), torch.from_numpy(box[objects])).numpy()  # [M, O]
    return p[np.argmax(overlap, axis=1)]
