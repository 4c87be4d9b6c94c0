"""Explicit weight masks: saved with the weights, enforced exactly under any optimizer.

A mask set is a ``dict[str, torch.BoolTensor]`` keyed by parameter name (``"features.0.weight"``), True = kept.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from ..engine.hooks import Hook

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


def sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked-out entries over all masked tensors."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def masks_from_zeros(model: nn.Module, names: list[str] | None = None) -> Masks:
    """Masks that keep exactly the non-zero entries of the named (default: all weight) parameters."""
    params = _params(model)
    names = names if names is not None else [n for n, p in params.items() if p.dim() > 1]
    return {n: params[n].detach() != 0 for n in names}


class MaskHook(Hook):
    """Keeps masked weights at exactly 0.0 during training.

    Gradients are masked before the step (so momentum/Adam state of pruned weights stays 0) and the weights are
    multiplied by the mask after the step (so weight decay, AdamW's decoupled decay, or a resumed optimizer state
    can never move them). Works the same under AMP and DDP: every rank applies the same mask.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.masks = dict(masks)
        self._cache: list[tuple[nn.Parameter, torch.Tensor]] | None = None

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Replace the enforced masks (e.g. with those of a resumed run)."""
        self.masks = dict(masks)
        self._cache = None

    def _pairs(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, pruned-entries bool tensor on its device) pairs, cached."""
        if self._cache is None:
            check_masks(model, self.masks)
            params = _params(model)
            self._cache = [(params[n], ~m.to(device=params[n].device, dtype=torch.bool))
                           for n, m in self.masks.items()]
        return self._cache

    @torch.no_grad()
    def on_fit_start(self, trainer) -> None:
        self._cache = None
        for p, pruned in self._pairs(trainer.module):
            p.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def after_backward(self, trainer) -> None:
        for p, pruned in self._pairs(trainer.module):
            if p.grad is not None:
                p.grad.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def after_step(self, trainer) -> None:
        for p, pruned in self._pairs(trainer.module):
            p.masked_fill_(pruned, 0.0)
