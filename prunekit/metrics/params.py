"""Parameter counts: total and non-zero (exact zeros left by pruning do not count)."""
from __future__ import annotations

import torch
import torch.nn as nn


def _selected(model: nn.Module, trainable_only: bool) -> list[torch.Tensor]:
    # named_parameters() already de-duplicates shared (tied) parameters.
    return [p for _, p in model.named_parameters() if p.requires_grad or not trainable_only]


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter entries; with ``trainable_only`` only those with ``requires_grad``.

    Buffers (BN running statistics, channel-selection vectors, masks) are never counted.

    >>> import torch.nn as nn, prunekit
    >>> prunekit.count_params(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))   # 3*8*9 + 8 + 2*8
    240
    """
    return int(sum(p.numel() for p in _selected(model, trainable_only)))


@torch.no_grad()
def count_nonzero_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter entries that are not exactly zero (the size of a pruned model)."""
    return int(sum(int(torch.count_nonzero(p)) for p in _selected(model, trainable_only)))


_UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def format_count(n: float | int | None, precision: int = 2) -> str:
    """Human-readable count: ``20035018 -> "20.04M"``, ``1.2e9 -> "1.20G"``, ``512 -> "512"``, ``None -> "-"``."""
    if n is None:
        return "-"
    sign, a = ("-" if n < 0 else ""), abs(float(n))
    for i, (scale, unit) in enumerate(_UNITS):
        if a >= scale:
            value = round(a / scale, precision)
            if value >= 1000 and i > 0:  # 999,999 would read "1000.00K": use the next unit up
                scale, unit = _UNITS[i - 1]
                value = round(a / scale, precision)
            return f"{sign}{value:.{precision}f}{unit}"
    if float(a).is_integer():
        return f"{sign}{int(a)}"
    return f"{sign}{a:.{precision}f}"
