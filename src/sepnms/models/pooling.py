"""RoI pooling of the detector's C4 map (METHOD.md, "Shared visual head").

Two modes:

``crop`` (parity)
    The Mask R-CNN "crop pool" used by the released code: for each box an affine grid is
    built in feature-map units and the map is sampled bilinearly (``grid_sample``) at
    ``size x size`` points spread evenly from the box's left/top edge to its right/bottom
    edge, corners included.  Points outside the map read zero.  There is no max-pool.
    The released code chooses ``align_corners`` from the torch *minor* version and takes
    the wrong branch on torch 2.x; here it is always ``True``.
``roi_align``
    ``torchvision.ops.roi_align`` (``aligned=True``, adaptive sampling ratio).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

POOL_MODES = ("crop", "roi_align")


def pool_rois(
    head: Tensor,
    boxes: Tensor,
    scale: float,
    stride: int,
    size: int = 7,
    mode: str = "crop",
) -> Tensor:
    """Pool a ``size x size`` feature for every box.

    Args:
        head: [1, C, Hf, Wf] feature map of one image.
        boxes: [R, 4] xyxy boxes in original-image pixels.
        scale: the image's resize scale (original pixels -> network-input pixels).
        stride: the feature map's stride in network-input pixels (16 for C4).
        size: output side length.
        mode: ``"crop"`` (parity) or ``"roi_align"``.

    Returns:
        [R, C, size, size] pooled features, same dtype and device as ``head``.
    """
    if head.dim() != 4 or head.size(0) != 1:
        raise ValueError(f"head must have shape [1, C, H, W], got {tuple(head.shape)}")
    if boxes.dim() != 2 or boxes.size(-1) != 4:
        raise ValueError(f"boxes must have shape [R, 4], got {tuple(boxes.shape)}")
    if mode not in POOL_MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; choose one of {list(POOL_MODES)}")
    _, channels, height, width = head.shape
    num_rois = boxes.size(0)
    if num_rois == 0:
        return head.new_zeros((0, channels, size, size))
    boxes = boxes.to(device=head.device, dtype=head.dtype)

    if mode == "roi_align":
        return roi_align(
            head, [boxes], output_size=(size, size), spatial_scale=scale / stride,
            sampling_ratio=-1, aligned=True,
        )

    if height < 2 or width < 2:
        raise ValueError(f"crop pooling needs a feature map of at least 2x2, got {height}x{width}")
    fm = boxes * (scale / stride)                       # [R, 4] in feature-map units
    x1, y1, x2, y2 = fm.unbind(dim=1)                   # each [R]
    zero = torch.zeros_like(x1)
    theta = torch.stack(
        [
            (x2 - x1) / (width - 1), zero, (x1 + x2 - width + 1) / (width - 1),
            zero, (y2 - y1) / (height - 1), (y1 + y2 - height + 1) / (height - 1),
        ],
        dim=1,
    ).view(num_rois, 2, 3)                              # [R, 2, 3]
    grid = F.affine_grid(theta, [num_rois, channels, size, size], align_corners=True)  # [R, s, s, 2]
    return F.grid_sample(
        head.expand(num_rois, -1, -1, -1), grid,
        mode="bilinear", padding_mode="zeros", align_corners=True,
    )                                                   # [R, C, s, s]
