"""Box decoding and clipping with the legacy ``+1`` width convention (``w = x2 - x1 + 1``).

``decode`` is py-faster-rcnn's ``bbox_transform_inv``: no delta weights, no clamp of ``dw``/``dh``
(torchvision's ``BoxCoder`` clamps at log(1000/16)), and ``x2 = ctr + w / 2`` (not ``- 1``).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms


def decode(boxes: Tensor, deltas: Tensor) -> Tensor:
    """boxes [N, 4] xyxy, deltas [N, 4K] (dx, dy, dw, dh per class) -> [N, 4K] xyxy boxes."""
    if boxes.numel() == 0:
        return deltas * 0
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    d = deltas.reshape(len(boxes), -1, 4)
    pcx = d[..., 0] * widths[:, None] + ctr_x[:, None]
    pcy = d[..., 1] * heights[:, None] + ctr_y[:, None]
    pw = torch.exp(d[..., 2]) * widths[:, None]
    ph = torch.exp(d[..., 3]) * heights[:, None]
    out = torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=-1)
    return out.reshape(len(boxes), -1)


def clip(boxes: Tensor, height: float, width: float) -> Tensor:
    """boxes [N, 4K] -> clamped to ``[0, width - 1] x [0, height - 1]``."""
    b = boxes.reshape(len(boxes), -1, 4)
    x = b[..., 0::2].clamp(0, float(width) - 1)
    y = b[..., 1::2].clamp(0, float(height) - 1)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1).reshape(boxes.shape)


def clip_one_sided(boxes: Tensor, height: float, width: float) -> Tensor:
    """boxes [N, 4K] -> MAttNet's ``Inference._clip_boxes`` (and mask-faster-rcnn's test-time
    ``_clip_boxes``): ``x1, y1 >= 0`` and ``x2 <= width - 1``, ``y2 <= height - 1`` only, so a
    box's x1 may stay past ``width - 1`` and its x2 below 0 (the two-sided ``clip`` clamps both
    ends; the proposal layer uses that one)."""
    b = boxes.reshape(len(boxes), -1, 4)
    out = torch.stack((b[..., 0].clamp(min=0), b[..., 1].clamp(min=0), b[..., 2].clamp(max=float(width) - 1),
                       b[..., 3].clamp(max=float(height) - 1)), dim=-1)
    return out.reshape(boxes.shape)


def nms_plus_one(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """Greedy NMS with the ``+1`` area convention (torchvision's ``nms`` on ``x2 + 1, y2 + 1``);
    indices kept, by decreasing score."""
    return nms(boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0]), scores, iou)
