"""Network slimming (Liu et al. 2017, REFERENCE §5): BN-γ L1 sparsity, global γ threshold, channel removal.

* :class:`BNL1Hook` — sparsity training: after backward, ``γ.grad += s·sign(γ)`` for every BatchNorm2d.
* :func:`prune_slimming` — one global threshold over |γ| of all BatchNorm2d layers,
  ``thr = sorted(|γ|)[int(total·percent)]``, keep ``|γ| > thr``; then physical removal (VGG, PreResNet-164,
  DenseNet-40). A layer that would lose every channel keeps its largest-|γ| channel (warning), or raises
  :class:`~prunekit.errors.EmptyLayerError` with ``strict_empty``. ``percent = 0`` keeps everything.
* :func:`prune_slimming_mask` — the mask implementation: the full model with γ and β of pruned channels zeroed and
  a mask set on those BN parameters, so :class:`~prunekit.pruning.masks.MaskHook` (used by every training command
  for checkpoint masks) keeps them at zero; a layer may go to zero channels.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ...engine.hooks import Hook
from ...errors import check_range
from ..masks import Masks, MaskHook
from .core import Keep, StructuredResult, candidates, channel_rows, finish, guard_empty, zeroed_reference
from .groups import ChannelGroup, describe

_BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


class BNL1Hook(Hook):
    """Sparsity training on BN scaling factors: ``γ.grad += s·sign(γ)`` for every BatchNorm2d (β is not penalised).

    Under ``--sync-bn`` every SyncBatchNorm layer is penalised.
    """

    def __init__(self, s: float) -> None:
        check_range("sparsity regularisation s", float(s), 0.0, float("inf"))
        self.s = float(s)

    @torch.no_grad()
    def after_backward(self, trainer) -> None:
        """Add the L1 subgradient to the γ gradients of ``trainer.module``."""
        add_bn_l1_grad(trainer.module, self.s)


@torch.no_grad()
def add_bn_l1_grad(model: nn.Module, s: float) -> None:
    """``γ.grad += s·sign(γ)`` for every BatchNorm2d of ``model`` that has a γ gradient."""
    if s == 0:
        return
    for m in model.modules():
        if isinstance(m, _BN_TYPES) and m.weight is not None and m.weight.grad is not None:
            m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=s)


class BNMaskHook(MaskHook):
    """:class:`MaskHook` over the BN γ/β masks of :func:`prune_slimming_mask` (gradients and values kept at 0)."""


def bn_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """Every BatchNorm2d of ``model`` with its name, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def global_threshold(model: nn.Module, percent: float) -> tuple[float, int]:
    """``(thr, total)``: ``thr = sorted(|γ| of all BatchNorm2d)[int(total·percent)]`` (``-inf`` at percent 0)."""
    check_range("--percent", percent, 0.0, 1.0, high_open=True)
    gammas = torch.cat([m.weight.detach().abs().flatten().to("cpu", torch.float64) for _, m in bn_layers(model)])
    total = int(gammas.numel())
    if percent == 0 or total == 0:
        return float("-inf"), total
    return float(torch.sort(gammas).values[int(total * percent)]), total


@torch.no_grad()
def slimming_keep(model: nn.Module, groups: Sequence[ChannelGroup], thr: float, *, strict_empty: bool = False,
                  guard: bool = True, notes: list[str] | None = None, percent: float | None = None) -> Keep:
    """Channels with ``|γ| > thr`` of every group (among those it has now)."""
    notes = notes if notes is not None else []
    mods = dict(model.named_modules())
    keep: Keep = {}
    for g in groups:
        gamma = mods[g.bn].weight.detach().abs().to("cpu", torch.float64)
        cand = candidates(model, g)
        kept = [c for c in cand if float(gamma[c]) > thr]
        if guard and cand:
            best = max(cand, key=lambda c: (float(gamma[c]), -c))
            kept = guard_empty(g, kept, best, strict=strict_empty, what=f"slimming at percent {percent}",
                               notes=notes)
        keep[g.name] = kept
    return keep


def _info(model: nn.Module, groups: Sequence[ChannelGroup], keep: Keep, thr: float, total: int,
          percent: float) -> dict[str, Any]:
    before = sum(len(candidates(model, g)) for g in groups)
    after = sum(len(keep[g.name]) for g in groups)
    return {"percent": percent, "threshold": thr, "bn_channels_total": total, "channels_before": before,
            "channels_kept": after, "channels_pruned": before - after,
            "realised_percent": round((before - after) / before, 6) if before else 0.0}


def prune_slimming(model: nn.Module, percent: float, *, strict_empty: bool = False) -> StructuredResult:
    """Network slimming with physical channel removal (vgg11-19, preresnet164, densenet40)."""
    groups = describe(model, "bn")
    thr, total = global_threshold(model, percent)
    notes: list[str] = []
    keep = slimming_keep(model, groups, thr, strict_empty=strict_empty, notes=notes, percent=percent)
    return finish(model, groups, keep, "slimming", notes, _info(model, groups, keep, thr, total, percent))


@torch.no_grad()
def bn_masks(model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, list[int]]) -> Masks:
    """Bool masks on ``<bn>.weight`` / ``<bn>.bias`` that are False on the channels not kept."""
    mods = dict(model.named_modules())
    masks: Masks = {}
    for g in groups:
        bn = mods[g.bn]
        m = torch.zeros(bn.num_features, dtype=torch.bool)
        m[list(keep[g.name])] = True
        if g.select:  # channels outside the current selection are dead already: keep their values untouched
            outside = torch.ones(bn.num_features, dtype=torch.bool)
            outside[candidates(model, g)] = False
            m |= outside
        masks[f"{g.bn}.weight"] = m
        masks[f"{g.bn}.bias"] = m.clone()
    return masks


def prune_slimming_mask(model: nn.Module, percent: float) -> tuple[nn.Module, Masks, StructuredResult]:
    """The mask implementation: ``(masked copy of model, BN γ/β masks, result)``; nothing is removed.

    ``result.model`` is the masked copy (same as the first item); ``result.plan`` is None-like (empty).
    """
    groups = describe(model, "bn")
    thr, total = global_threshold(model, percent)
    keep = slimming_keep(model, groups, thr, guard=False)
    masked = zeroed_reference(model, groups, keep)
    masks = bn_masks(model, groups, keep)
    info = _info(model, groups, keep, thr, total, percent)
    info["empty_layers"] = [g.name for g in groups if not keep[g.name]]
    plan = getattr(model, "prunekit_plan", None)
    if plan is not None:
        masked.prunekit_plan = copy.deepcopy(plan)
    res = StructuredResult(model=masked, plan=plan or {}, keep=keep, rows=channel_rows(model, groups, keep),
                           info=info)
    return masked, masks, res
