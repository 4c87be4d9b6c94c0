"""DenseNet-40 (growth 12, no bottleneck, no compression) as in the network-slimming codebase.

Every BN is followed by a :class:`ChannelSelection`; ``cfg`` lists, for every BN in module order (12 dense
layers, transition, 12, transition, 12, head), the number of channels its selection keeps, i.e. the input width
of the conv (or fc) after it: ``3n + 3`` entries (39 for depth 40). Growth and transition outputs are never pruned.
The head pools globally (the seed's ``AvgPool2d(8)`` at 32x32); transitions use ``avg_pool2d(2, ceil_mode=True)``
(identical on even sizes) so tiny inputs work.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import ChannelSelection, check_at_most, check_cfg, init_conv_normal_fan_out
from .registry import register_model


class DenseLayer(nn.Module):
    """BN -> select -> ReLU -> conv3x3(-> growth), concatenated to the input."""

    def __init__(self, inplanes: int, cfg: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelection(inplanes, kept=cfg)
        self.conv1 = nn.Conv2d(cfg, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    """BN -> select -> ReLU -> conv1x1 -> avg_pool2d(2)."""

    def __init__(self, inplanes: int, outplanes: int, cfg: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelection(inplanes, kept=cfg)
        self.conv1 = nn.Conv2d(cfg, outplanes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        return F.avg_pool2d(out, 2, ceil_mode=True)


def _bn_widths(depth: int, growth: int) -> list[int]:
    """Full width of every BN in module order (also the default cfg)."""
    n = (depth - 4) // 3
    widths = []
    c = 2 * growth
    for _stage in range(3):
        for _ in range(n):
            widths.append(c)
            c += growth
        widths.append(c)  # transition BN (stage 0, 1) or head BN (stage 2)
    return widths


class DenseNet(nn.Module):
    """Slimming DenseNet for CIFAR-sized inputs; ``cfg`` = kept channels of every BN (``3n + 3`` entries)."""

    def __init__(self, depth: int, cfg: Sequence[int], num_classes: int = 10, in_channels: int = 3,
                 growth: int = 12) -> None:
        super().__init__()
        n = (depth - 4) // 3
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        parts: list[nn.Module] = []
        for stage in range(3):
            base = stage * (n + 1)
            layers = []
            for i in range(n):
                layers.append(DenseLayer(c, cfg[base + i], growth))
                c += growth
            parts.append(nn.Sequential(*layers))
            if stage < 2:
                parts.append(Transition(c, c, cfg[base + n]))
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = parts
        self.bn = nn.BatchNorm2d(c)
        self.select = ChannelSelection(c, kept=cfg[-1])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cfg[-1], num_classes)
        init_conv_normal_fan_out(self, bn_weight=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = self.dense3(x)
        x = F.relu(self.select(self.bn(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("densenet40", family="densenet_slimming", source="network slimming (Liu et al. 2017)")
def densenet40(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """Network-slimming DenseNet-40 (growth 12); cfg = 39 BN input widths (default 24, 36, ..., 456)."""
    depth, growth = 40, 12
    full = _bn_widths(depth, growth)
    if cfg is None:
        eff = list(full)
    else:
        eff = check_cfg("densenet40", cfg, len(full))
        check_at_most("densenet40", eff, full)
    model = DenseNet(depth, eff, num_classes=num_classes, in_channels=in_channels, growth=growth)
    model.prunekit_cfg = eff
    return model
