"""Wide ResNets (Zagoruyko & Komodakis 2016), the standard CIFAR definition.

``depth = 6n + 4``, widths ``16, 16k, 32k, 64k``; pre-activation blocks BN -> ReLU -> conv3x3(stride) -> BN ->
ReLU -> dropout -> conv3x3, residual = the input, or a 1x1 conv on the **pre-activated** input when the shape
changes. Head BN -> ReLU -> global average pooling (``AvgPool2d(8)`` at 32x32) -> ``fc``.
``cfg`` = the ``3n`` widths of each block's first conv (iterative filter pruning touches only those).

Dropout (between the two convs of every block): 0.3 for every registered WRN, as the seeds train them:
kesi's ``wrn_28_10`` and GPMT's ``wrn-16-8``, ``wrn-16-10``, ``wrn-22-8``, ``wrn-28-8`` (GPMT's ``wrn_models``
table passes ``dropRate=0.3`` to all four). Set another rate with the model option
``create_model("wrn_28_8", dropout=0.0)`` (CLI: ``prunekit train --dropout P``); it is saved in checkpoints.
GPMT's WRN ends with ``log_softmax``; this one returns logits (the cross-entropy is the same). Use
:func:`wide_resnet` for other depths or widths.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PrunekitError
from .layers import check_cfg, residual_stages
from .registry import NamedPlan, register_model
from .resnet_cifar import KESI_RATIOS


class WideBlock(nn.Module):
    """Pre-activation wide basic block; ``mid`` = width of the first conv."""

    def __init__(self, inplanes: int, mid: int, planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.downsample is None else self.downsample(pre))

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}"


class WideResNet(nn.Module):
    """WRN-depth-k for CIFAR-sized inputs."""

    def __init__(self, depth: int, widen: int, cfg: Sequence[int], num_classes: int = 10, in_channels: int = 3,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages, inplanes = residual_stages(
            n, widths, lambda cin, j, planes, stride: WideBlock(cin, cfg[j], planes, stride, drop_rate))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def wide_resnet(depth: int, widen: int, num_classes: int = 10, cfg: Sequence[int] | None = None,
                in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """General WRN-``depth``-``widen`` builder; ``cfg`` = ``3n`` first-conv widths (default the stage widths)."""
    name = f"wrn_{depth}_{widen}"
    if depth < 10 or (depth - 4) % 6:
        raise PrunekitError(f"{name}: depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    if widen < 1:
        raise PrunekitError(f"{name}: widen factor must be >= 1, got {widen}")
    if not 0.0 <= drop_rate < 1.0:
        raise PrunekitError(f"{name}: drop_rate must be in [0, 1), got {drop_rate}")
    n = (depth - 4) // 6
    default = [w * widen for w in (16, 32, 64) for _ in range(n)]
    eff = default if cfg is None else check_cfg(name, cfg, 3 * n)
    model = WideResNet(depth, widen, eff, num_classes=num_classes, in_channels=in_channels, drop_rate=drop_rate)
    model.prunekit_cfg = eff
    return model


# (depth, widen) -> (default dropout, the seed that trains it)
WRN_DROPOUT = {(28, 10): 0.3, (16, 8): 0.3, (16, 10): 0.3, (22, 8): 0.3, (28, 8): 0.3}
_WRN_SOURCE = {(28, 10): "kesi iterative L1-filter (Li et al. 2017), WRN paper CIFAR setting"}


def _register(depth: int, widen: int) -> None:
    default_drop = WRN_DROPOUT[(depth, widen)]
    name = f"wrn_{depth}_{widen}"

    def build(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3,
              dropout: float = default_drop) -> nn.Module:
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise PrunekitError(f"{name}: option dropout must be a number in [0, 1), got {dropout!r}")
        model = wide_resnet(depth, widen, num_classes, cfg, in_channels, drop_rate=float(dropout))
        model.prunekit_options = {"dropout": float(dropout)}
        return model

    build.__name__ = name
    build.__doc__ = (f"WRN-{depth}-{widen}, dropout option (default {default_drop}); "
                     f"cfg = {3 * ((depth - 4) // 6)} first-conv widths.")
    register_model(name, family="wrn", source=_WRN_SOURCE.get((depth, widen), "GPMT wrn_models (dropRate 0.3)"),
                   notes=f"dropout {default_drop} between the block convs (option 'dropout')",
                   tags=("cifar", "options:dropout"), iterative=NamedPlan(name, stage_ratios=KESI_RATIOS))(build)


for _d, _k in WRN_DROPOUT:
    _register(_d, _k)
