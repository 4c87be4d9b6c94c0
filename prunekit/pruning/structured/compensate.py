"""Bias compensation after a structured prune (FLAP, An et al. 2024): the expected output is kept.

A consumer that loses input channels ``R`` loses, on average, ``W[:, R] · mean(X_R)``; adding that to its bias
(creating one if it has none) keeps its mean output over the calibration data. For a Linear this is exact in
expectation; for a convolution it is exact away from zero-padded borders. Applied after the exactness check (the
check is about the removal; compensation then changes the outputs on purpose).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn


@torch.no_grad()
def compensate_biases(pruned: nn.Module, dense: nn.Module, step_plan: Mapping, means: Mapping[str, torch.Tensor]
                      ) -> list[str]:
    """Add ``W[:, removed] · mean(X_removed)`` (dense weights, calibration means) to the bias of every pruned
    consumer with recorded means; return the names of the layers compensated."""
    dense_mods, pruned_mods = dict(dense.named_modules()), dict(pruned.named_modules())
    done = []
    for name, entry in step_plan.get("modules", {}).items():
        if "in" not in entry or name not in means or name not in pruned_mods:
            continue
        d, p = dense_mods[name], pruned_mods[name]
        removed = sorted(set(range(entry["in_full"])) - set(entry["in"]))
        if not removed:
            continue
        mu = means[name].to(d.weight.dtype)
        idx = torch.tensor(removed, dtype=torch.long)
        if isinstance(d, nn.Linear):
            shift = d.weight[:, idx] @ mu[idx]
        elif isinstance(d, nn.modules.conv._ConvNd) and d.groups == 1:
            shift = (d.weight[:, idx].flatten(2).sum(2) * mu[idx]).sum(1)
        else:
            continue
        shift = shift.index_select(0, torch.tensor(entry["out"], dtype=torch.long)) if "out" in entry else shift
        if p.bias is None:
            p.bias = nn.Parameter(shift.to(p.weight.device).clone())
        else:
            p.bias.add_(shift.to(p.bias.device))
        done.append(name)
    return done
