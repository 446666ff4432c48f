"""MAttNet's detector checkpoint (``res101_mask_rcnn_iter_1250000_cpu.pth``): a plain state dict.

Keys (536 for ResNet-101): ``resnet.*`` named as torchvision's resnet101 without
``num_batches_tracked`` (520 trunk tensors + ``resnet.fc.{weight,bias}``), ``rpn_net``,
``rpn_cls_score_net``, ``rpn_bbox_pred_net``, ``cls_score_net``, ``bbox_pred_net``,
``mask_up_sampling``, ``mask_pred_net`` (weight + bias each).  Loading is strict: a missing or an
unexpected key, a non-tensor or a shape that differs is an error naming the keys.  The mask branch
(only used for segmentation) is checked and then ignored on purpose.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from sepnms.config import DetectorConfig
from sepnms.detection.detector import MaskRCNNC4
from sepnms.errors import InputError
from sepnms.io.atomic import atomic_path
from sepnms.io.checkpoints import torch_load_weights

MASK_UPSAMPLE_CHANNELS = 256


def mask_shapes(model: MaskRCNNC4) -> dict[str, tuple[int, ...]]:
    """The mask branch's keys and shapes: ConvTranspose2d(D -> 256, 2, 2) and Conv1x1(256 -> K)."""
    d, k, m = model.resnet.out_channels, model.dc.num_classes, MASK_UPSAMPLE_CHANNELS
    return {"mask_up_sampling.weight": (d, m, 2, 2), "mask_up_sampling.bias": (m,),
            "mask_pred_net.weight": (k, m, 1, 1), "mask_pred_net.bias": (k,)}


def expected_keys(model: MaskRCNNC4) -> dict[str, tuple[int, ...]]:
    """Every key of the checkpoint with its shape, in ``state_dict`` order then the mask branch."""
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    keys.update(mask_shapes(model))
    return keys


def _names(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state(model: MaskRCNNC4, state: object, path: Path) -> None:
    """Strictly load ``state`` (a loaded checkpoint) into ``model``; InputError naming the keys."""
    if not isinstance(state, Mapping):
        raise InputError(path, f"expected a state dict (a mapping of names to tensors), found {type(state).__name__}")
    want = expected_keys(model)
    have = {k for k in state if not (isinstance(k, str) and k.endswith("num_batches_tracked"))}
    missing = [k for k in want if k not in have]
    unexpected = sorted(str(k) for k in have if k not in want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
        raise InputError(path, "not MAttNet's detector layout for detector.width="
                         f"{model.dc.width}, blocks={list(model.dc.blocks)}: " + "; ".join(parts))
    own = model.state_dict()
    new = {}
    for key, shape in want.items():
        value = state[key]
        if not isinstance(value, Tensor):
            raise InputError(path, f"{key} is not a tensor ({type(value).__name__})")
        if tuple(value.shape) != shape:
            raise InputError(path, f"{key} has shape {tuple(value.shape)}, expected {shape} "
                                   f"(detector.width={model.dc.width})")
        if not torch.isfinite(value).all():
            raise InputError(path, f"{key} holds NaN or Inf values")
        if key in own:
            new[key] = value.to(own[key].dtype)
    for key, value in own.items():  # num_batches_tracked: keep the module's own
        new.setdefault(key, value)
    model.load_state_dict(new, strict=True)


def load_detector(path: str | Path, dc: DetectorConfig, device: str = "cpu") -> MaskRCNNC4:
    """Build the detector of ``dc`` and load ``path`` (``torch.load(weights_only=True)``) strictly;
    returned in eval mode on ``device``."""
    path = Path(path)
    model = MaskRCNNC4(dc)
    load_state(model, torch_load_weights(path, "detector checkpoint"), path)
    return model.to(device).eval()


def save_detector(model: MaskRCNNC4, path: str | Path, mask: Mapping[str, Tensor]) -> Path:
    """Write ``model`` plus the mask tensors ``mask`` as a plain state dict in the checkpoint's
    layout (no ``num_batches_tracked``), atomically."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state.update({k: v.detach().cpu().clone() for k, v in mask.items()})
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)
