"""The CIFAR models of GPMT's ``model_list.py`` (seed 004), plus the CIFAR MobileNet-V1 its users reach for.

* ``cifar_resnet18/34/50/101/152``: GPMT's ``ResNet18() .. ResNet152()`` (the kuangliu/pytorch-cifar ResNets):
  stem conv3x3 3->64 (stride 1) + BN + ReLU, **no max-pool**, four stages of widths 64/128/256/512 (strides
  1/2/2/2), basic blocks (18/34) or bottlenecks x4 (50/101/152), shortcut = 1x1 conv (stride) + BN where the shape
  changes, global average pooling (GPMT's ``avg_pool2d(out, 4)`` at 32x32), ``linear``. GPMT trains
  ``resnet50_cifar10`` with it.
* ``cifar_mobilenet_v2``: GPMT's ``MobileNetV2`` ("MobileNet-V2-kuangliu-CIFAR10", its ``mobilenet_v2_cifar10``):
  stem stride 1 and the second stage at stride 1 (both 2 in the ImageNet net), blocks ``conv1`` 1x1 expand ->
  ``conv2`` 3x3 depthwise -> ``conv3`` 1x1 project with ReLU (not ReLU6), a 1x1 conv + BN **shortcut** on the
  stride-1 blocks whose width changes (the ImageNet net has none), ``conv2`` 320->1280, global pooling, ``linear``.
  (GPMT's second CIFAR MobileNet-V2, ``MobileNetV2_Distiller``, cannot be constructed: its ``__init__`` calls
  ``super(MobileNetV2, self)`` on an unrelated class.)
* ``mobilenet_v1``: GPMT's ``MobileNetV1`` exactly: the ImageNet network (stem stride 2, 13 depthwise-separable
  blocks, ``AvgPool2d(7)``, ``fc`` **without bias**); GPMT never selects it in its scripts. Natural input 224.
* ``cifar_mobilenet_v1``: GPMT has no CIFAR MobileNet-V1, so this follows the widely used kuangliu/pytorch-cifar
  ``MobileNet`` (stem stride 1, the same 13 blocks, ``avg_pool2d(out, 2)`` at 32x32, ``linear`` with bias).

Module names equal the seeds' (``conv1``, ``bn1``, ``layer1``.., ``shortcut``, ``linear``; ``layers``; ``model``,
``fc``), so their ``state_dict`` files load. Every head pools globally, so any input of at least 1x1 after the
strides works. Init: PyTorch's defaults, as in the seeds (they set none). None of these models takes a cfg.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import check_no_cfg
from .registry import register_model

_GPMT = "GPMT model_list.py (seed 004)"


# ------------------------------------------------------------------------------------------------- ResNets
class KBasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut (1x1 conv + BN if the shape changes), ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class KBottleneck(nn.Module):
    """1x1 -> BN -> ReLU -> 3x3(stride) -> BN -> ReLU -> 1x1 (x4) -> BN, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class KResNet(nn.Module):
    """kuangliu/GPMT CIFAR ResNet: 3x3 stem, stages 64/128/256/512, global pooling, ``linear``."""

    def __init__(self, block: type, num_blocks: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.avgpool(out), 1))


CIFAR_RESNETS = {18: (KBasicBlock, (2, 2, 2, 2)), 34: (KBasicBlock, (3, 4, 6, 3)), 50: (KBottleneck, (3, 4, 6, 3)),
                 101: (KBottleneck, (3, 4, 23, 3)), 152: (KBottleneck, (3, 8, 36, 3))}


def _register_resnet(depth: int) -> None:
    block, blocks = CIFAR_RESNETS[depth]
    name = f"cifar_resnet{depth}"

    def build(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
        check_no_cfg(name, cfg)
        model = KResNet(block, blocks, num_classes=num_classes, in_channels=in_channels)
        model.prunekit_cfg = None
        return model

    build.__name__ = name
    build.__doc__ = f"GPMT/kuangliu CIFAR ResNet-{depth} (blocks {list(blocks)}); takes no cfg."
    register_model(name, input_size=(3, 32, 32), family="cifar_resnet", num_classes=10,
                   source=f"{_GPMT}: ResNet{depth}() (kuangliu/pytorch-cifar)",
                   notes="3x3 stride-1 stem, no max-pool; 1x1 conv + BN shortcuts", tags=("cifar", "seed:gpmt"))(build)


for _d in CIFAR_RESNETS:
    _register_resnet(_d)


# --------------------------------------------------------------------------------------------- MobileNet-V2
class KMBv2Block(nn.Module):
    """expand 1x1 -> depthwise 3x3(stride) -> project 1x1; shortcut on stride-1 blocks (1x1 conv + BN if the
    width changes)."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


# (expansion, out_planes, num_blocks, stride); stage 2 at stride 1 for CIFAR, as GPMT/kuangliu
CIFAR_MOBILENET_V2_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                          (6, 160, 3, 2), (6, 320, 1, 1))


class KMobileNetV2(nn.Module):
    """GPMT's kuangliu CIFAR MobileNet-V2."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers = []
        c = 32
        for expansion, out_planes, n, stride in CIFAR_MOBILENET_V2_CFG:
            for s in [stride] + [1] * (n - 1):
                layers.append(KMBv2Block(c, out_planes, expansion, s))
                c = out_planes
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(self.layers(out))))
        return self.linear(torch.flatten(self.avgpool(out), 1))


@register_model("cifar_mobilenet_v2", input_size=(3, 32, 32), family="cifar_mobilenet", num_classes=10,
                source=f"{_GPMT}: MobileNetV2 (MobileNet-V2-kuangliu-CIFAR10, arch mobilenet_v2_cifar10)",
                notes="stride-1 stem and stage 2; 1x1 conv + BN shortcuts where the width changes",
                tags=("cifar", "seed:gpmt"))
def cifar_mobilenet_v2(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """GPMT's CIFAR MobileNet-V2 (kuangliu); takes no cfg."""
    check_no_cfg("cifar_mobilenet_v2", cfg)
    model = KMobileNetV2(num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = None
    return model


# --------------------------------------------------------------------------------------------- MobileNet-V1
# (out_planes, stride) of the 13 depthwise-separable blocks (both MobileNet-V1 definitions)
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                       (512, 1), (512, 1), (1024, 2), (1024, 1))


class KMBv1Block(nn.Module):
    """depthwise 3x3(stride) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU (kuangliu ``Block``)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, in_planes, 3, stride=stride, padding=1, groups=in_planes, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class KMobileNetV1(nn.Module):
    """kuangliu CIFAR MobileNet(-V1): stride-1 stem, 13 blocks, global pooling, ``linear``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers, c = [], 32
        for out_planes, stride in MOBILENET_V1_BLOCKS:
            layers.append(KMBv1Block(c, out_planes, stride))
            c = out_planes
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(self.avgpool(out), 1))


@register_model("cifar_mobilenet_v1", input_size=(3, 32, 32), family="cifar_mobilenet", num_classes=10,
                source="kuangliu/pytorch-cifar MobileNet (GPMT defines only the ImageNet MobileNetV1)",
                notes="stride-1 stem; GPMT's own MobileNetV1 is `mobilenet_v1`", tags=("cifar",))
def cifar_mobilenet_v1(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """kuangliu CIFAR MobileNet-V1; takes no cfg."""
    check_no_cfg("cifar_mobilenet_v1", cfg)
    model = KMobileNetV1(num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = None
    return model


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class MobileNetV1(nn.Module):
    """GPMT's ``MobileNetV1``: ``model`` = stem (stride 2) + 13 ``conv_dw`` + pooling; ``fc`` without bias.

    GPMT pools with ``AvgPool2d(7)`` (the 7x7 map of a 224 input); here ``model[14]`` is a global average pool,
    identical at 224 and usable at any size.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 32, 2)]
        c = 32
        for out_planes, stride in MOBILENET_V1_BLOCKS:
            layers.append(_conv_dw(c, out_planes, stride))
            c = out_planes
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.model(x), 1))


@register_model("mobilenet_v1", input_size=(3, 224, 224), family="imagenet", num_classes=1000,
                source=f"{_GPMT}: MobileNetV1", notes="fc without bias, as GPMT; stride-2 stem (ImageNet net)",
                tags=("imagenet", "seed:gpmt"))
def mobilenet_v1(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """GPMT's MobileNet-V1 (ImageNet structure, bias-free fc); takes no cfg."""
    check_no_cfg("mobilenet_v1", cfg)
    model = MobileNetV1(num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = None
    return model
