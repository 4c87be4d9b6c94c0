"""Per-architecture channel groups: what removing one channel of a layer touches.

A :class:`ChannelGroup` is one prunable set of channels (the outputs of a conv / the channels of a BN) with the
modules that are sliced on their output dimension and those sliced on their input dimension. Architectures are
recognised by class, so reduced-depth variants built with the family builders work as well as the zoo names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from ...errors import PrunekitError


@dataclass(frozen=True)
class ChannelGroup:
    """One prunable channel set.

    ``bn`` carries the channels' γ/β (slimming importance; zeroed in the exactness reference). ``conv`` produces them
    (L1 importance). Without ``select`` the group's channels are removed from ``out_modules`` and from the inputs of
    ``in_modules``; with ``select`` (a ChannelSelection after ``bn``) the BN is kept whole, the selection is set and
    only ``in_modules`` are sliced. ``size`` = channels the group has now (the selected ones for a select group).
    """

    name: str
    size: int
    bn: str | None
    conv: str | None
    out_modules: tuple[str, ...]
    in_modules: tuple[str, ...]
    select: str | None = None
    stage: int = 0
    layer_id: int | None = None
    aliases: tuple[str, ...] = ()


def family(model: nn.Module) -> str:
    """``"vgg"``, ``"resnet"`` (post-activation basic), ``"preact"`` (pre-activation basic: preresnet110, WRN),
    ``"preresnet_slim"`` (preresnet164) or ``"densenet"``; raise for anything else."""
    from ...models.densenet import DenseNet
    from ...models.preresnet import PreResNetBasic, PreResNetSlim
    from ...models.resnet_cifar import CifarResNet
    from ...models.vgg import VGG
    from ...models.wrn import WideResNet

    for cls, fam in ((VGG, "vgg"), (CifarResNet, "resnet"), (PreResNetBasic, "preact"), (WideResNet, "preact"),
                     (PreResNetSlim, "preresnet_slim"), (DenseNet, "densenet")):
        if isinstance(model, cls):
            return fam
    name = getattr(model, "prunekit_name", type(model).__name__)
    raise PrunekitError(f"structured pruning does not support model {name!r}; supported: vgg11-19(_l1), "
                        "resnet20-110, preresnet110, wrn_*, preresnet164, densenet40")


def conv_ids(model: nn.Module) -> dict[str, int]:
    """1-based index of every Conv2d in module order (the numbering of Li et al.'s layer ids)."""
    return {n: i + 1 for i, (n, _) in enumerate((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))}


def _vgg_groups(model: nn.Module, kind: str) -> list[ChannelGroup]:
    feats = list(model.features.named_children())
    cls = model.classifier
    head = "classifier" if isinstance(cls, nn.Linear) else "classifier.0"
    ids = conv_ids(model)
    convs = [(i, name) for i, (name, m) in enumerate(feats) if isinstance(m, nn.Conv2d)]
    groups, stage, k, last_stage_pos = [], 0, 0, 0
    stage_of = {}
    for i, (name, m) in enumerate(feats):
        if isinstance(m, nn.MaxPool2d):
            stage += 1
        elif isinstance(m, nn.Conv2d):
            stage_of[i] = stage
    for j, (i, name) in enumerate(convs):
        s = stage_of[i]
        k = k + 1 if s == last_stage_pos else 1
        last_stage_pos = s
        conv = f"features.{name}"
        bn = f"features.{feats[i + 1][0]}"
        nxt = f"features.{convs[j + 1][1]}" if j + 1 < len(convs) else head
        groups.append(ChannelGroup(name=conv, size=feats[i][1].out_channels, bn=bn, conv=conv,
                                   out_modules=(conv, bn), in_modules=(nxt,), stage=s, layer_id=ids[conv],
                                   aliases=(conv, bn, f"conv{s + 1}_{k}")))
    return groups


def _blocks(model: nn.Module) -> list[tuple[str, int, nn.Module]]:
    out = []
    for s, stage_name in enumerate(("layer1", "layer2", "layer3")):
        for i, block in enumerate(getattr(model, stage_name)):
            out.append((f"{stage_name}.{i}", s, block))
    return out


def _residual_groups(model: nn.Module, kind: str, bn_attr: str) -> list[ChannelGroup]:
    if kind != "l1":
        raise PrunekitError(f"network slimming is not defined for {getattr(model, 'prunekit_name', '?')}: "
                            "use vgg11-19, preresnet164 or densenet40")
    ids = conv_ids(model)
    groups = []
    for bname, s, block in _blocks(model):
        conv, bn = f"{bname}.conv1", f"{bname}.{bn_attr}"
        groups.append(ChannelGroup(name=conv, size=block.conv1.out_channels, bn=bn, conv=conv,
                                   out_modules=(conv, bn), in_modules=(f"{bname}.conv2",), stage=s,
                                   layer_id=ids[conv], aliases=(conv, bname, bn, f"conv{ids[conv]}")))
    return groups


def _select_group(name_bn: str, select: str, bn: nn.BatchNorm2d, sel: nn.Module, consumer: str,
                  stage: int) -> ChannelGroup:
    return ChannelGroup(name=name_bn, size=sel.num_kept(), bn=name_bn, conv=None, out_modules=(),
                        in_modules=(consumer,), select=select, stage=stage, aliases=(name_bn,))


def _preresnet_slim_groups(model: nn.Module, kind: str) -> list[ChannelGroup]:
    if kind == "l1":
        raise PrunekitError("L1-filter pruning is not defined for preresnet164 (use network slimming)")
    groups = []
    for bname, s, b in _blocks(model):
        groups.append(_select_group(f"{bname}.bn1", f"{bname}.select", b.bn1, b.select, f"{bname}.conv1", s))
        for conv, bn, nxt in (("conv1", "bn2", "conv2"), ("conv2", "bn3", "conv3")):
            groups.append(ChannelGroup(name=f"{bname}.{bn}", size=getattr(b, bn).num_features, bn=f"{bname}.{bn}",
                                       conv=f"{bname}.{conv}", out_modules=(f"{bname}.{conv}", f"{bname}.{bn}"),
                                       in_modules=(f"{bname}.{nxt}",), stage=s,
                                       aliases=(f"{bname}.{bn}", f"{bname}.{conv}")))
    groups.append(_select_group("bn", "select", model.bn, model.select, "fc", 2))
    return groups


def _densenet_groups(model: nn.Module, kind: str) -> list[ChannelGroup]:
    if kind == "l1":
        raise PrunekitError("L1-filter pruning is not defined for densenet40 (use network slimming)")
    groups = []
    for s, part in enumerate(("dense1", "trans1", "dense2", "trans2", "dense3")):
        mod = getattr(model, part)
        units = [(f"{part}.{i}", u) for i, u in enumerate(mod)] if isinstance(mod, nn.Sequential) else [(part, mod)]
        for uname, u in units:
            groups.append(_select_group(f"{uname}.bn1", f"{uname}.select", u.bn1, u.select, f"{uname}.conv1",
                                        s // 2))
    groups.append(_select_group("bn", "select", model.bn, model.select, "fc", 2))
    return groups


_DESCRIBERS: dict[str, Callable[[nn.Module, str], list[ChannelGroup]]] = {
    "vgg": _vgg_groups,
    "resnet": lambda m, k: _residual_groups(m, k, "bn1"),
    "preact": lambda m, k: _residual_groups(m, k, "bn2"),
    "preresnet_slim": _preresnet_slim_groups,
    "densenet": _densenet_groups,
}


def describe(model: nn.Module, kind: str) -> list[ChannelGroup]:
    """The prunable channel groups of ``model``: ``kind="l1"`` (conv filters) or ``"bn"`` (every BatchNorm2d)."""
    if kind not in ("l1", "bn"):
        raise ValueError(f"kind must be 'l1' or 'bn', got {kind!r}")
    return _DESCRIBERS[family(model)](model, kind)


def selected(model: nn.Module, select: str) -> list[int]:
    """Full-width positions currently let through by the ChannelSelection ``select``."""
    sel = dict(model.named_modules())[select]
    return torch.nonzero(sel.indexes).flatten().tolist()


def cfg_from_model(model: nn.Module) -> list[Any]:
    """The zoo cfg that rebuilds ``model``'s current shapes (see each family's docstring)."""
    fam = family(model)
    if fam == "vgg":
        return ["M" if isinstance(m, nn.MaxPool2d) else m.out_channels for m in model.features
                if isinstance(m, (nn.MaxPool2d, nn.Conv2d))]
    if fam in ("resnet", "preact"):
        return [b.conv1.out_channels for _, _, b in _blocks(model)]
    if fam == "preresnet_slim":
        cfg: list[Any] = []
        for _, _, b in _blocks(model):
            cfg += [b.select.num_kept(), b.conv1.out_channels, b.conv2.out_channels]
        return cfg + [model.select.num_kept()]
    return [m.num_kept() for n, m in model.named_modules() if n.endswith("select")]
