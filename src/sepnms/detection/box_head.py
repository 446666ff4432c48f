"""The box head: 7x7 crop of C4 per RoI -> layer4 (stride 1) -> spatial mean -> class softmax and
class-specific deltas (times the normalisation stds), decoded in original-image pixels."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from sepnms.detection.boxes import clip_one_sided, decode
from sepnms.models.head import Layer4Head
from sepnms.models.pooling import pool_rois


def roi_fc7(c4: Tensor, rois: Tensor, layer4: Layer4Head, stride: int, pool_size: int, chunk: int) -> Tensor:
    """c4 [1, C, Hf, Wf], rois [N, 4] in resized-image pixels -> fc7 [N, 32w]: the parity crop
    (``models.pooling``, ``align_corners=True``, zero padding, no max-pool), layer4, mean; ``chunk``
    RoIs per layer4 pass."""
    out = [layer4(pool_rois(c4, rois[i:i + chunk], 1.0, stride, pool_size, "crop"))
           for i in range(0, len(rois), chunk)]
    return torch.cat(out) if out else c4.new_zeros((0, layer4.out_channels))


def classify(fc7: Tensor, cls_score_net: nn.Linear, bbox_pred_net: nn.Linear, rois: Tensor, scale: float,
             height: int, width: int, stds: Sequence[float]) -> tuple[Tensor, Tensor]:
    """fc7 [N, D], rois [N, 4] (resized pixels) -> (scores [N, K] softmax, boxes [N, K, 4] xyxy in
    original-image pixels clipped one-sidedly as MAttNet's ``_clip_boxes``: x1, y1 >= 0, x2 <= width - 1,
    y2 <= height - 1); deltas x ``stds``, ``+1`` decode."""
    scores = torch.softmax(cls_score_net(fc7).float(), dim=1)
    deltas = bbox_pred_net(fc7).float() * fc7.new_tensor(stds, dtype=torch.float32).repeat(scores.shape[1])
    boxes = clip_one_sided(decode(rois.float() / scale, deltas), height, width)
    return scores, boxes.reshape(len(rois), -1, 4)
