"""The world's detector: a seeded, narrow Mask R-CNN C4 in MAttNet's exact key layout.

``write_world_detector`` writes ``<world>/detector/res101_mask_rcnn_world.pth`` (every key of the
real checkpoint: ``resnet.*`` incl. ``fc``, RPN, box predictors, mask branch; widths from the
config's ``detector`` section) and the world's head features are this trunk's C4 maps, so
``features.source: images`` reproduces ``head_feats/`` exactly.

A random network finds no objects, so the world's ``rpn_*.pkl`` stay simulated; but a plain random
trunk would also blur the colours the world's expressions talk about.  The weights are therefore
random *with structure*: the stem's first channels are 7x7 box averages of the B, G, R pixels
shifted positive by ``bn1`` (ReLU keeps them), every stage's 1x1 downsample copies its input's
channels into the first output channels, and the residual branches write nothing into those
channels (``bn3`` scale 0 there) - so the first C4 channels are the local mean colours, linearly
decodable, and the others random non-linear features of the patch.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sepnms.config import DetectorConfig
from sepnms.detection.checkpoint import expected_keys, save_detector
from sepnms.detection.detector import MaskRCNNC4

WORLD_CHECKPOINT = "detector/res101_mask_rcnn_world.pth"
#: pixels minus the BGR means lie in about [-123, 153]; scaled by this and shifted by
#: STEM_SHIFT they stay positive through the stem's ReLU
STEM_SCALE, STEM_SHIFT = 1.0 / 64.0, 2.5
#: scale of every residual branch's last BN (keeps the activations O(1) through the blocks)
RESIDUAL_SCALE = 0.25


def _copy_channels(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """A 1x1 conv that copies input channel i to output channel i (i < min(in, out)), identity BN."""
    w = torch.zeros_like(conv.weight)
    n = min(w.shape[0], w.shape[1])
    w[torch.arange(n), torch.arange(n), 0, 0] = 1.0
    conv.weight.copy_(w)
    bn.weight.fill_(1.0), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps)


@torch.no_grad()
def world_detector(dc: DetectorConfig, seed: int) -> tuple[MaskRCNNC4, dict[str, torch.Tensor]]:
    """The seeded world detector (eval mode) and its mask-branch tensors."""
    g = torch.Generator().manual_seed(int(seed))
    model = MaskRCNNC4(dc)
    for name, p in model.named_parameters():  # plain seeded Gaussian weights, He-scaled
        if p.dim() > 1:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        else:
            p.zero_()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0), m.bias.zero_(), m.running_mean.zero_(), m.running_var.fill_(1.0 - m.eps)
    r = model.resnet
    colour = min(3, r.conv1.out_channels)
    r.conv1.weight[:colour].zero_()
    for c in range(colour):
        r.conv1.weight[c, c] = 1.0 / 49.0
    r.bn1.weight.fill_(STEM_SCALE)
    r.bn1.weight[colour:].fill_(0.5)
    r.bn1.bias.fill_(0.0)
    r.bn1.bias[:colour].fill_(STEM_SHIFT)
    keep = colour
    for layer in (r.layer1, r.layer2, r.layer3, r.layer4):
        for k, block in enumerate(layer):
            block.bn3.weight.fill_(RESIDUAL_SCALE)
            block.bn3.weight[:keep].zero_()   # the colour channels pass through untouched
            if block.downsample is not None:
                _copy_channels(block.downsample[0], block.downsample[1])
    for m in (model.cls_score_net, model.bbox_pred_net, model.rpn_cls_score_net, model.rpn_bbox_pred_net):
        m.weight.mul_(0.01)
    mask = {k: torch.randn(shape, generator=g) * 0.01 for k, shape in expected_keys(model).items()
            if k.startswith("mask_")}
    return model.eval(), mask


def write_world_detector(out_dir: Path, dc: DetectorConfig, seed: int) -> tuple[MaskRCNNC4, Path]:
    """Write the world's checkpoint under ``out_dir``; returns (model, path)."""
    model, mask = world_detector(dc, seed)
    return model, save_detector(model, Path(out_dir) / WORLD_CHECKPOINT, mask)


def world_detector_config(cfg) -> DetectorConfig:
    """The world's detector section: ``cfg.detector`` with ``width = model.feat_channels / 16`` and
    the world's resize (short side ``round(1.25 * world.image_size)``, as MAttNet's ~600 px for
    ~480 px COCO images)."""
    from sepnms.errors import SepNMSError

    channels = int(cfg.model.feat_channels)
    if channels % 16 or int(cfg.model.feat_stride) != cfg.detector.feat_stride:
        raise SepNMSError(f"the world's detector needs model.feat_channels a multiple of 16 (C4 = 16 x "
                          f"detector.width), got {channels}, and model.feat_stride = detector.feat_stride")
    return cfg.detector.model_copy(update={"width": channels // 16,
                                           "test_scale": int(round(RESIZED_SHORT_RATIO * cfg.world.image_size))})


#: the resized image's short side, as a fraction of cfg.world.image_size (MAttNet upsamples the
#: short side to 600, a scale of about 1.25 for COCO; here to 1.25 x image_size, so the scale is
#: != 1, varies by image shape, and a small object still covers a few stride-16 cells)
RESIZED_SHORT_RATIO = 1.25
