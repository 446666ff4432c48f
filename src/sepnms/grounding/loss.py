"""MAttNet's training loss: hinge ranking over (visual, language) negatives + attribute BCE."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch.nn.functional as F
from torch import Tensor


def ranking_loss(scores: Tensor, margin: float = 0.1, visual_weight: float = 1.0, lang_weight: float = 1.0) -> Tensor:
    """scores [3n] = [paired (object, sentence) | visual negatives (other object, same sentence) |
    language negatives (same object, other sentence)] ->
    sum_i (vw * max(0, margin + s_vis_i - s_i) + lw * max(0, margin + s_lang_i - s_i)) / n."""
    if scores.dim() != 1 or scores.numel() % 3:
        raise ValueError(f"scores must be [3n], got {tuple(scores.shape)}")
    n = scores.numel() // 3
    pos, neg_vis, neg_lang = scores[:n], scores[n:2 * n], scores[2 * n:]
    loss = visual_weight * (margin + neg_vis - pos).clamp(min=0) + lang_weight * (margin + neg_lang - pos).clamp(min=0)
    return loss.sum() / n


def attribute_weights(counts: np.ndarray, scale: float = 10.0) -> np.ndarray:
    """MAttNet's class weights: 1/sqrt(count) rescaled linearly to [1, scale] (all 1 when equal)."""
    w = 1.0 / np.sqrt(np.maximum(np.asarray(counts, np.float64), 1.0))
    span = w.max() - w.min() if w.size else 0.0
    if span <= 0:
        return np.ones_like(w, dtype=np.float32)
    return (((w - w.min()) / span) * (scale - 1) + 1).astype(np.float32)


def attribute_loss(att_scores: Tensor, att_labels: Tensor, select: Tensor, class_weights: Optional[Tensor]) -> Tensor:
    """BCE-with-logits over the rows ``select`` (objects with attribute labels); 0 when none.

    att_scores [N, A] logits; att_labels [N, A] in {0, 1}; select [N] bool."""
    if not bool(select.any()):
        return att_scores.sum() * 0.0
    return F.binary_cross_entropy_with_logits(att_scores[select], att_labels[select].to(att_scores.dtype),
                                              weight=class_weights)
