"""The Sep-NMS network: shared visual head + Ctx-relatedness + Ref-relatedness.

``model_type="refnms"`` builds the Ref-NMS baseline (no Ref-relatedness branch).
The head runs once per image (``roi_features``); the relatedness branches run per
expression on those features (``relatedness`` / ``forward``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.init import xavier_uniform_, zeros_

from sepnms.config import ModelConfig
from sepnms.errors import ConfigError
from sepnms.models.head import Layer4Head, load_layer4_from_maskrcnn
from sepnms.models.pooling import pool_rois
from sepnms.models.relatedness import CtxRelatedness, RefRelatedness

MODEL_TYPES = ("sepnms", "refnms")


class SepNMSModel(nn.Module):
    """Args:
        cfg: model config.
        word_vectors: [V, word_dim] GloVe matrix (row 0 = ``<unk>``), kept frozen.
        model_type: ``"sepnms"`` or ``"refnms"`` (Ref-NMS baseline: ``ref_relatedness`` is None).
    """

    def __init__(self, cfg: ModelConfig, word_vectors: Tensor, model_type: str = "sepnms"):
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"unknown model type {model_type!r}; choose one of {list(MODEL_TYPES)}")
        self.cfg = cfg
        self.model_type = model_type
        self.head = Layer4Head(cfg.feat_channels, cfg.head_mid_channels, cfg.head_out_channels, cfg.head_blocks)
        self.ctx_relatedness = CtxRelatedness(cfg, word_vectors)
        self.ref_relatedness: Optional[RefRelatedness] = RefRelatedness(cfg) if model_type == "sepnms" else None
        self.reset_new_layers()

    # -- init -----------------------------------------------------------------------
    def new_modules(self) -> list[nn.Module]:
        """The branches trained from scratch (everything but the head)."""
        return [m for m in (self.ctx_relatedness, self.ref_relatedness) if m is not None]

    @torch.no_grad()
    def reset_new_layers(self) -> None:
        """Xavier-uniform weights and zero biases for every new Linear and the GRU (as
        Ref-NMS does for all its new parameters).  BatchNorm keeps the standard init
        (scale 1, shift 0) unless ``cfg.bn_xavier_init``: then, for parity with the
        released code, each scale vector of length n is Xavier-initialised viewed as a
        [1, n] matrix (uniform in +-sqrt(6 / (n + 1))).  The frozen embedding is untouched."""
        for branch in self.new_modules():
            for module in branch.modules():
                if isinstance(module, nn.Linear):
                    xavier_uniform_(module.weight)
                    if module.bias is not None:
                        zeros_(module.bias)
                elif isinstance(module, nn.GRU):
                    for name, param in module.named_parameters():
                        if name.startswith("weight"):
                            xavier_uniform_(param)
                        elif name.startswith("bias"):
                            zeros_(param)
                elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.reset_parameters()
                    if self.cfg.bn_xavier_init and module.weight is not None:
                        xavier_uniform_(module.weight.view(1, -1))

    # -- forward --------------------------------------------------------------------
    def roi_features(self, head_map: Tensor, boxes: Tensor, scale: float) -> Tensor:
        """head_map [1, C, Hf, Wf], boxes [R, 4] xyxy original-image pixels,
        scale = image resize scale -> [R, head_out] head features."""
        if head_map.dim() != 4 or head_map.size(1) != self.cfg.feat_channels:
            raise ConfigError(
                f"feature map has shape {tuple(head_map.shape)} but model.feat_channels is "
                f"{self.cfg.feat_channels}"
            )
        pooled = pool_rois(
            head_map, boxes, scale, self.cfg.feat_stride, self.cfg.pool_size, self.cfg.pooling
        )                                                                   # [R, C, s, s]
        return self.head(pooled)                                            # [R, head_out]

    def relatedness(
        self,
        roi_feats: Tensor,
        loc: Tensor,
        word_ids: Tensor,
        word_mask: Tensor,
        text_vec: Optional[Tensor],
    ) -> tuple[Optional[Tensor], Tensor]:
        """Args:
            roi_feats: [B, R, head_out].  loc: [B, R, 5].  Either may have a batch dim of 1:
                the RoIs of one image shared by B expressions (their MLPs then run once).
            word_ids: [B, T] long.  word_mask: [B, T] bool (True = real token).
            text_vec: [B, text_dim] sentence embeddings (ignored, may be None, for refnms).

        Returns:
            (ref_logit [B, R] or None for refnms, ctx_logit [B, R])
        """
        ctx_logit = self.ctx_relatedness(roi_feats, word_ids, word_mask)
        if self.ref_relatedness is None:
            return None, ctx_logit
        if text_vec is None:
            raise ValueError("the sepnms model needs text_vec (sentence embeddings) for ref-relatedness")
        return self.ref_relatedness(roi_feats, loc, text_vec), ctx_logit

    def forward(
        self,
        roi_feats: Tensor,
        loc: Tensor,
        word_ids: Tensor,
        word_mask: Tensor,
        text_vec: Optional[Tensor] = None,
    ) -> tuple[Optional[Tensor], Tensor]:
        """Same as ``relatedness``."""
        return self.relatedness(roi_feats, loc, word_ids, word_mask, text_vec)

    # -- optimisation ---------------------------------------------------------------
    def param_groups(self, lr_head: float, lr_new: float, lr_gru: float, weight_decay: float) -> list[dict]:
        """Three Adam parameter groups: head, GRU, all other trainable new layers.
        Frozen parameters (the GloVe embedding) are in none."""
        head = [p for p in self.head.parameters() if p.requires_grad]
        gru_ids = {id(p) for p in self.ctx_relatedness.gru.parameters()}
        gru = [p for p in self.ctx_relatedness.gru.parameters() if p.requires_grad]
        new = [
            p for branch in self.new_modules() for p in branch.parameters()
            if p.requires_grad and id(p) not in gru_ids
        ]
        return [
            {"name": "head", "params": head, "lr": lr_head, "weight_decay": weight_decay},
            {"name": "gru", "params": gru, "lr": lr_gru, "weight_decay": weight_decay},
            {"name": "new", "params": new, "lr": lr_new, "weight_decay": weight_decay},
        ]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(
    cfg: ModelConfig,
    word_vectors: Tensor,
    model_type: str = "sepnms",
    maskrcnn_checkpoint: Optional[str | Path] = None,
) -> SepNMSModel:
    """Build the model; initialise the head from a Mask R-CNN checkpoint when given."""
    model = SepNMSModel(cfg, word_vectors, model_type)
    if maskrcnn_checkpoint is not None:
        load_layer4_from_maskrcnn(model.head, maskrcnn_checkpoint)
    return model
