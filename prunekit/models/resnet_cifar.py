"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016, as in the l1-norm-pruning codebase).

Post-activation basic blocks, ``n = (depth - 2) / 6`` blocks per stage, stage widths 16/32/64, stem
conv3x3 -> BN -> ReLU, global average pooling (the seed's ``AvgPool2d(8)`` for 32x32 inputs), ``fc``.
Shortcut "option A": ``AvgPool2d(2)`` + zero-padded channels, no parameters.
``cfg`` = ``3n`` ints, the output width of each block's **first** conv (the residual stream is never pruned).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PrunekitError
from .layers import ShortcutA, check_cfg, init_conv_normal_fan_out, residual_stages
from .registry import NamedPlan, register_model

STAGE_WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU. ``mid`` = width of the first conv."""

    def __init__(self, inplanes: int, mid: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module | None = (ShortcutA(inplanes, planes, stride)
                                           if stride != 1 or inplanes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + residual)


class CifarResNet(nn.Module):
    """ResNet for 32x32-like inputs; ``cfg`` gives each block's first-conv width (``3n`` entries)."""

    def __init__(self, depth: int, cfg: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        stages, _ = residual_stages(
            n, STAGE_WIDTHS, lambda cin, j, planes, stride: BasicBlock(cin, cfg[j], planes, stride),
            inplanes=STAGE_WIDTHS[0])
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        init_conv_normal_fan_out(self, bn_weight=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def default_cfg(depth: int) -> list[int]:
    """The unpruned cfg: ``n`` times each stage width."""
    n = (depth - 2) // 6
    return [w for w in STAGE_WIDTHS for _ in range(n)]


def cifar_resnet(depth: int, num_classes: int = 10, cfg: Sequence[int] | None = None,
                 in_channels: int = 3) -> CifarResNet:
    """General builder for any ``depth = 6n + 2``."""
    if depth < 8 or (depth - 2) % 6:
        raise PrunekitError(f"resnet{depth}: depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    name = f"resnet{depth}"
    eff = default_cfg(depth) if cfg is None else check_cfg(name, cfg, 3 * ((depth - 2) // 6))
    model = CifarResNet(depth, eff, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = eff
    return model


def _register(depth: int) -> None:
    def build(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
        return cifar_resnet(depth, num_classes, cfg, in_channels)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth}; cfg = {(depth - 2) // 2} first-conv widths."
    name = f"resnet{depth}"
    register_model(name, family="resnet_cifar", source="L1-norm filter pruning (Li et al. 2017)",
                   plans={k: v for k, v in NAMED_PLANS.items() if v.model == name},
                   iterative=ITERATIVE.get(name))(build)


#: Li et al. 2017's published plans (Table 1): per-stage ratios, the sensitive convs (1-based ids) kept whole.
NAMED_PLANS = {
    "resnet56-A": NamedPlan("resnet56", stage_ratios=(0.1, 0.1, 0.1), skip_ids=(16, 20, 38, 54)),
    "resnet56-B": NamedPlan("resnet56", stage_ratios=(0.6, 0.3, 0.1), skip_ids=(16, 18, 20, 34, 38, 54)),
    "resnet110-A": NamedPlan("resnet110", stage_ratios=(0.5, 0.0, 0.0), skip_ids=(36,)),
    "resnet110-B": NamedPlan("resnet110", stage_ratios=(0.5, 0.4, 0.3), skip_ids=(36, 38, 74)),
}
#: Per-round defaults of iterative L1-filter pruning (kesi, seed 002): stage ratios and the sensitive blocks kept.
KESI_RATIOS = (0.1, 0.2, 0.3)
SENSITIVE_110 = ("layer1.17", "layer2.0", "layer3.0")
ITERATIVE = {
    "resnet56": NamedPlan("resnet56", stage_ratios=KESI_RATIOS, skip=("layer1.7", "layer2.0", "layer3.0", "layer3.8")),
    "resnet110": NamedPlan("resnet110", stage_ratios=KESI_RATIOS, skip=SENSITIVE_110),
}

for _d in (20, 32, 44, 56, 110):
    _register(_d)
