"""MAttNet's relation module: up to K context objects, each mean fc7 + 5-d offset -> Linear -> J."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from sepnms.grounding.matching import NormalizeScale


class RelationEncoder(nn.Module):
    """cxt_fc7 [N, K, F], cxt_lfeats [N, K, 5] -> [N, K, J] (normalise-scaled parts, Linear(F + 5 -> J))."""

    def __init__(self, fc7_dim: int, jemb_dim: int, init_norm: float):
        super().__init__()
        self.vis_feat_normalizer = NormalizeScale(fc7_dim, init_norm)
        self.lfeat_normalizer = NormalizeScale(5, init_norm)
        self.fc = nn.Linear(fc7_dim + 5, jemb_dim)

    def forward(self, cxt_fc7: Tensor, cxt_lfeats: Tensor) -> Tensor:
        return self.fc(torch.cat([self.vis_feat_normalizer(cxt_fc7), self.lfeat_normalizer(cxt_lfeats)], 2))
