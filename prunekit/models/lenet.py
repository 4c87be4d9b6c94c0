"""LeNet-5-Caffe as GPMT's ``LeNet5Caffe``: conv 20 5x5 -> ReLU -> maxpool 2 -> conv 50 5x5 -> ReLU -> maxpool 2
-> fc 500 -> ReLU -> fc C.

Like GPMT's model (and unlike Caffe's original MNIST example) both convs are followed by a ReLU. GPMT ends with
``log_softmax``; this model returns the logits (cross-entropy of either is the same loss). Flatten size: the 4x4
map of a 28x28 input (50 * 4 * 4 = 800 features); an ``AdaptiveAvgPool2d(4)`` before the flatten makes other
sizes work (it is the identity at 28x28). Inputs smaller than 16x16 (e.g. 8x8 digits) are zero-padded, centred,
to 16x16 first, the smallest size both 5x5 convs and pools accept. ``cfg = [conv1, conv2, fc1]`` widths, default
``[20, 50, 500]``; 431,080 parameters for 1 input channel and 10 classes. PyTorch default init.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .layers import check_cfg
from .registry import register_model

MIN_SIZE = 16
DEFAULT_CFG = [20, 50, 500]


def pad_to_min_size(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad the spatial dims up to ``MIN_SIZE`` (small inputs such as 8x8 digits); channels pass through.
    Wrapped for torch.fx: the size test stays a single traced call (structured pruning traces the model)."""
    h, w = x.shape[-2:]
    if h < MIN_SIZE or w < MIN_SIZE:
        ph, pw = max(MIN_SIZE - h, 0), max(MIN_SIZE - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x


torch.fx.wrap("pad_to_min_size")


class LeNet5(nn.Module):
    """LeNet-5-Caffe with a fixed 4x4 flatten grid."""

    def __init__(self, cfg: Sequence[int], num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        c1, c2, f1 = cfg
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(c2 * 16, f1)
        self.fc2 = nn.Linear(f1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_min_size(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


@register_model("lenet5", input_size=(1, 28, 28), family="lenet", source="GPMT LeNet5Caffe")
def lenet5(num_classes: int = 10, cfg: list | None = None, in_channels: int = 3) -> nn.Module:
    """LeNet-5-Caffe; cfg = [conv1, conv2, fc1] widths (default [20, 50, 500])."""
    eff = list(DEFAULT_CFG) if cfg is None else check_cfg("lenet5", cfg, 3)
    model = LeNet5(eff, num_classes=num_classes, in_channels=in_channels)
    model.prunekit_cfg = eff
    return model
