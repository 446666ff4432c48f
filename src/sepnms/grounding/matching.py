"""MAttNet's matching functions and the normalise-scale layer shared by its visual modules."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NormalizeScale(nn.Module):
    """L2-normalise the last dimension, then scale each channel by a learnable weight (init ``init_norm``)."""

    def __init__(self, dim: int, init_norm: float = 20.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1, dim), float(init_norm)))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=-1) * self.weight.view(*([1] * (x.dim() - 1)), -1)


def _mlp(in_dim: int, jemb_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, jemb_dim), nn.BatchNorm1d(jemb_dim), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(jemb_dim, jemb_dim), nn.BatchNorm1d(jemb_dim))


class Matching(nn.Module):
    """visual [n, V], lang [n, L] -> cosine [n] of their two-layer MLP embeddings."""

    def __init__(self, vis_dim: int, lang_dim: int, jemb_dim: int, dropout: float):
        super().__init__()
        self.vis_emb_fc = _mlp(vis_dim, jemb_dim, dropout)
        self.lang_emb_fc = _mlp(lang_dim, jemb_dim, dropout)

    def forward(self, visual: Tensor, lang: Tensor) -> Tensor:
        v = F.normalize(self.vis_emb_fc(visual), p=2, dim=1)
        q = F.normalize(self.lang_emb_fc(lang), p=2, dim=1)
        return (v * q).sum(1)


class RelationMatching(Matching):
    """visual [n, K, V], lang [n, L], mask [n, K] -> (max over the K contexts of mask x cosine [n],
    index of the chosen context [n]).  Missing contexts score 0, as in MAttNet (a row without any
    context scores 0)."""

    def forward(self, visual: Tensor, lang: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        n, k = visual.shape[:2]
        v = F.normalize(self.vis_emb_fc(visual.reshape(n * k, -1)), p=2, dim=1).view(n, k, -1)
        q = F.normalize(self.lang_emb_fc(lang), p=2, dim=1)
        cos = (v * q.unsqueeze(1)).sum(2) * mask.to(v.dtype)
        return cos.max(1)
