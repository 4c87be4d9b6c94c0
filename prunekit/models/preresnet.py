"""Pre-activation ResNets for CIFAR.

``preresnet164`` is the network-slimming model: bottleneck blocks whose first BN is followed by a
:class:`ChannelSelection`, so slimming can drop channels of the BN input without touching the residual stream.
``cfg`` is the slimming codebase's flat list of ``9n + 1`` ints (n = 18): per block ``[kept channels after
bn1/select, conv1 width, conv2 width]``, then the channels kept by the head's selection (= fc input).

``preresnet110`` uses pre-activation **basic** blocks (the kesi / iterative-pruning model): per block
BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3, + residual (1x1 conv, no BN, on the raw input when the
shape changes); ``cfg`` = the ``3n`` widths of each block's first conv.

Both end with BN -> ReLU -> global average pooling (the seeds' ``AvgPool2d(8)`` at 32x32) -> ``fc``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (ChannelSelection, check_at_most, check_cfg, flatten_cfg, init_conv_normal_fan_out,
                     residual_stages)
from .registry import NamedPlan, register_model
from .resnet_cifar import KESI_RATIOS, SENSITIVE_110

STAGE_PLANES = (16, 32, 64)


class Bottleneck(nn.Module):
    """Slimming pre-activation bottleneck; ``cfg = [selected in, conv1 out, conv2 out]``, output ``4*planes``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, cfg: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelection(inplanes, kept=cfg[0])
        self.conv1 = nn.Conv2d(cfg[0], cfg[1], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cfg[1])
        self.conv2 = nn.Conv2d(cfg[1], cfg[2], 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cfg[2])
        self.conv3 = nn.Conv2d(cfg[2], planes * 4, 1, bias=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


class PreResNetSlim(nn.Module):
    """Slimming PreResNet (bottleneck, depth ``9n + 2``) built from a flat ``9n + 1`` cfg."""

    def __init__(self, depth: int, cfg: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        n = (depth - 2) // 9
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages, inplanes = residual_stages(
            n, STAGE_PLANES, lambda cin, j, planes, stride: Bottleneck(cin, planes, cfg[3 * j:3 * j + 3], stride),
            expansion=4)
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelection(inplanes, kept=cfg[-1])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cfg[-1], num_classes)
        init_conv_normal_fan_out(self, bn_weight=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.select(self.bn(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def slim_default_cfg(depth: int = 164) -> list[int]:
    """The slimming codebase's unpruned cfg for a bottleneck PreResNet of this depth."""
    n = (depth - 2) // 9
    return flatten_cfg([[16, 16, 16]] + [[64, 16, 16]] * (n - 1) + [[64, 32, 32]] + [[128, 32, 32]] * (n - 1)
                       + [[128, 64, 64]] + [[256, 64, 64]] * (n - 1) + [[256]])


def _selection_limits(depth: int) -> list[int]:
    """Upper bound of every cfg entry: the BN width for selected entries, unbounded (large) otherwise."""
    n = (depth - 2) // 9
    big = 1 << 30
    limits = []
    inplanes = 16
    for planes in STAGE_PLANES:
        for _ in range(n):
            limits += [inplanes, big, big]
            inplanes = planes * 4
    return limits + [inplanes]


@register_model("preresnet164", family="preresnet_slimming", source="network slimming (Liu et al. 2017)")
def preresnet164(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """Network-slimming PreResNet-164 (bottleneck, n=18); cfg = flat list of 163 ints."""
    depth = 164
    if cfg is None:
        eff = slim_default_cfg(depth)
    else:
        eff = check_cfg("preresnet164", cfg, 9 * ((depth - 2) // 9) + 1)
        check_at_most("preresnet164", eff, _selection_limits(depth))
    model = PreResNetSlim(depth, eff, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = eff
    return model


class PreBasicBlock(nn.Module):
    """BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3, + residual (1x1 conv on raw x if needed)."""

    def __init__(self, inplanes: int, mid: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, padding=1, bias=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


class PreActNet(nn.Module):
    """The trunk every pre-activation CIFAR ResNet shares: 3×3 stem, three stages (``residual_stages``), a final
    BN-ReLU, global pooling and the linear head. Subclasses call :meth:`_build` with their block factory."""

    def _build(self, in_channels: int, n: int, make_block, num_classes: int, expansion: int = 1) -> None:
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages, inplanes = residual_stages(n, STAGE_PLANES, make_block, expansion=expansion)
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        init_conv_normal_fan_out(self, bn_weight=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PreResNetBasic(PreActNet):
    """Pre-activation basic-block ResNet (depth ``6n + 2``); ``cfg`` = first-conv width of each block."""

    def __init__(self, depth: int, cfg: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self._build(in_channels, (depth - 2) // 6,
                    lambda cin, j, planes, stride: PreBasicBlock(cin, cfg[j], planes, stride), num_classes)


@register_model("preresnet110", family="preresnet", source="kesi iterative L1-filter",
                iterative=NamedPlan("preresnet110", stage_ratios=KESI_RATIOS, skip=SENSITIVE_110))
def preresnet110(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """Pre-activation basic-block ResNet-110 (n=18); cfg = 54 first-conv widths (default 16/32/64)."""
    depth, n = 110, 18
    eff = [p for p in STAGE_PLANES for _ in range(n)] if cfg is None else check_cfg("preresnet110", cfg, 3 * n)
    model = PreResNetBasic(depth, eff, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = eff
    return model
