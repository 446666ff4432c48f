"""MAttNet's Mask R-CNN res101 (C4) at test time, without the mask branch.

Attribute names are the checkpoint's top-level names, so ``state_dict()`` keys are exactly its
keys minus ``mask_*`` (``sepnms.detection.checkpoint`` reads those and ignores them) and minus
``num_batches_tracked`` (absent from the 2018 file).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sepnms.config import DetectorConfig
from sepnms.detection.anchors import generate_anchors, shifted_anchors
from sepnms.detection.backbone import CaffeResNet
from sepnms.detection.box_head import classify, roi_fc7
from sepnms.detection.proposal_layer import proposals
from sepnms.detection.rpn import rpn_layers, rpn_outputs


@dataclass
class ImageDetections:
    """One image's detector output (original-image pixels unless said otherwise)."""

    rois: Tensor        # [N, 4] RPN proposals / scale
    roi_scores: Tensor  # [N] RPN objectness
    scores: Tensor      # [N, K] class probabilities, column 0 = background
    boxes: Tensor       # [N, K, 4] class-specific xyxy boxes, clipped to the image
    im_info: Tensor     # [3] = (H', W', scale)


class MaskRCNNC4(nn.Module):
    """``resnet`` (C4 trunk + stride-1 layer4 + unused fc), the RPN convs and the box predictors."""

    def __init__(self, dc: DetectorConfig):
        super().__init__()
        self.dc = dc
        self.resnet = CaffeResNet(dc.width, dc.blocks)
        cell = torch.as_tensor(generate_anchors(dc.feat_stride, dc.anchor_ratios, dc.anchor_scales), dtype=torch.float32)
        self.register_buffer("cell_anchors", cell, persistent=False)
        c4, mid = self.resnet.c4_channels, dc.rpn_channels
        self.rpn_net, self.rpn_cls_score_net, self.rpn_bbox_pred_net = rpn_layers(c4, mid, len(cell))
        self.cls_score_net = nn.Linear(self.resnet.out_channels, dc.num_classes)
        self.bbox_pred_net = nn.Linear(self.resnet.out_channels, 4 * dc.num_classes)

    @property
    def c4_channels(self) -> int:
        return self.resnet.c4_channels

    def c4(self, blob: Tensor) -> Tensor:
        """blob [B, 3, H', W'] (preprocessed) -> C4 [B, 16w, ceil(H'/16), ceil(W'/16)]."""
        return self.resnet.c4(blob)

    def rpn(self, c4: Tensor, im_info: Tensor) -> tuple[Tensor, Tensor]:
        """One image's C4 [1, C, Hf, Wf] -> (rois [N, 4] resized pixels, objectness [N])."""
        dc = self.dc
        fg, deltas = rpn_outputs(self.rpn_net, self.rpn_cls_score_net, self.rpn_bbox_pred_net, c4)
        anchors = shifted_anchors(self.cell_anchors, c4.shape[2], c4.shape[3], dc.feat_stride)
        return proposals(fg[0], deltas[0], anchors, float(im_info[0]), float(im_info[1]),
                         dc.rpn_pre_nms_top_n, dc.rpn_post_nms_top_n, dc.rpn_nms_thresh)

    def detect_c4(self, c4: Tensor, im_info: Tensor, height: int, width: int) -> ImageDetections:
        """C4 [1, C, Hf, Wf] of an image of original size ``height x width`` -> its detections."""
        dc = self.dc
        rois, roi_scores = self.rpn(c4, im_info)
        fc7 = roi_fc7(c4.float(), rois, self.resnet.layer4,  # crop in float32 (bf16 coordinates drift)
                       dc.feat_stride, dc.pool_size, dc.roi_chunk)
        scale = float(im_info[2])
        scores, boxes = classify(fc7, self.cls_score_net, self.bbox_pred_net, rois, scale, height, width, dc.bbox_stds)
        return ImageDetections(rois.float() / scale, roi_scores.float(), scores, boxes, im_info)

    @torch.no_grad()
    def detect(self, blob: Tensor, im_infos: Tensor, sizes: list[tuple[int, int]]) -> tuple[list[ImageDetections], Tensor]:
        """blob [B, 3, H', W'] of B images of one resized size, im_infos [B, 3], sizes [(h, w)] of
        the originals -> (detections of each image, C4 [B, C, Hf, Wf])."""
        c4 = self.c4(blob)
        return [self.detect_c4(c4[i:i + 1], im_infos[i], h, w) for i, (h, w) in enumerate(sizes)], c4
