"""MAttNet's location module: 5-d location + 25-d same-category offsets -> Linear -> J."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from sepnms.grounding.matching import NormalizeScale


class LocationEncoder(nn.Module):
    """lfeats [N, 5], dif_lfeats [N, 5K] -> [N, J] (each part normalise-scaled, concatenated, Linear)."""

    def __init__(self, jemb_dim: int, num_cxt: int, init_norm: float):
        super().__init__()
        self.lfeat_normalizer = NormalizeScale(5, init_norm)
        self.dif_lfeat_normalizer = NormalizeScale(5 * num_cxt, init_norm)
        self.fc = nn.Linear(5 + 5 * num_cxt, jemb_dim)

    def forward(self, lfeats: Tensor, dif_lfeats: Tensor) -> Tensor:
        return self.fc(torch.cat([self.lfeat_normalizer(lfeats), self.dif_lfeat_normalizer(dif_lfeats)], 1))
