"""The zoo cfg of a (possibly pruned) model: the list that ``create_model(name, cfg=...)`` rebuilds it from.

Structured pruning slices any model generically (``pruning.structured.plan``); for the zoo families whose
builders take a cfg, :func:`current_cfg` also reads the pruned widths back as that cfg (the seeds' records of
pruned architectures, e.g. the slimming cfgs). Other models give None.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [b for stage in ("layer1", "layer2", "layer3") for b in getattr(model, stage)]


def current_cfg(model: nn.Module) -> list[Any] | None:
    """The cfg that rebuilds ``model``'s current shapes, for the CIFAR families with a cfg; None otherwise."""
    from .densenet import DenseNet
    from .preresnet import PreResNetBasic, PreResNetSlim
    from .resnet_cifar import CifarResNet
    from .vgg import VGG
    from .wrn import WideResNet

    if isinstance(model, VGG):
        return ["M" if isinstance(m, nn.MaxPool2d) else m.out_channels for m in model.features
                if isinstance(m, (nn.MaxPool2d, nn.Conv2d))]
    if isinstance(model, (CifarResNet, PreResNetBasic, WideResNet)):
        return [b.conv1.out_channels for b in _blocks(model)]
    if isinstance(model, PreResNetSlim):
        cfg: list[Any] = []
        for b in _blocks(model):
            cfg += [b.select.num_kept(), b.conv1.out_channels, b.conv2.out_channels]
        return cfg + [model.select.num_kept()]
    if isinstance(model, DenseNet):
        return [m.num_kept() for n, m in model.named_modules() if n.endswith("select")]
    return None
