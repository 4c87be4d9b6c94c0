"""CIFAR VGG: the network-slimming VGG (``vgg11..19``) and the l1-norm-pruning VGG (``vgg11_l1..vgg19_l1``).

Trunk: conv3x3 (no bias) -> BN -> ReLU per width, ``'M'`` = MaxPool2d(2). Head: global average pooling (the seeds'
``AvgPool2d(2)`` on the 2x2 map of a 32x32 input, generalised to any input size) then
``Linear(cfg[-1], C)`` (slimming) or ``Linear(cfg[-1], 512) -> BatchNorm1d -> ReLU -> Linear(512, C)`` (l1-norm).
``cfg`` = the list of conv widths with ``'M'`` markers, same length and ``'M'`` positions as the default.
Max pools use ``ceil_mode=True`` so that tiny inputs (8x8) never shrink to zero; identical on even sizes.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import PrunekitError
from .layers import check_cfg, init_conv_normal_fan_out
from .registry import NamedPlan, register_model

_M = "M"
DEFAULT_CFGS: dict[int, list[Any]] = {
    11: [64, _M, 128, _M, 256, 256, _M, 512, 512, _M, 512, 512],
    13: [64, 64, _M, 128, 128, _M, 256, 256, _M, 512, 512, _M, 512, 512],
    16: [64, 64, _M, 128, 128, _M, 256, 256, 256, _M, 512, 512, 512, _M, 512, 512, 512],
    19: [64, 64, _M, 128, 128, _M, 256, 256, 256, 256, _M, 512, 512, 512, 512, _M, 512, 512, 512, 512],
}
#: The convs Li et al. 2017's VGG-16 plan A prunes by half (and kesi's iterative rounds by a quarter each).
VGG16_A_LAYERS = ("conv1_1", "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")


def _check_vgg_cfg(name: str, depth: int, cfg: Sequence[Any] | None) -> list[Any]:
    default = DEFAULT_CFGS[depth]
    if cfg is None:
        return list(default)
    cfg = check_cfg(name, cfg, len(default), allow_pool=True)
    for i, (v, d) in enumerate(zip(cfg, default)):
        if (v == _M) != (d == _M):
            raise PrunekitError(f"{name}: cfg[{i}] must be {'M' if d == _M else 'a width'} "
                                f"(pool positions {[j for j, x in enumerate(default) if x == _M]}), got {v!r}")
    return cfg


def make_vgg_features(cfg: Sequence[Any], in_channels: int) -> nn.Sequential:
    """conv3x3(no bias) -> BN -> ReLU for each width, MaxPool2d(2, ceil_mode=True) for each ``'M'``."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == _M:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(v),
                       nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Slimming / l1-norm VGG for CIFAR-sized inputs; ``l1_head`` selects the 2-layer l1-norm classifier."""

    def __init__(self, cfg: Sequence[Any], num_classes: int = 10, in_channels: int = 3,
                 l1_head: bool = False) -> None:
        super().__init__()
        self.features = make_vgg_features(cfg, in_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        last = [v for v in cfg if v != _M][-1]
        if l1_head:
            self.classifier: nn.Module = nn.Sequential(nn.Linear(last, 512), nn.BatchNorm1d(512),
                                                       nn.ReLU(inplace=True), nn.Linear(512, num_classes))
        else:
            self.classifier = nn.Linear(last, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_normal_fan_out(self, bn_weight=0.5)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _builder(depth: int, l1_head: bool):
    name = f"vgg{depth}" + ("_l1" if l1_head else "")

    def build(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
        eff = _check_vgg_cfg(name, depth, cfg)
        model = VGG(eff, num_classes=num_classes, in_channels=in_channels, l1_head=l1_head)
        model.prunekit_cfg = eff
        return model

    build.__name__ = name
    build.__doc__ = (f"{'l1-norm' if l1_head else 'Network-slimming'} VGG-{depth}; cfg = widths with 'M' "
                     f"markers (default {DEFAULT_CFGS[depth]}).")
    plans = {f"vgg{depth}-A": NamedPlan(name, ratio=0.5, layers=VGG16_A_LAYERS)} if name == "vgg16_l1" else {}
    iterative = NamedPlan(name, ratio=0.25, layers=VGG16_A_LAYERS) if name == "vgg16_l1" else None
    return register_model(name, family="vgg_l1" if l1_head else "vgg",
                          source="L1-norm filter pruning" if l1_head else "network slimming", plans=plans,
                          iterative=iterative)(build)


for _depth in sorted(DEFAULT_CFGS):
    _builder(_depth, l1_head=False)
    _builder(_depth, l1_head=True)
