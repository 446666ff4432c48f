"""The shared visual head: ResNet layer4 on pooled C4 RoI features (METHOD.md).

The head depends only on the image and the boxes, never on the expression, so callers
compute it once per image and reuse it for every expression of that image.

BatchNorm: the Ref-NMS training script puts the whole predictor in ``train()`` mode every
step and gives the head's parameters (BatchNorm affine parameters included) to their own
Adam optimizer (lr 2e-4); at test time it calls ``eval()``.  So the head's BatchNorm is
*not* frozen: its running statistics update and its scale/shift train like any other
head parameter.  This module follows that: it has no special freezing, and obeys
``train()`` / ``eval()`` like any module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from sepnms.io.checkpoints import torch_load_weights
from sepnms.errors import ConfigError, InputError

CHECKPOINT_PREFIX = "resnet.layer4."
_NESTED_KEYS = ("model", "state_dict", "net", "weights")


class Layer4Head(nn.Sequential):
    """ResNet layer4 built from torchvision ``Bottleneck`` blocks, then a spatial mean.

    Block 0: ``in_channels -> mid_channels -> out_channels`` with a 1x1 conv + BN
    downsample, stride 1; blocks 1..blocks-1: ``Bottleneck(out_channels, mid_channels)``.
    Parameter names follow torchvision (``0.conv1.weight``, ``0.downsample.0.weight``,
    ``0.bn1.running_mean``, ...), so Mask R-CNN ``resnet.layer4.*`` tensors load directly.

    Paper preset: 1024 -> 512 -> 2048, 3 blocks.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, blocks: int):
        if out_channels != Bottleneck.expansion * mid_channels:
            raise ConfigError(
                f"head_out_channels ({out_channels}) must be {Bottleneck.expansion} x "
                f"head_mid_channels ({mid_channels}) = {Bottleneck.expansion * mid_channels}"
            )
        if blocks < 1:
            raise ConfigError(f"head_blocks must be >= 1, got {blocks}")
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        layers = [Bottleneck(in_channels, mid_channels, stride=1, downsample=downsample)]
        layers += [Bottleneck(out_channels, mid_channels) for _ in range(blocks - 1)]
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        """x: [R, in_channels, s, s] pooled RoI features -> [R, out_channels]."""
        if x.size(0) == 0:
            return x.new_zeros((0, self.out_channels))
        return super().forward(x).mean(dim=(2, 3))


def _find_layer4_tensors(obj: Any) -> dict[str, Tensor]:
    """The ``resnet.layer4.*`` tensors of a loaded checkpoint, prefix stripped ({} if none)."""
    candidates: list[Any] = [obj]
    if isinstance(obj, Mapping):
        candidates += [obj[k] for k in _NESTED_KEYS if k in obj]
        candidates += [v for v in obj.values() if isinstance(v, Mapping)]
    for cand in candidates:
        if not isinstance(cand, Mapping):
            continue
        found = {
            k[len(CHECKPOINT_PREFIX):]: v
            for k, v in cand.items()
            if isinstance(k, str) and k.startswith(CHECKPOINT_PREFIX)
        }
        if found:
            return found
    return {}


def load_layer4_from_maskrcnn(head: Layer4Head, path: str | Path) -> None:
    """Initialise ``head`` from the ``resnet.layer4.*`` tensors of a Mask R-CNN checkpoint.

    Accepts a flat state dict or one nested under ``model`` / ``state_dict`` (or any
    other top-level mapping).  ``num_batches_tracked`` buffers may be absent (MAttNet's
    checkpoint predates them; the head keeps its own).  Raises ``InputError(path, ...)``
    when the file is missing or unreadable, holds no ``resnet.layer4.*`` tensors, lacks
    a tensor the head needs, has extra layer4 tensors, or a shape differs.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "Mask R-CNN checkpoint not found")
    obj = torch_load_weights(path, "Mask R-CNN checkpoint")  # one line; never advises weights_only=False
    tensors = _find_layer4_tensors(obj)
    if not tensors:
        raise InputError(path, f"checkpoint holds no '{CHECKPOINT_PREFIX}*' tensors")

    own = head.state_dict()
    missing = [k for k in own if k not in tensors and not k.endswith("num_batches_tracked")]
    if missing:
        raise InputError(
            path, f"checkpoint lacks {len(missing)} head tensor(s), e.g. "
            + ", ".join(CHECKPOINT_PREFIX + k for k in missing[:3])
        )
    extra = [k for k in tensors if k not in own]
    if extra:
        raise InputError(
            path, f"checkpoint has {len(extra)} '{CHECKPOINT_PREFIX}*' tensor(s) the head "
            f"(blocks={len(head)}) does not have, e.g. " + ", ".join(CHECKPOINT_PREFIX + k for k in extra[:3])
        )
    new_state: dict[str, Tensor] = {}
    for key, target in own.items():
        if key not in tensors:          # an absent num_batches_tracked: keep the head's own
            new_state[key] = target
            continue
        value = tensors[key]
        if not isinstance(value, Tensor):
            raise InputError(path, f"{CHECKPOINT_PREFIX}{key} is not a tensor ({type(value).__name__})")
        if tuple(value.shape) != tuple(target.shape):
            raise InputError(
                path, f"{CHECKPOINT_PREFIX}{key} has shape {tuple(value.shape)} in the checkpoint "
                f"but {tuple(target.shape)} in the head"
            )
        new_state[key] = value.to(dtype=target.dtype)
    head.load_state_dict(new_state, strict=True)
