"""Mask selection shared by the calibrated methods: exact counts, ties broken by position (lower index pruned).

Masks are bool tensors, True = kept, as everywhere in prunekit. N:M follows :mod:`prunekit.pruning.nm`: of every
``m`` consecutive input columns a row keeps ``n`` (2:4 keeps 2 of 4).
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch

from ...errors import PrunekitError


def count_pruned(ratio: float, n: int) -> int:
    """``round(ratio * n)``, half up, exactly from the decimal value of ``ratio`` (as ``prune_unstructured``)."""
    return int(math.floor(Fraction(repr(float(ratio))) * n + Fraction(1, 2)))


def check_nm_divides(name: str, cols: int, m: int) -> None:
    """A PrunekitError naming the layer when its ``cols`` input columns are not a multiple of ``m``."""
    if cols % m:
        raise PrunekitError(f"N:M sparsity with m={m} does not divide layer {name}: it has {cols} input columns "
                            f"(not a multiple of {m}); exclude it or pick another M")


def smallest_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep mask pruning the ``k`` smallest scores of every row (stable: the lower column goes first on ties)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, idx, False)
    return keep


def smallest_overall(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep mask pruning the ``k`` smallest entries of the whole matrix (row-major position breaks ties)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        idx = torch.sort(scores.flatten(), stable=True).indices[:k]
        keep[idx] = False
    return keep.view_as(scores)


def nm_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep mask with ``n`` of every ``m`` consecutive columns of each row kept (the ``m - n`` smallest pruned)."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    keep = torch.ones_like(groups, dtype=torch.bool)
    idx = torch.sort(groups, dim=2, stable=True).indices[..., : m - n]
    keep.scatter_(2, idx, False)
    return keep.reshape(rows, cols)
