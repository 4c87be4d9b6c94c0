"""Network slimming (Liu et al. 2017, REFERENCE §5): BN-γ L1 sparsity, global γ threshold, channel removal.

* :class:`BNL1Hook` — sparsity training: after backward, ``γ.grad += s·sign(γ)`` for every BatchNorm2d.
* :func:`prune_slimming` — one global threshold over |γ| of all BatchNorm2d layers,
  ``thr = sorted(|γ|)[int(total·percent)]``, keep ``|γ| > thr``; then physical removal (VGG, PreResNet-164,
  DenseNet-40). A layer that would lose every channel keeps its largest-|γ| channel (warning), or raises
  :class:`~prunekit.errors.EmptyLayerError` with ``strict_empty``. ``percent = 0`` keeps everything.
  ``round_to = N`` then rounds every layer's kept count to the nearest multiple of N (at least N; a layer no wider
  than N is left as the threshold made it) by adding back its largest-|γ| pruned channels or dropping its
  smallest-|γ| kept ones: widths runtimes' blocked conv kernels handle (``--round-to 8``, docs/BENCHMARKS.md).
* :func:`prune_slimming_mask` — the mask implementation: the full model with γ and β of pruned channels zeroed and
  a mask set on those BN parameters, so :class:`~prunekit.pruning.sparsifier.MaskHook` (used by every training command
  for checkpoint masks) keeps them at zero; a layer may go to zero channels.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ...engine.hooks import Hook
from ...errors import PrunekitError, check_range
from ..masks import Masks
from ..sparsifier import MaskHook
from .graph import DependencyGraph, Group
from .pruner import Keep, StructuredResult, candidates, channel_rows, finish, graph_for
from .selection import check_round_to, guard_empty, round_keep

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


def slimming_groups(model: nn.Module, input_size: Sequence[int] | None = None
                    ) -> tuple[DependencyGraph, list[Group]]:
    """The dependency graph of ``model`` and the groups slimming prunes (see the module docstring)."""
    graph = graph_for(model, input_size)
    groups = []
    for g in graph.groups:
        if g.select is not None and g.select in graph.select_scores:
            groups.append(g)
        elif g.select is None and len(g.norms) == 1 and g.norm_types == ("BatchNorm2d",) and len(g.producers) == 1 \
                and not g.params and all(len(p) == 1 for p in g.positions[("norm", g.norms[0])]):
            groups.append(g)
    if not groups:
        raise PrunekitError(f"{getattr(model, 'prunekit_name', None) or type(model).__name__} has no BatchNorm2d "
                            "whose channels can be removed: network slimming needs conv -> BN layers")
    return graph, groups


def _gamma_of(graph: DependencyGraph, g: Group) -> tuple[torch.Tensor, list[int]]:
    """|γ| over the group's BN (full width) and the candidate positions into it."""
    if g.select is not None:
        bn_name, _ = graph.select_scores[g.select]
    else:
        bn_name = g.norms[0]
    gamma = graph.modules[bn_name].weight.detach().abs().to("cpu", torch.float64)
    if g.select is not None:
        return gamma, candidates(graph, g)
    return gamma, [p[0] for p in g.positions[("norm", bn_name)]]


@torch.no_grad()
def slimming_keep(graph: DependencyGraph, groups: Sequence[Group], thr: float, *, strict_empty: bool = False,
                  guard: bool = True, notes: list[str] | None = None, percent: float | None = None,
                  round_to: int = 1) -> Keep:
    """Channels with ``|γ| > thr`` of every group (among those it has now), in :func:`candidates` terms; with
    ``round_to > 1`` each group's count rounded to a multiple of it (largest |γ| first, ties: lower channel)."""
    notes = notes if notes is not None else []
    keep: Keep = {}
    for g in groups:
        gamma, pos = _gamma_of(graph, g)
        cand = candidates(graph, g)
        kept = [c for c, p in zip(cand, pos) if float(gamma[p]) > thr]
        if round_to > 1 and cand:
            n = round_keep(len(kept), len(cand), round_to)
            ranked = sorted(zip(cand, pos), key=lambda cp: (-float(gamma[cp[1]]), cp[0]))
            kept = sorted(c for c, _ in ranked[:n])
        if guard and cand:
            best = max(zip(cand, pos), key=lambda cp: (float(gamma[cp[1]]), -cp[0]))[0]
            kept = guard_empty(g, kept, best, strict=strict_empty, what=f"slimming at percent {percent}",
                               notes=notes)
        keep[g.name] = kept
    return keep


def _info(graph: DependencyGraph, groups: Sequence[Group], keep: Keep, thr: float, total: int,
          percent: float) -> dict[str, Any]:
    before = sum(len(candidates(graph, g)) for g in groups)
    after = sum(len(keep[g.name]) for g in groups)
    return {"percent": percent, "threshold": thr, "bn_channels_total": total, "channels_before": before,
            "channels_kept": after, "channels_pruned": before - after,
            "realised_percent": round((before - after) / before, 6) if before else 0.0}


def prune_slimming(model: nn.Module, percent: float, *, strict_empty: bool = False,
                   input_size: Sequence[int] | None = None, verify: bool = True,
                   round_to: int = 1) -> StructuredResult:
    """Network slimming with physical channel removal on any model with conv -> BatchNorm2d layers; ``round_to``:
    every layer's kept count a multiple of it (see the module docstring)."""
    check_range("--percent", percent, 0.0, 1.0, high_open=True)
    round_to = check_round_to(round_to)
    graph, groups = slimming_groups(model, input_size)
    thr, total = global_threshold(model, percent)
    notes: list[str] = []
    keep = slimming_keep(graph, groups, thr, strict_empty=strict_empty, notes=notes, percent=percent,
                         round_to=round_to)
    info = _info(graph, groups, keep, thr, total, percent)
    info["round_to"] = round_to
    res = finish(graph, groups, keep, "slimming", notes, info)
    if verify:
        from .verify import check_exact

        check_exact(model, res, graph.example)
    return res


@torch.no_grad()
def bn_masks(graph: DependencyGraph, groups: Sequence[Group], keep: Mapping[str, list[int]]) -> Masks:
    """Bool masks on ``<bn>.weight`` / ``<bn>.bias`` that are False on the channels not kept (channels outside a
    selection are dead already: their values are left untouched)."""
    masks: Masks = {}
    for g in groups:
        gamma, pos = _gamma_of(graph, g)
        bn_name = graph.select_scores[g.select][0] if g.select is not None else g.norms[0]
        m = torch.ones(gamma.numel(), dtype=torch.bool)
        kept = set(keep[g.name])
        for c, p in zip(candidates(graph, g), pos):
            if c not in kept:
                m[p] = False
        masks[f"{bn_name}.weight"] = m
        masks[f"{bn_name}.bias"] = m.clone()
    return masks


@torch.no_grad()
def _masked_copy(model: nn.Module, masks: Masks) -> nn.Module:
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    for k, m in masks.items():
        params[k].mul_(m.to(params[k].device, params[k].dtype))
    return out


def prune_slimming_mask(model: nn.Module, percent: float, *, input_size: Sequence[int] | None = None,
                        round_to: int = 1) -> tuple[nn.Module, Masks, StructuredResult]:
    """The mask implementation: ``(masked copy of model, BN γ/β masks, result)``; nothing is removed.

    ``result.model`` is the masked copy (same as the first item); ``result.plan`` is None-like (empty).
    ``round_to`` as in :func:`prune_slimming`.
    """
    check_range("--percent", percent, 0.0, 1.0, high_open=True)
    round_to = check_round_to(round_to)
    graph, groups = slimming_groups(model, input_size)
    thr, total = global_threshold(model, percent)
    keep = slimming_keep(graph, groups, thr, guard=False, round_to=round_to)
    masks = bn_masks(graph, groups, keep)
    masked = _masked_copy(model, masks)
    info = _info(graph, groups, keep, thr, total, percent)
    info["round_to"] = round_to
    info["empty_layers"] = [g.name for g in groups if not keep[g.name]]
    plan = getattr(model, "prunekit_plan", None)
    if plan is not None:
        masked.prunekit_plan = copy.deepcopy(plan)
    res = StructuredResult(model=masked, plan=plan or {}, keep=keep, rows=channel_rows(graph, groups, keep),
                           info=info, graph=graph)
    return masked, masks, res
