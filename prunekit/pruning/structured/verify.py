"""Checks that channel removal is exact, and a stand-in for trained BN statistics when no trained model exists."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .core import StructuredResult, zeroed_reference
from .groups import describe


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0, *, gamma_scale: float = 1.0) -> nn.Module:
    """Give every BatchNorm random γ ~ U(0, gamma_scale), β ~ N(0, 0.1²), running mean ~ N(0, 0.1²) and running
    variance ~ U(0.5, 1.5), in place (a fake "sparsity-trained" model with distinct |γ| and tame activations)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * gamma_scale)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


@torch.no_grad()
def removal_error(original: nn.Module, result: StructuredResult, kind: str, input_size: Sequence[int],
                  batch: int = 2, seed: int = 0) -> float:
    """Max |pruned(x) − reference(x)| over a random batch, in eval mode, where the reference is ``original`` with
    γ and β of every removed channel set to zero (``kind``: ``"l1"`` or ``"bn"``, the groups that were pruned)."""
    ref = zeroed_reference(original, describe(original, kind), result.keep).eval()
    was = result.model.training
    result.model.eval()
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed))
    try:
        return float((ref(x) - result.model(x)).abs().max())
    finally:
        result.model.train(was)


def cumulative_keep(plan: dict) -> dict[str, list[int]]:
    """Kept channels per group of a (possibly composed) plan, in base-model positions."""
    return {name: list(g["kept"]) for name, g in plan.get("groups", {}).items()}
