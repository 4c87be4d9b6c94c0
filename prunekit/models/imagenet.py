"""ImageNet models with torchvision's module structure, so state_dict keys and shapes match torchvision's
(``resnet18``, ``resnet34``, ``resnet50``, ``vgg16_bn``, ``mobilenet_v2``) and a torchvision weights file loads.
Inits follow torchvision (conv Kaiming-normal fan_out, BN 1/0; VGG/MobileNet Linear N(0, 0.01), bias 0).

Optional cfgs (for structured pruning; the default reproduces torchvision exactly):
ResNet-18/34: output width of each block's conv1 (one int per block); ResNet-50: ``[conv1, conv2]`` widths of
each bottleneck (two ints per block, flattened); VGG-16-BN: torchvision's cfg 'D' (widths with ``'M'``).
MobileNet-V2 takes no cfg.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import PrunekitError
from .layers import check_cfg, check_no_cfg
from .registry import register_model

_IMAGENET = dict(input_size=(3, 224, 224), family="imagenet", num_classes=1000, source="torchvision structure")


def _init_torchvision(model: nn.Module, linear_normal: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_normal:
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


class BasicBlock(nn.Module):
    """torchvision BasicBlock; ``mid`` = conv1 output width."""

    expansion = 1

    def __init__(self, inplanes: int, mids: Sequence[int], planes: int, stride: int,
                 downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, mids[0], stride)
        self.bn1 = nn.BatchNorm2d(mids[0])
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(mids[0], planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision Bottleneck (stride on the 3x3 conv, "ResNet v1.5"); ``mids`` = conv1, conv2 widths."""

    expansion = 4

    def __init__(self, inplanes: int, mids: Sequence[int], planes: int, stride: int,
                 downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, mids[0], 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mids[0])
        self.conv2 = _conv3x3(mids[0], mids[1], stride)
        self.bn2 = nn.BatchNorm2d(mids[1])
        self.conv3 = nn.Conv2d(mids[1], planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision ResNet layout: conv1, bn1, relu, maxpool, layer1..4, avgpool, fc."""

    def __init__(self, block: type, layers: Sequence[int], cfg: Sequence[int], num_classes: int = 1000,
                 in_channels: int = 3) -> None:
        super().__init__()
        per_block = 1 if block is BasicBlock else 2
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, k = 64, 0
        for s, (planes, count) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for i in range(count):
                stride = 2 if (s > 0 and i == 0) else 1
                out = planes * block.expansion
                downsample = None
                if i == 0 and (stride != 1 or inplanes != out):
                    downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                               nn.BatchNorm2d(out))
                blocks.append(block(inplanes, cfg[k:k + per_block], planes, stride, downsample))
                k += per_block
                inplanes = out
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        _init_torchvision(self, linear_normal=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet(name: str, block: type, layers: Sequence[int], num_classes: int, cfg: list | None,
            in_channels: int) -> nn.Module:
    per_block = 1 if block is BasicBlock else 2
    default = [p for p, c in zip((64, 128, 256, 512), layers) for _ in range(c * per_block)]
    eff = default if cfg is None else check_cfg(name, cfg, len(default))
    model = ResNet(block, layers, eff, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = eff
    return model


@register_model("resnet18", 
                **_IMAGENET)
def resnet18(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-18 (11,689,512 params at 1000 classes); cfg = 8 conv1 widths."""
    return _resnet("resnet18", BasicBlock, (2, 2, 2, 2), num_classes, cfg, in_channels)


@register_model("resnet34", 
                **_IMAGENET)
def resnet34(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-34 (21,797,672 params at 1000 classes); cfg = 16 conv1 widths."""
    return _resnet("resnet34", BasicBlock, (3, 4, 6, 3), num_classes, cfg, in_channels)


@register_model("resnet50", 
                **_IMAGENET)
def resnet50(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-50 (25,557,032 params at 1000 classes); cfg = 32 ints, [conv1, conv2] per block."""
    return _resnet("resnet50", Bottleneck, (3, 4, 6, 3), num_classes, cfg, in_channels)


VGG16_CFG: list[Any] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                        512, 512, 512, "M"]


class VGGImageNet(nn.Module):
    """torchvision VGG with BN: features, avgpool (7x7), classifier (3 Linear, 2 Dropout 0.5)."""

    def __init__(self, cfg: Sequence[Any], num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, num_classes))
        _init_torchvision(self, linear_normal=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg16_bn", 
                **_IMAGENET)
def vgg16_bn(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """torchvision VGG-16-BN (138,365,992 params at 1000 classes); cfg = the 18-entry 'D' list."""
    if cfg is None:
        eff = list(VGG16_CFG)
    else:
        eff = check_cfg("vgg16_bn", cfg, len(VGG16_CFG), allow_pool=True)
        for i, (v, d) in enumerate(zip(eff, VGG16_CFG)):
            if (v == "M") != (d == "M"):
                raise PrunekitError(f"vgg16_bn: cfg[{i}] must be {'M' if d == 'M' else 'a width'}, got {v!r}")
    model = VGGImageNet(eff, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = eff
    return model


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNet-V2 block: [1x1 expand] -> 3x3 depthwise(stride) -> 1x1 linear projection (+ identity)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel=1))
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """torchvision MobileNet-V2 (width 1.0): features (0..18), classifier (Dropout 0.2, Linear)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        c = _make_divisible(32)
        last = _make_divisible(1280)
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, c, stride=2)]
        for t, ch, n, s in MOBILENET_V2_SETTING:
            out = _make_divisible(ch)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(_conv_bn_relu6(c, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
        _init_torchvision(self, linear_normal=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


@register_model("mobilenet_v2", 
                **_IMAGENET)
def mobilenet_v2(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """torchvision MobileNet-V2 (3,504,872 params at 1000 classes); takes no cfg."""
    check_no_cfg("mobilenet_v2", cfg)
    model = MobileNetV2(num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = None
    return model
