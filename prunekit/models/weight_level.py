"""The CIFAR models of Rethinking's weight-level experiments (seed 000, ``cifar/weight-level/models/cifar``).

These are the bearpaw/pytorch-classification definitions Rethinking prunes with one global magnitude threshold;
they differ from the slimming / l1-norm models of the same names elsewhere in this zoo, so they carry their own
names. Module names equal the seed's, so its ``state_dict`` files load.

* ``cifar_vgg11_bn`` / ``cifar_vgg13_bn`` / ``cifar_vgg16_bn`` / ``cifar_vgg19_bn`` (Rethinking's ``--arch vgg19_bn
  --depth 19``; MCTS's ``vgg*_bn_cifar`` baselines have the same structure and counts): conv3x3 **with bias** ->
  BN -> ReLU per width, ``'M'`` = max-pool 2, then ``AvgPool2d(2)`` (global pooling here) and one
  ``Linear(512, C)``. Seed init: conv N(0, sqrt(2 / (9 * in_channels))) (fan-in), bias 0; BN 1/0; Linear N(0, 0.01),
  bias 0. ``cfg`` = widths with ``'M'`` markers (the slimming VGG cfgs, which are the same lists).
* ``preresnet110_bottleneck`` (Rethinking's ``--arch preresnet --depth 110``): the seed picks **bottleneck**
  blocks for depth >= 44 with ``n = (depth - 2) // 9 = 12`` blocks per stage (9*12 + 2 = 110 layers);
  pre-activation block BN -> ReLU -> conv1x1 -> BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv1x1 (x4),
  + residual (``downsample`` = 1x1 conv, no BN, on the raw input where the shape changes); head BN -> ReLU ->
  ``AvgPool2d(8)`` (global here) -> ``Linear(256, C)``. Not the kesi basic-block ``preresnet110`` of this zoo and
  without the slimming channel selections of ``preresnet164``. Init: conv N(0, sqrt(2 / (k*k*out))), BN 1/0.
* ``densenet_bc_100`` (``--arch densenet --depth 100 --compressionRate 2``): DenseNet-BC, growth 12,
  ``(100 - 4) // 6 = 16`` bottleneck layers per dense block (BN -> ReLU -> conv1x1 -> 48 -> BN -> ReLU ->
  conv3x3 -> 12, concatenated), transitions BN -> ReLU -> conv1x1 to ``floor(C / 2)`` -> avg-pool 2
  (``ceil_mode`` so tiny inputs work; identical on even sizes); stem conv3x3 3 -> 24; head BN -> ReLU -> global
  pooling -> ``Linear(342, C)``. Init as the PreResNet.

``preresnet110_bottleneck`` and ``densenet_bc_100`` take no cfg.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import check_no_cfg, init_conv_normal_fan_out
from .preresnet import PreActNet
from .registry import register_model
from .vgg import DEFAULT_CFGS, _check_vgg_cfg

_SOURCE = "Rethinking weight-level (seed 000), cifar/weight-level/models/cifar"


# ------------------------------------------------------------------------------------------------------ VGG
class CifarVGGBN(nn.Module):
    """bearpaw/Rethinking CIFAR VGG with BN and conv biases; one ``Linear(cfg[-1], C)`` classifier."""

    def __init__(self, cfg: Sequence[Any], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.in_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _register_vgg(depth: int) -> None:
    name = f"cifar_vgg{depth}_bn"

    def build(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
        eff = _check_vgg_cfg(name, depth, cfg)
        model = CifarVGGBN(eff, num_classes=num_classes, in_channels=in_channels)
        model.prunekit_cfg = eff
        return model

    build.__name__ = name
    build.__doc__ = f"Rethinking weight-level CIFAR VGG-{depth}-BN (conv bias); cfg = widths with 'M' markers."
    register_model(name, input_size=(3, 32, 32), family="vgg_bn_bias", num_classes=10,
                   source=f"{_SOURCE}/vgg.py: vgg{depth}_bn",
                   notes="conv bias=True, BN, one Linear head; MCTS's vgg*_bn_cifar baselines are the same net",
                   tags=("cifar", "seed:rethinking", "seed:mcts"))(build)


for _depth in sorted(DEFAULT_CFGS):
    _register_vgg(_depth)


# ------------------------------------------------------------------------------------ PreResNet bottleneck
class PreBottleneck(nn.Module):
    """Pre-activation bottleneck (output ``4 * planes``); ``downsample`` = 1x1 conv on the raw input."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(x))


class PreResNetBottleneck(PreActNet):
    """Rethinking weight-level PreResNet (bottleneck, ``n`` blocks per stage, planes 16/32/64)."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self._build(in_channels, n, lambda cin, j, planes, stride: PreBottleneck(cin, planes, stride), num_classes,
                    expansion=4)


@register_model("preresnet110_bottleneck", input_size=(3, 32, 32), family="preresnet_bottleneck", num_classes=10,
                source=f"{_SOURCE}/preresnet.py: preresnet(depth=110)",
                notes="bottleneck blocks, n = (110 - 2) // 9 = 12 per stage; no channel selection",
                tags=("cifar", "seed:rethinking"))
def preresnet110_bottleneck(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """Rethinking weight-level PreResNet-110 (bottleneck, 12 blocks per stage); takes no cfg."""
    check_no_cfg("preresnet110_bottleneck", cfg)
    model = PreResNetBottleneck((110 - 2) // 9, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = None
    return model


# --------------------------------------------------------------------------------------------- DenseNet-BC
class BCLayer(nn.Module):
    """BN -> ReLU -> conv1x1 (-> 4k) -> BN -> ReLU -> conv3x3 (-> k), concatenated to the input."""

    def __init__(self, inplanes: int, growth: int, expansion: int = 4) -> None:
        super().__init__()
        planes = expansion * growth
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), 1)


class BCTransition(nn.Module):
    """BN -> ReLU -> conv1x1 -> avg-pool 2."""

    def __init__(self, inplanes: int, outplanes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, outplanes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2, ceil_mode=True)


class DenseNetBC(nn.Module):
    """DenseNet-BC for CIFAR: ``(depth - 4) // 6`` bottleneck layers per block, compression ``1 / reduction``."""

    def __init__(self, depth: int = 100, growth: int = 12, reduction: int = 2, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        n = (depth - 4) // 6
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        parts: list[nn.Module] = []
        for stage in range(3):
            layers = []
            for _ in range(n):
                layers.append(BCLayer(c, growth))
                c += growth
            parts.append(nn.Sequential(*layers))
            if stage < 2:
                out = int(math.floor(c // reduction))
                parts.append(BCTransition(c, out))
                c = out
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = parts
        self.bn = nn.BatchNorm2d(c)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        init_conv_normal_fan_out(self, bn_weight=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.dense1(self.conv1(x)))
        x = self.trans2(self.dense2(x))
        x = F.relu(self.bn(self.dense3(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("densenet_bc_100", input_size=(3, 32, 32), family="densenet_bc", num_classes=10,
                source=f"{_SOURCE}/densenet.py: densenet(depth=100, compressionRate=2)",
                notes="growth 12, 16 bottleneck layers per block, compression 0.5", tags=("cifar", "seed:rethinking"))
def densenet_bc_100(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """DenseNet-BC-100 (k = 12); takes no cfg."""
    check_no_cfg("densenet_bc_100", cfg)
    model = DenseNetBC(100, 12, 2, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = None
    return model
