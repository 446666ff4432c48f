"""The test-time proposal layer: decode every anchor, clip, top-N by objectness, NMS, top-M."""
from __future__ import annotations

import torch
from torch import Tensor

from sepnms.detection.boxes import clip, decode, nms_plus_one


def proposals(fg: Tensor, deltas: Tensor, anchors: Tensor, height: float, width: float,
              pre_nms_top_n: int = 6000, post_nms_top_n: int = 300, nms_thresh: float = 0.7) -> tuple[Tensor, Tensor]:
    """One image: fg [K], deltas [K, 4], anchors [K, 4] (resized-image pixels) ->
    (rois [N, 4] xyxy clipped to the resized ``height x width`` image, scores [N]), N <= post_nms_top_n.

    No delta clamp and no min-size filter (MAttNet's test settings).
    """
    boxes = clip(decode(anchors, deltas.to(torch.float32)), height, width)
    scores = fg.to(torch.float32)
    if pre_nms_top_n > 0 and scores.numel() > pre_nms_top_n:
        order = torch.topk(scores, pre_nms_top_n, sorted=True).indices
    else:
        order = torch.argsort(scores, descending=True)
    boxes, scores = boxes[order], scores[order]
    keep = nms_plus_one(boxes, scores, nms_thresh)
    if post_nms_top_n > 0:
        keep = keep[:post_nms_top_n]
    return boxes[keep], scores[keep]
