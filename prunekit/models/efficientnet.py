"""EfficientNet-B2 as GPMT builds it (seed 004): ``EfficientNet.from_name('efficientnet-b2')`` of the
lukemelas ``efficientnet_pytorch`` package, the same network for its ImageNet and CIFAR-10 runs.

B0's seven MBConv stages scaled by width 1.1 and depth 1.2 (``round_filters`` to multiples of 8,
``round_repeats = ceil(1.2 * r)``): stem conv3x3/2 3->32 + BN + swish; 23 MBConv blocks

=====  ======  ====  ======  =======  ======
stage  kernel  exp.  stride  out      blocks
=====  ======  ====  ======  =======  ======
1      3       1     1       16       2
2      3       6     2       24       3
3      5       6     2       48       3
4      3       6     2       88       4
5      5       6     1       120      4
6      5       6     2       208      5
7      3       6     1       352      2
=====  ======  ====  ======  =======  ======

each ``[expand 1x1 -> BN -> swish] -> depthwise kxk(stride) -> BN -> swish -> squeeze-excite (reduce to
max(1, int(0.25 * block input width)) channels, with biases) -> project 1x1 -> BN`` (+ identity with drop-connect
when stride 1 and widths equal); head conv1x1 352->1408 + BN + swish, global average pooling, dropout 0.3,
``Linear(1408, C)``. BN momentum 0.01, eps 1e-3. Drop-connect rate ``0.2 * block_index / 23`` (training only).
Convolutions use TF "SAME" padding computed from the actual input (lukemelas's dynamic same-padding; identical
to its static padding at the natural 260x260), so any input size works and weight files of that package load:
module names are its own (``_conv_stem``, ``_bn0``, ``_blocks.i._expand_conv``, ``_se_reduce``, ``_fc``, ...).
Init: PyTorch's defaults, as the package. Takes no cfg.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import check_no_cfg
from .registry import register_model

WIDTH, DEPTH, RESOLUTION, DROPOUT, DROP_CONNECT = 1.1, 1.2, 260, 0.3, 0.2
BN_MOMENTUM, BN_EPS = 0.01, 1e-3


class _Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_filters: int
    out_filters: int
    se_ratio: float = 0.25


# EfficientNet-B0 block arguments (r, k, s, e, i, o); B2 scales filters and repeats
B0_STAGES = (_Stage(1, 3, 1, 1, 32, 16), _Stage(2, 3, 2, 6, 16, 24), _Stage(2, 5, 2, 6, 24, 40),
             _Stage(3, 3, 2, 6, 40, 80), _Stage(3, 5, 1, 6, 80, 112), _Stage(4, 5, 2, 6, 112, 192),
             _Stage(1, 3, 1, 6, 192, 320))


def round_filters(filters: int, width: float = WIDTH, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (never below 90 %)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float = DEPTH) -> int:
    """Scale a block count by ``depth``, rounding up."""
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size (asymmetric when odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if ph > 0 or pw > 0:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM, eps=BN_EPS)


def drop_connect(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Per-sample stochastic depth: zero a whole sample's branch with probability ``p``, rescale the rest."""
    if not training or p <= 0:
        return x
    keep = 1.0 - p
    mask = torch.floor(keep + torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device))
    return x / keep * mask


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (lukemelas ``MBConvBlock``)."""

    def __init__(self, inp: int, out: int, kernel: int, stride: int, expand: int, se_ratio: float,
                 drop_connect_rate: float) -> None:
        super().__init__()
        self.inp, self.out, self.stride, self.expand = inp, out, stride, expand
        self.drop_connect_rate = drop_connect_rate
        mid = inp * expand
        if expand != 1:
            self._expand_conv = SameConv2d(inp, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        squeezed = max(1, int(inp * se_ratio))
        self._se_reduce = SameConv2d(mid, squeezed, 1)
        self._se_expand = SameConv2d(squeezed, mid, 1)
        self._project_conv = SameConv2d(mid, out, 1, bias=False)
        self._bn2 = _bn(out)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand != 1:
            x = F.silu(self._bn0(self._expand_conv(x)))
        x = F.silu(self._bn1(self._depthwise_conv(x)))
        s = self._se_expand(F.silu(self._se_reduce(F.adaptive_avg_pool2d(x, 1))))
        x = self._bn2(self._project_conv(torch.sigmoid(s) * x))
        if self.stride == 1 and self.inp == self.out:
            x = drop_connect(x, self.drop_connect_rate, self.training) + inputs
        return x

    def extra_repr(self) -> str:
        return f"drop_connect_rate={self.drop_connect_rate:.4f}"


def b2_blocks() -> list[tuple[int, int, int, int, int, float]]:
    """``(in, out, kernel, stride, expand, se_ratio)`` of every EfficientNet-B2 block, in order."""
    blocks = []
    for st in B0_STAGES:
        inp, out = round_filters(st.in_filters), round_filters(st.out_filters)
        for i in range(round_repeats(st.repeats)):
            blocks.append((inp if i == 0 else out, out, st.kernel, st.stride if i == 0 else 1, st.expand,
                           st.se_ratio))
    return blocks


class EfficientNetB2(nn.Module):
    """EfficientNet-B2 (lukemelas structure and names)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        stem = round_filters(32)
        self._conv_stem = SameConv2d(in_channels, stem, 3, stride=2, bias=False)
        self._bn0 = _bn(stem)
        spec = b2_blocks()
        self._blocks = nn.ModuleList(
            MBConvBlock(inp, out, k, s, e, se, DROP_CONNECT * idx / len(spec))
            for idx, (inp, out, k, s, e, se) in enumerate(spec))
        head = round_filters(1280)
        self._conv_head = SameConv2d(spec[-1][1], head, 1, bias=False)
        self._bn1 = _bn(head)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(DROPOUT)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.silu(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


@register_model("efficientnet_b2", input_size=(3, RESOLUTION, RESOLUTION), family="imagenet", num_classes=1000,
                source="GPMT (seed 004): efficientnet_pytorch EfficientNet.from_name('efficientnet-b2')",
                notes="width 1.1, depth 1.2, dropout 0.3, drop-connect 0.2; TF-SAME padding; global pooling, so "
                      "CIFAR-sized inputs work (GPMT trains the same network on CIFAR-10)",
                tags=("imagenet", "cifar", "seed:gpmt"))
def efficientnet_b2(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """EfficientNet-B2 (9,109,994 params at 1000 classes); takes no cfg."""
    check_no_cfg("efficientnet_b2", cfg)
    model = EfficientNetB2(num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = None
    return model
