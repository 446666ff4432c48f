"""The first stage's network (``model``) and its text encoder (``text``: ``sepnms encode-text``)."""
from __future__ import annotations

from typing import Literal

from sepnms.config.fields import Dropout, PosFloat, PosInt, Section


class ModelConfig(Section):
    feat_channels: PosInt = 1024
    feat_stride: PosInt = 16
    pooling: Literal["crop", "roi_align"] = "crop"
    pool_size: PosInt = 7
    head_mid_channels: PosInt = 512
    head_out_channels: PosInt = 2048
    head_blocks: PosInt = 3
    word_dim: PosInt = 300
    gru_hidden: PosInt = 256
    hidden_dim: PosInt = 1024
    embed_dim: PosInt = 512
    text_dim: PosInt = 768
    attn_dropout: Dropout = 0.5
    score_dropout: Dropout = 0.5
    text_dropout: Dropout = 0.1
    temperature: PosFloat = 0.06
    bn_xavier_init: bool = False
    """Parity flag: the released code Xavier-initialises BatchNorm scales too."""


class TextConfig(Section):
    max_length: PosInt = 10
    pooling: Literal["mean_all", "masked_mean"] = "mean_all"
    batch_size: PosInt = 64
    build_tiny_encoder: bool = False
    """Demo only: build a small random BERT-family encoder in the workdir when no
    ``paths.text_encoder`` is given (no pretrained BERT can be downloaded here)."""
    tiny_hidden: PosInt = 64
    tiny_layers: PosInt = 2
    tiny_heads: PosInt = 2
