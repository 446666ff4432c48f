"""MAttNet's language side: a bi-LSTM expression encoder and three phrase attentions.

``RNNEncoder``: Embedding(V, E) -> Dropout -> MLP (Linear E -> D, ReLU) -> bi-LSTM (H per
direction, 1 layer) over the unpadded tokens.  ``PhraseAttention``: Linear(2H -> 1) over the LSTM
states, softmax restricted to the real tokens, weighted sum of the MLP embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class RNNEncoder(nn.Module):
    """labels [B, T] (0 = padding, every row has >= 1 token) ->
    (context [B, T, 2H], hidden [B, 2H] = final states of both directions, embedded [B, T, D])."""

    def __init__(self, vocab_size: int, word_embedding_size: int, word_vec_size: int, hidden_size: int,
                 dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, word_embedding_size)
        self.input_dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(word_embedding_size, word_vec_size), nn.ReLU())
        self.rnn = nn.LSTM(word_vec_size, hidden_size, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lengths = (labels != 0).sum(1)
        if bool((lengths == 0).any()):
            raise ValueError("every sentence needs at least one token (got an all-padding row)")
        embedded = self.mlp(self.input_dropout(self.embedding(labels)))      # [B, T, D]
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.rnn(packed)
        context, _ = pad_packed_sequence(out, batch_first=True, total_length=labels.size(1))  # [B, T, 2H]
        hidden = h_n.transpose(0, 1).reshape(labels.size(0), -1)              # [B, 2H]
        return context, hidden, embedded


class PhraseAttention(nn.Module):
    """context [B, T, 2H], embedded [B, T, D], labels [B, T] -> (attn [B, T], phrase [B, D]).

    Padding (label 0) gets exactly 0 weight; the weights of the real tokens sum to 1.
    """

    def __init__(self, input_dim: int):
        super().__init__()
        self.fc = nn.Linear(input_dim, 1)

    def forward(self, context: Tensor, embedded: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.fc(context).squeeze(2).masked_fill(labels == 0, float("-inf"))
        attn = F.softmax(scores, dim=1)
        return attn, torch.bmm(attn.unsqueeze(1), embedded).squeeze(1)
