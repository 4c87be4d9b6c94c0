"""Explicit weight masks as pure tensor functions: check, apply, count.

A mask set is a ``dict[str, torch.BoolTensor]`` keyed by parameter name (``"features.0.weight"``), True = kept.
Keeping masks exact while training is not done here: :class:`~prunekit.pruning.sparsifier.Sparsifier` (any loop)
and :class:`~prunekit.pruning.sparsifier.MaskHook` (prunekit's trainer) enforce them.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

Masks = dict[str, torch.Tensor]


def _params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Raise ``CheckpointError`` if a mask names no parameter of ``model`` or has the wrong shape."""
    from ..errors import CheckpointError

    params = _params(model)
    for name, m in masks.items():
        if name not in params:
            raise CheckpointError(f"mask for {name!r} matches no parameter of the model")
        if tuple(m.shape) != tuple(params[name].shape):
            raise CheckpointError(f"mask for {name!r} has shape {tuple(m.shape)}, parameter has "
                                  f"{tuple(params[name].shape)}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set every masked-out weight to exactly +0.0 in place (``masked_fill``, so no ``-0.0`` appears)."""
    params = _params(model)
    for name, m in masks.items():
        p = params[name]
        p.masked_fill_(~m.to(device=p.device, dtype=torch.bool), 0.0)


@torch.no_grad()
def mask_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the gradients of masked-out weights in place (keeps optimizer state of pruned weights at zero)."""
    params = _params(model)
    for name, m in masks.items():
        g = params[name].grad
        if g is not None:
            g.masked_fill_(~m.to(device=g.device, dtype=torch.bool), 0.0)


def mask_counts(masks: Mapping[str, torch.Tensor] | None) -> tuple[int, int]:
    """``(pruned, total)`` entries over all masked tensors (True = kept; ``(0, 0)`` for no masks).

    >>> mask_counts({"w": torch.tensor([[True, False], [False, False]])})
    (3, 4)
    """
    if not masks:
        return 0, 0
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.to(torch.bool).sum()) for m in masks.values())
    return total - kept, total


def sparsity(masks: Mapping[str, torch.Tensor] | None) -> float:
    """Fraction of masked-out entries over all masked tensors (0.0 for no masks).

    >>> sparsity({"a": torch.tensor([True, False]), "b": torch.tensor([False, False])})
    0.75
    """
    pruned, total = mask_counts(masks)
    return pruned / total if total else 0.0


def layer_sparsity(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Name -> fraction of masked-out entries of that tensor."""
    return {name: mask_counts({name: m})[0] / m.numel() if m.numel() else 0.0 for name, m in masks.items()}


def masks_from_zeros(model: nn.Module, names: list[str] | None = None) -> Masks:
    """Masks that keep exactly the non-zero entries of the named (default: all weight) parameters."""
    params = _params(model)
    names = names if names is not None else [n for n, p in params.items() if p.dim() > 1]
    return {n: params[n].detach() != 0 for n in names}
