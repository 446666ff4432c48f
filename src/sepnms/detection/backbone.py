"""Caffe-style ResNet (MAttNet's ``resnet_v1``): the C4 trunk and the stride-1 layer4.

Built from torchvision ``Bottleneck`` blocks, named like ``torchvision.models.resnet101`` so a
``resnet.*`` state dict loads as is (``conv1``, ``bn1``, ``layer1.0.downsample.0`` ..., ``fc``).
Caffe style: the stride of a stage's first block sits on its 1x1 ``conv1`` (torchvision puts it
on the 3x3).  layer2/layer3 have stride 2, layer4 stride 1 (``Layer4Head``, the project's head,
whose forward ends with the spatial mean).  ``width`` scales every stage (64 = ResNet-101).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from sepnms.models.head import Layer4Head


def _stage(in_ch: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    out_ch = planes * Bottleneck.expansion
    down = None
    if stride != 1 or in_ch != out_ch:
        down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
    first = Bottleneck(in_ch, planes, stride=stride, downsample=down)
    first.conv1.stride, first.conv2.stride = (stride, stride), (1, 1)  # caffe: stride on the 1x1
    return nn.Sequential(first, *[Bottleneck(out_ch, planes) for _ in range(blocks - 1)])


class CaffeResNet(nn.Module):
    """conv1 7x7/2 + BN + ReLU + maxpool 3x3/2 -> layer1 (s1) -> layer2 (s2) -> layer3 (s2) = C4
    (16 x width channels, stride 16); layer4 (stride 1, 32 x width channels); ``fc`` is unused
    (present because the checkpoint holds it)."""

    def __init__(self, width: int = 64, blocks: Sequence[int] = (3, 4, 23, 3), num_fc: int = 1000):
        super().__init__()
        w = int(width)
        self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(w, w, blocks[0], 1)
        self.layer2 = _stage(4 * w, 2 * w, blocks[1], 2)
        self.layer3 = _stage(8 * w, 4 * w, blocks[2], 2)
        self.layer4 = Layer4Head(16 * w, 8 * w, 32 * w, blocks[3])
        self.fc = nn.Linear(32 * w, num_fc)
        self.c4_channels, self.out_channels = 16 * w, 32 * w

    def c4(self, x: Tensor) -> Tensor:
        """x [B, 3, H, W] -> C4 [B, 16w, ceil(H/16), ceil(W/16)]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.c4(x)
