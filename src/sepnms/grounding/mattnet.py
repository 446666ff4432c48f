"""MAttNet: the language encoder, three visual modules, matching and module weights, as one network.

Inputs are split into an *object table* and a *sentence table*; each scored row pairs one object
with one sentence (``obj_idx``, ``sent_idx``).  Training passes one table entry per row, as
MAttNet's ``lossFun`` does (rows [positives | visual negatives | language negatives], so the
BatchNorms and the word dropout see each row); an evaluation pools each candidate box once and
encodes each sentence once (eval mode: no dropout, BatchNorm on running statistics, so sharing is
exact).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sepnms.config import GroundingConfig, ModelConfig
from sepnms.grounding.language import PhraseAttention, RNNEncoder
from sepnms.grounding.location import LocationEncoder
from sepnms.grounding.matching import Matching, RelationMatching
from sepnms.grounding.relation import RelationEncoder
from sepnms.grounding.subject import SubjectEncoder


@dataclass
class ObjectTable:
    """The objects of a batch.  N objects, G grid cells, K context slots.

    pool5 [N, P, 7, 7]; fc7 [N, F, 7, 7]; lfeats [N, 5]; dif_lfeats [N, 5K];
    cxt_fc7 [N, K, F] (mean fc7 of each context object, 0 where absent); cxt_lfeats [N, K, 5];
    cxt_mask [N, K] bool.
    """

    pool5: Tensor
    fc7: Tensor
    lfeats: Tensor
    dif_lfeats: Tensor
    cxt_fc7: Tensor
    cxt_lfeats: Tensor
    cxt_mask: Tensor

    def to(self, device: str | torch.device) -> "ObjectTable":
        return ObjectTable(*(getattr(self, k).to(device) for k in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.pool5.size(0))


@dataclass
class MAttNetOutput:
    scores: Tensor          # [n] sum of module weight x cosine
    weights: Tensor         # [n, 3] subject / location / relation
    sub_attn: Tensor        # [n, T] phrase attentions
    loc_attn: Tensor
    rel_attn: Tensor
    grid_attn: Tensor       # [n, G]
    rel_ixs: Tensor         # [n] chosen context slot
    att_scores: Tensor      # [N] x num_atts attribute logits, per object


class MAttNet(nn.Module):
    """MAttNet (box comprehension).  Sizes: V words, E = word_embedding_size, D = word_vec_size,
    H = rnn_hidden_size, J = jemb_dim, P = pool5 channels (model.feat_channels), F = fc7 channels
    (model.head_out_channels)."""

    def __init__(self, g: GroundingConfig, vocab_size: int, pool5_dim: int, fc7_dim: int):
        super().__init__()
        h2 = 2 * g.rnn_hidden_size
        self.rnn_encoder = RNNEncoder(vocab_size, g.word_embedding_size, g.word_vec_size, g.rnn_hidden_size,
                                      g.word_drop_out)
        self.weight_fc = nn.Linear(h2, 3)
        self.sub_attn = PhraseAttention(h2)
        self.loc_attn = PhraseAttention(h2)
        self.rel_attn = PhraseAttention(h2)
        self.sub_encoder = SubjectEncoder(pool5_dim, fc7_dim, g.jemb_dim, g.word_vec_size, g.num_atts,
                                          g.visual_init_norm, g.visual_drop_out)
        self.sub_matching = Matching(fc7_dim + g.jemb_dim, g.word_vec_size, g.jemb_dim, g.jemb_drop_out)
        self.loc_encoder = LocationEncoder(g.jemb_dim, g.num_cxt, g.visual_init_norm)
        self.loc_matching = Matching(g.jemb_dim, g.word_vec_size, g.jemb_dim, g.jemb_drop_out)
        self.rel_encoder = RelationEncoder(fc7_dim, g.jemb_dim, g.visual_init_norm)
        self.rel_matching = RelationMatching(g.jemb_dim, g.word_vec_size, g.jemb_dim, g.jemb_drop_out)
        # MAttNet ran on PyTorch 0.2 / 0.3, whose BatchNorm drew its scale from U(0, 1) (bias 0);
        # modern BatchNorm starts at 1.  Drawn here, after every other initialisation.
        for module in self.modules():
            if isinstance(module, nn.BatchNorm1d):
                nn.init.uniform_(module.weight, 0.0, 1.0)

    def forward(self, objects: ObjectTable, labels: Tensor, obj_idx: Tensor, sent_idx: Tensor) -> MAttNetOutput:
        """objects: N objects; labels [S, T] (0 = padding); obj_idx, sent_idx [n] long -> scores [n]."""
        # gathers by index_select: its backward (index_add) is deterministic on CPU, plain indexing's is not
        def rows(t: Tensor, idx: Tensor) -> Tensor:
            return t.index_select(0, idx)

        context, hidden, embedded = self.rnn_encoder(labels)                          # per sentence
        weights = rows(F.softmax(self.weight_fc(hidden), dim=1), sent_idx)            # [n, 3]
        sub_a, sub_q = self.sub_attn(context, embedded, labels)
        loc_a, loc_q = self.loc_attn(context, embedded, labels)
        rel_a, rel_q = self.rel_attn(context, embedded, labels)

        visual, att_scores = self.sub_encoder.object_features(objects.pool5, objects.fc7)  # per object
        sub_q_n = rows(sub_q, sent_idx)
        sub_feat, grid_attn = self.sub_encoder(rows(visual, obj_idx), sub_q_n)
        sub_score = self.sub_matching(sub_feat, sub_q_n)
        loc_feat = self.loc_encoder(objects.lfeats, objects.dif_lfeats)
        loc_score = self.loc_matching(rows(loc_feat, obj_idx), rows(loc_q, sent_idx))
        rel_feat = self.rel_encoder(objects.cxt_fc7, objects.cxt_lfeats)
        rel_score, rel_ixs = self.rel_matching(rows(rel_feat, obj_idx), rows(rel_q, sent_idx),
                                               rows(objects.cxt_mask, obj_idx))
        scores = (weights * torch.stack([sub_score, loc_score, rel_score], 1)).sum(1)
        return MAttNetOutput(scores, weights, rows(sub_a, sent_idx), rows(loc_a, sent_idx), rows(rel_a, sent_idx), grid_attn,
                             rel_ixs, att_scores)


def build_mattnet(g: GroundingConfig, m: ModelConfig, vocab_size: int) -> MAttNet:
    return MAttNet(g, vocab_size, m.feat_channels, m.head_out_channels)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def frozen_layer4(m: ModelConfig, source: str, checkpoint: Optional[str], seed: int) -> nn.Module:
    """The detector's layer4 (for fc7 = layer4 of the 7x7 crop), frozen, in eval mode.

    ``source='maskrcnn'`` loads ``resnet.layer4.*`` from the checkpoint; ``'random'`` seeds a
    fresh one (the demo's choice: the world's config sets no ``paths.maskrcnn_checkpoint``).
    """
    from sepnms.errors import ConfigError
    from sepnms.models.head import Layer4Head, load_layer4_from_maskrcnn

    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    head = Layer4Head(m.feat_channels, m.head_mid_channels, m.head_out_channels, m.head_blocks)
    torch.set_rng_state(gen_state)
    if source == "maskrcnn":
        if checkpoint is None:
            raise ConfigError("grounding.layer4_source is 'maskrcnn' but paths.maskrcnn_checkpoint is not set "
                              "(set it, or grounding.layer4_source=random)")
        load_layer4_from_maskrcnn(head, checkpoint)
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


@torch.no_grad()
def layer4_grid(layer4: nn.Module, pool5: Tensor, chunk: int = 256) -> Tensor:
    """pool5 [N, P, s, s] -> fc7 [N, F, s, s]: the frozen layer4 *before* its spatial mean."""
    if pool5.size(0) == 0:
        return pool5.new_zeros((0, layer4.out_channels, pool5.size(2), pool5.size(3)))
    outs = [nn.Sequential.forward(layer4, pool5[i:i + chunk]) for i in range(0, pool5.size(0), chunk)]
    return torch.cat(outs)
