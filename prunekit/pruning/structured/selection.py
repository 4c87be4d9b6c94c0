"""Which units of the groups a structured prune removes: per-group ratios, one global ranking, budgets.

Pure functions of scores (one array per group, higher = keep) and group sizes; :func:`~.pruner.prune_structured`,
the latency target and user code compose them.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ...errors import EmptyLayerError, check_number
from .graph import Group


def guard_empty(g: Group, kept: list[int], fallback: int, *, strict: bool, what: str,
                notes: list[str]) -> list[int]:
    """Return ``kept``, or ``[fallback]`` noted in ``notes`` (or :class:`EmptyLayerError` when ``strict``) if empty.
    :func:`finish` turns the notes of one prune into one warning."""
    if kept:
        return kept
    msg = f"{what} would remove every channel of layer {g.name}"
    if strict:
        raise EmptyLayerError(msg + " (drop --strict-empty to keep its strongest channel instead)")
    notes.append(msg + f"; kept its strongest channel {fallback}")
    return [fallback]


def keep_count(size: int, ratio: float) -> int:
    """``floor(size·(1−ratio))``, robust to binary rounding (``10·(1−0.9)`` is 1, not 0)."""
    return int(math.floor(size * (1.0 - ratio) + 1e-9))


def check_round_to(round_to: Any) -> int:
    """``round_to`` as an int in [1, 65536] (the CLI's bounds), else one PrunekitError naming it."""
    return int(check_number("round_to", round_to, low=1, high=65536, integer=True))


def round_keep(n_keep: int, size: int, round_to: int) -> int:
    """``n_keep`` rounded to the nearest multiple of ``round_to`` (at least ``round_to``, at most ``size``); a group
    no wider than ``round_to`` keeps ``n_keep``."""
    if round_to <= 1 or size <= round_to:
        return n_keep
    return min(size, max(round_to, int(round(n_keep / round_to)) * round_to))


def top_units(scores: np.ndarray, n_keep: int) -> list[int]:
    """Indexes of the ``n_keep`` largest scores (ties: lower index first), in increasing order."""
    order = torch.sort(torch.as_tensor(scores), descending=True, stable=True).indices
    return sorted(order[:n_keep].tolist())


def select_uniform(groups: Sequence[Group], scores: Mapping[str, np.ndarray], ratio: float,
             round_to: int, *, strict: bool = False, notes: list[str] | None = None) -> dict[str, list[int]]:
    """Each group keeps ``floor(size·(1−ratio))`` (rounded to ``round_to``) of its best units; a group that would
    keep none keeps its best one (noted), or raises with ``strict``."""
    removed = {}
    notes = notes if notes is not None else []
    for g in groups:
        n_keep = round_keep(keep_count(g.size, ratio), g.size, round_to)
        if n_keep == 0:
            best = top_units(scores[g.name], 1)
            guard_empty(g, [], best[0], strict=strict, what=f"structured pruning at ratio {ratio}", notes=notes)
            n_keep = 1
        kept = set(top_units(scores[g.name], n_keep))
        removed[g.name] = [u for u in range(g.size) if u not in kept]
    return removed


def global_order(groups: Sequence[Group], scores: Mapping[str, np.ndarray], normalize: bool
                  ) -> list[tuple[str, int]]:
    """All units of all groups, least important first (scores divided by their group's mean if ``normalize``)."""
    items = []
    for gi, g in enumerate(groups):
        s = np.asarray(scores[g.name], dtype=np.float64)
        if normalize:
            mean = float(s.mean()) if s.size else 0.0
            s = s / mean if mean > 0 else s
        for u, v in enumerate(s.tolist()):
            items.append((v, gi, u))
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    return [(groups[gi].name, u) for _, gi, u in items]


def global_take(groups: Sequence[Group], order: Sequence[tuple[str, int]], k: int, round_to: int,
                 max_ratio: float) -> dict[str, list[int]]:
    """Remove the first ``k`` units of ``order`` that leave every group at least one unit (and at most
    ``max_ratio`` of it removed); then round each group's kept count to a multiple of ``round_to`` (taking more of
    its least important units, or giving back its most important removed ones)."""
    size = {g.name: g.size for g in groups}
    cap = {n: min(s - 1, int(math.floor(s * max_ratio + 1e-9))) for n, s in size.items()}
    removed: dict[str, list[int]] = {g.name: [] for g in groups}
    taken = 0
    for name, u in order:
        if taken >= k:
            break
        if len(removed[name]) < cap[name]:
            removed[name].append(u)
            taken += 1
    if round_to > 1:
        per_group: dict[str, list[int]] = {g.name: [] for g in groups}
        for name, u in order:
            per_group[name].append(u)
        for name, rm in removed.items():
            if not rm:
                continue
            n_keep = round_keep(size[name] - len(rm), size[name], round_to)
            removed[name] = per_group[name][:max(0, size[name] - n_keep)]
    return {n: sorted(v) for n, v in removed.items()}


def search(fn: Callable[[int], float], lo: int, hi: int, ok: Callable[[float], bool]) -> int:
    """Smallest k in [lo, hi] with ok(fn(k)) (fn monotone); hi if none."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(fn(mid)):
            hi = mid
        else:
            lo = mid + 1
    return lo
