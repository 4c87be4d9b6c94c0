"""Wanda (Sun et al. 2023): prune by ``|W_ij| · ‖X_j‖₂``, compared within each output row.

Every row reaches the same sparsity (``round(ratio * cols)`` pruned per row); with N:M, ``n`` of every ``m``
consecutive input columns of a row are kept. No weight is updated.
"""
from __future__ import annotations

import torch

from .selection import count_pruned, nm_keep, smallest_per_row


def wanda_scores(weight: torch.Tensor, column_norms: torch.Tensor) -> torch.Tensor:
    """``S_ij = |W_ij| · ‖X_j‖₂`` for a ``[out, cols]`` weight and per-column input norms."""
    return weight.abs().to(torch.float32) * column_norms.to(torch.float32).reshape(1, -1)


def wanda_mask(weight: torch.Tensor, column_norms: torch.Tensor, ratio: float | None = None,
               nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep mask (True = kept) of a ``[out, cols]`` weight: per-row ``ratio``, or N:M when ``nm=(n, m)``."""
    scores = wanda_scores(weight, column_norms)
    if nm is not None:
        return nm_keep(scores, nm[0], nm[1])
    return smallest_per_row(scores, count_pruned(float(ratio or 0.0), scores.shape[1]))
