"""MAttNet's subject module: phrase-guided attention over the 7x7 grid of the candidate box."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sepnms.grounding.matching import NormalizeScale


class SubjectEncoder(nn.Module):
    """Per object: pool5 [N, P, 7, 7] (the C4 crop) and fc7 [N, F, 7, 7] (layer4 of it).

    ``object_features`` (phrase-independent, once per object): every cell of pool5 and fc7 is
    normalise-scaled, ``att_fuse`` = Linear(P + F -> J) + BN + ReLU gives att_feats [N, 49, J];
    the attribute logits [N, A] come from their mean (dropout, Linear J -> A).
    ``forward`` (per row): the phrase (normalise-scaled) and each cell's [fc7 | att_feats] go through
    Linear(F + J + D -> J), tanh, Linear(J -> 1); softmax over the 49 cells weights
    [fc7 | att_feats] into the subject feature [n, F + J].
    """

    def __init__(self, pool5_dim: int, fc7_dim: int, jemb_dim: int, word_vec_size: int, num_atts: int,
                 init_norm: float, dropout: float):
        super().__init__()
        self.pool5_normalizer = NormalizeScale(pool5_dim, init_norm)
        self.fc7_normalizer = NormalizeScale(fc7_dim, init_norm)
        self.att_normalizer = NormalizeScale(jemb_dim, init_norm)
        self.phrase_normalizer = NormalizeScale(word_vec_size, init_norm)
        self.att_fuse = nn.Sequential(nn.Linear(pool5_dim + fc7_dim, jemb_dim), nn.BatchNorm1d(jemb_dim), nn.ReLU())
        self.att_dropout = nn.Dropout(dropout)
        self.att_fc = nn.Linear(jemb_dim, num_atts)
        self.attn_fuse = nn.Sequential(nn.Linear(fc7_dim + jemb_dim + word_vec_size, jemb_dim), nn.Tanh(),
                                       nn.Linear(jemb_dim, 1))

    def object_features(self, pool5: Tensor, fc7: Tensor) -> tuple[Tensor, Tensor]:
        """-> (visual [N, G, F + J] with G = 7x7 cells, attribute logits [N, A])."""
        n, g = pool5.size(0), pool5.size(2) * pool5.size(3)
        p = self.pool5_normalizer(pool5.flatten(2).transpose(1, 2))            # [N, G, P]
        f = self.fc7_normalizer(fc7.flatten(2).transpose(1, 2))                # [N, G, F]
        att = self.att_fuse(torch.cat([p, f], 2).reshape(n * g, -1)).view(n, g, -1)  # [N, G, J]
        att_scores = self.att_fc(self.att_dropout(att.mean(1)))               # [N, A]
        att = self.att_normalizer(att)
        return torch.cat([f, att], 2), att_scores

    def forward(self, visual: Tensor, phrase: Tensor) -> tuple[Tensor, Tensor]:
        """visual [n, G, F + J] (rows' objects), phrase [n, D] -> (subject feature [n, F + J], grid attention [n, G])."""
        n, g = visual.shape[:2]
        q = self.phrase_normalizer(phrase).unsqueeze(1).expand(n, g, -1)
        logits = self.attn_fuse(torch.cat([visual, q], 2).reshape(n * g, -1)).view(n, g)
        attn = F.softmax(logits, dim=1)
        return torch.bmm(attn.unsqueeze(1), visual).squeeze(1), attn
