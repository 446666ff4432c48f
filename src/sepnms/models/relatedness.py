"""The two relatedness branches (METHOD.md), batched over B expressions x R RoIs.

``CtxRelatedness`` is the Ref-NMS branch unchanged; ``RefRelatedness`` is Sep-NMS's
location-aware visual embedding dotted with a (cached, frozen) sentence embedding.

Details read from the Ref-NMS code (``lib/predictor.py``, ``AttVanillaPredictorV2``):
the attention dropout acts on concat(key, word state) (key first) right before the
attention Linear; padded words (index >= length) get -inf; the score dropout acts after
the L2 normalisation, right before the final Linear; there is no dropout on the RoI
feature or inside the key/score MLPs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sepnms.config import ModelConfig
from sepnms.errors import ConfigError


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def _lengths_from_mask(word_mask: Tensor) -> Tensor:
    """word_mask: [B, T] bool, a prefix of True per row -> lengths [B] int64 (CPU)."""
    if word_mask.dim() != 2 or word_mask.dtype != torch.bool:
        raise ValueError(f"word_mask must be a [B, T] bool tensor, got {word_mask.dtype} {tuple(word_mask.shape)}")
    lengths = word_mask.sum(dim=1)
    if bool((lengths < 1).any()):
        raise ValueError("every expression needs at least one real token (word_mask row all False)")
    prefix = torch.arange(word_mask.size(1), device=word_mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, word_mask):
        raise ValueError("word_mask must mark a prefix of each row (real tokens first, padding after)")
    return lengths.to("cpu", torch.int64)


class CtxRelatedness(nn.Module):
    """Ctx-relatedness (= Ref-NMS): word-attention over a BiGRU, conditioned on each RoI.

    Args:
        cfg: model config (``word_dim``, ``gru_hidden``, ``head_out_channels``,
            ``hidden_dim``, ``embed_dim``, ``attn_dropout``, ``score_dropout``).
        word_vectors: [V, word_dim] GloVe matrix; row 0 is ``<unk>`` (a zero vector by the
            vocabulary's convention).  Held in a frozen ``nn.Embedding``.
    """

    def __init__(self, cfg: ModelConfig, word_vectors: Tensor):
        super().__init__()
        if cfg.embed_dim != 2 * cfg.gru_hidden:
            raise ConfigError(
                f"model.embed_dim ({cfg.embed_dim}) must equal 2 x model.gru_hidden "
                f"({2 * cfg.gru_hidden}): the RoI embedding is multiplied with BiGRU word states"
            )
        if word_vectors.dim() != 2 or word_vectors.size(1) != cfg.word_dim:
            raise ConfigError(
                f"word vectors have shape {tuple(word_vectors.shape)} but model.word_dim is {cfg.word_dim}"
            )
        word_state_dim = 2 * cfg.gru_hidden
        self.embedding = nn.Embedding.from_pretrained(word_vectors.float(), freeze=True)
        self.gru = nn.GRU(cfg.word_dim, cfg.gru_hidden, bidirectional=True, batch_first=True)
        self.key_mlp = _mlp(cfg.head_out_channels, cfg.hidden_dim, cfg.embed_dim)
        self.attn_dropout = nn.Dropout(cfg.attn_dropout)
        self.attn_fc = nn.Linear(cfg.embed_dim + word_state_dim, 1)
        self.score_mlp = _mlp(cfg.head_out_channels, cfg.hidden_dim, cfg.embed_dim)
        self.score_dropout = nn.Dropout(cfg.score_dropout)
        self.score_fc = nn.Linear(cfg.embed_dim, 1)

    def encode_words(self, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        """word_ids [B, T] long, word_mask [B, T] bool -> word states [B, T, 2*gru_hidden]
        (zeros at padded positions)."""
        lengths = _lengths_from_mask(word_mask)
        embedded = self.embedding(word_ids)                                   # [B, T, word_dim]
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        words, _ = pad_packed_sequence(out, batch_first=True, total_length=word_ids.size(1))
        return words                                                          # [B, T, 2H]

    def attention_logits(self, key: Tensor, words: Tensor, expanded: bool) -> Tensor:
        """Attention logit per (RoI, word), before masking.

        Args:
            key: [B, R, E] RoI keys.  words: [B, T, 2H] word states.
            expanded: build concat(key, word) for every pair (needed when the attention
                dropout is active).  Otherwise split the Linear into its key and word parts,
                which is exact without dropout and needs no [B, R, T, E+2H] tensor.

        Returns:
            [B, R, T]
        """
        if expanded:
            b, r, e = key.shape
            t = words.size(1)
            pair = torch.cat(
                (key[:, :, None, :].expand(b, r, t, e), words[:, None, :, :].expand(b, r, t, words.size(2))),
                dim=3,
            )                                                                 # [B, R, T, E+2H]
            return self.attn_fc(self.attn_dropout(pair)).squeeze(3)
        e = key.size(2)
        w_key = self.attn_fc.weight[0, :e]                                    # [E]
        w_word = self.attn_fc.weight[0, e:]                                   # [2H]
        return (key @ w_key)[:, :, None] + (words @ w_word)[:, None, :] + self.attn_fc.bias[0]

    def attend(self, roi_feats: Tensor, word_ids: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attention of every RoI over the words of its expression.

        Args:
            roi_feats: [B, R, head_out], or [1, R, head_out] shared by the B expressions (the
                RoI-only MLPs then run once, not B times).  word_ids: [B, T] long.
            word_mask: [B, T] bool.

        Returns:
            (weights [B, R, T], exactly 0 at padded words and summing to 1 over words;
            word states [B, T, 2*gru_hidden])
        """
        words = self.encode_words(word_ids, word_mask)                         # [B, T, 2H]
        key = self.key_mlp(roi_feats)                                         # [B or 1, R, E]
        expanded = self.training and self.attn_dropout.p > 0
        if expanded:
            key = key.expand(words.size(0), -1, -1)
        logits = self.attention_logits(key, words, expanded)                  # [B, R, T]
        logits = logits.masked_fill(~word_mask[:, None, :], float("-inf"))
        return torch.softmax(logits, dim=2), words

    def forward(self, roi_feats: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        """Args:
            roi_feats: [B, R, head_out] head features ([1, R, head_out]: shared by all B).
            word_ids: [B, T] long vocabulary indices.
            word_mask: [B, T] bool, True = real token (a prefix; lengths >= 1).

        Returns:
            ctx_logit: [B, R]
        """
        weights, words = self.attend(roi_feats, word_ids, word_mask)          # [B, R, T], [B, T, 2H]
        sentence = torch.bmm(weights, words)                                  # [B, R, 2H]
        fused = F.relu(self.score_mlp(roi_feats) * sentence)                  # [B, R, E]
        fused = self.score_dropout(F.normalize(fused, p=2, dim=2))
        return self.score_fc(fused).squeeze(2)                                # [B, R]


class RefRelatedness(nn.Module):
    """Ref-relatedness (Sep-NMS): dot(visual(RoI, location), text(sentence)) / temperature.

    Visual: concat(RoI feature, 5-d location) -> Linear -> ReLU -> Linear -> embed_dim.
    Text: Linear(text_dim -> embed_dim) -> BN -> ReLU -> Dropout -> Linear -> BN -> ReLU.
    No normalisation and no bias on the logit.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.visual_mlp = _mlp(cfg.head_out_channels + 5, cfg.hidden_dim, cfg.embed_dim)
        self.text_mlp = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.embed_dim),
            nn.BatchNorm1d(cfg.embed_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.text_dropout),
            nn.Linear(cfg.embed_dim, cfg.embed_dim),
            nn.BatchNorm1d(cfg.embed_dim),
            nn.ReLU(inplace=True),
        )
        if cfg.temperature <= 0:
            raise ConfigError(f"model.temperature must be > 0, got {cfg.temperature}")
        self.temperature = cfg.temperature

    def forward(self, roi_feats: Tensor, loc: Tensor, text_vec: Tensor) -> Tensor:
        """Args:
            roi_feats: [B, R, head_out].  loc: [B, R, 5] (``location_features``); both may have
                a batch dim of 1, shared by the B sentences (the visual MLP then runs once).
            text_vec: [B, text_dim] cached sentence embeddings.

        Returns:
            ref_logit: [B, R]
        """
        visual = self.visual_mlp(torch.cat((roi_feats, loc.to(roi_feats.dtype)), dim=2))  # [B, R, E]
        text = self.text_mlp(text_vec)                                                   # [B, E]
        return (visual * text[:, None, :]).sum(dim=2) / self.temperature


def location_features(boxes: Tensor, width: float, height: float) -> Tensor:
    """boxes [R, 4] xyxy original-image pixels -> [R, 5] location features
    ``[x1/W, y1/H, (x2-1)/W, (y2-1)/H, w*h/(W*H)]`` with ``w = x2-x1``, ``h = y2-y1``
    and W, H the original image size."""
    if boxes.dim() != 2 or boxes.size(-1) != 4:
        raise ValueError(f"boxes must have shape [R, 4], got {tuple(boxes.shape)}")
    boxes = boxes.float() if not boxes.is_floating_point() else boxes
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    area = (x2 - x1) * (y2 - y1) / (width * height)
    return torch.stack((x1 / width, y1 / height, (x2 - 1) / width, (y2 - 1) / height, area), dim=1)
