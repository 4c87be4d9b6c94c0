"""MCTS's CIFAR ResNets (seed 001, ``onion-rain/MCTS``, the models behind its baseline and weight-pruning tables).

Post-activation basic blocks with **1x1-conv ("option B") shortcuts**: conv3x3(stride) -> BN -> ReLU -> conv3x3 ->
BN, plus the shortcut, then ReLU. The shortcut is the identity, or -- where the stride or the width changes (the
first block of stages 2 and 3) -- a 1x1 conv (stride 2, no bias, **no BN**). Stage widths 16/32/64, stem conv3x3
3->16 + BN + ReLU, global average pooling, ``Linear(64, C)``. Parameter counts (CIFAR-10) are the ones MCTS's
baseline table prints: resnet20 272.28 k (= 272,282), resnet32 466.71 k, resnet44 661.15 k, resnet56 855.58 k,
"resnet110" 1.15 M.

**The "resnet110" quirk.** MCTS builds every depth with basic blocks and a per-stage repeat list; its
``resnet110`` passes ``[12, 12, 12]``, i.e. 12 blocks per stage = 6*12 + 2 = **74 layers**, not the 18 blocks
(110 layers) of He et al. ``mcts_resnet110`` reproduces that network (1,147,226 parameters) under MCTS's name;
``resnet110`` in this zoo is the real 110-layer one. The other depths are standard: n = 3, 5, 7, 9.

Module names follow MCTS (``features`` = [first conv, blocks...], block ``conv1/norm1/conv2/norm2/conv_shortcut``,
``classifier``), so an MCTS ``state_dict`` of these models loads as is. One MCTS revision of this file applies
``norm2`` *after* adding the shortcut; this model uses the standard order above (the parameter count is the same
either way). Init: PyTorch's defaults, as MCTS's file (it sets none).

``cfg`` = the ``3n`` widths of each block's first conv (MCTS's ``mid_channels``), default the stage widths.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import check_cfg
from .registry import register_model

STAGE_WIDTHS = (16, 32, 64)
# zoo name -> blocks per stage (MCTS's stage_repeat)
MCTS_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 12}


class FirstConv(nn.Module):
    """conv3x3 -> BN -> ReLU (MCTS's ``first_conv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm1(self.conv1(x)))


class MctsBasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + (identity | 1x1 conv), ReLU (MCTS's ``Basicneck``)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv_shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + shortcut)


class MctsResNet(nn.Module):
    """MCTS CIFAR ResNet with ``n`` basic blocks per stage; ``cfg`` = first-conv width of each block."""

    def __init__(self, n: int, cfg: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.ModuleList([FirstConv(in_channels, STAGE_WIDTHS[0])])
        c = STAGE_WIDTHS[0]
        for s, width in enumerate(STAGE_WIDTHS):
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                self.features.append(MctsBasicBlock(c, cfg[s * n + i], width, stride))
                c = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.features:
            x = block(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def _register(depth: int, n: int) -> None:
    name = f"mcts_resnet{depth}"

    def build(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
        default = [w for w in STAGE_WIDTHS for _ in range(n)]
        eff = default if cfg is None else check_cfg(name, cfg, 3 * n)
        model = MctsResNet(n, eff, num_classes=num_classes, in_channels=in_channels)
        model.prunekit_cfg = eff
        return model

    layers = 6 * n + 2
    build.__name__ = name
    build.__doc__ = (f"MCTS CIFAR ResNet-{depth} ({n} basic blocks per stage, {layers} layers), 1x1-conv "
                     f"shortcuts; cfg = {3 * n} first-conv widths.")
    notes = "option-B (1x1 conv, no BN) shortcuts"
    if layers != depth:
        notes += f"; MCTS's 'resnet{depth}' has {n} blocks per stage, i.e. {layers} layers (kept as MCTS has it)"
    register_model(name, input_size=(3, 32, 32), family="mcts_resnet", num_classes=10,
                   source="MCTS weight prune (seed 001), models/cifar/resnet_cifar.py", notes=notes,
                   tags=("cifar", "seed:mcts"))(build)


for _depth, _n in MCTS_DEPTHS.items():
    _register(_depth, _n)
