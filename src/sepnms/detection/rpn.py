"""MAttNet's RPN head (``rpn_net``, ``rpn_cls_score_net``, ``rpn_bbox_pred_net``) and its Caffe
two-group objectness softmax.  The convs live on the detector itself so their state-dict keys are
the checkpoint's top-level names."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def rpn_layers(in_channels: int, mid_channels: int, num_anchors: int) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
    """3x3 conv ``in -> mid`` (then ReLU), 1x1 conv ``mid -> 2A`` logits, 1x1 conv ``mid -> 4A`` deltas."""
    return (nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.Conv2d(mid_channels, 2 * num_anchors, 1),
            nn.Conv2d(mid_channels, 4 * num_anchors, 1))


def rpn_outputs(rpn_net: nn.Conv2d, cls_net: nn.Conv2d, bbox_net: nn.Conv2d, c4: Tensor) -> tuple[Tensor, Tensor]:
    """c4 [B, C, H, W] -> (fg probabilities [B, H*W*A], deltas [B, H*W*A, 4]), ordered (h, w, a).

    Channel ``a`` of the logits is anchor a's background, channel ``A + a`` its foreground: the map
    is viewed as [B, 2, A*H, W] and softmaxed over the 2 groups (Caffe's layout).
    """
    x = torch.relu(rpn_net(c4))
    logits = cls_net(x)  # [B, 2A, H, W]
    b, two_a, h, w = logits.shape
    a = two_a // 2
    prob = torch.softmax(logits.reshape(b, 2, a * h, w), dim=1).reshape(b, two_a, h, w)
    fg = prob[:, a:].permute(0, 2, 3, 1).reshape(b, -1)
    deltas = bbox_net(x).permute(0, 2, 3, 1).reshape(b, -1, 4)
    return fg, deltas
