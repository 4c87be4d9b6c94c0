"""The result of a structured prune (channels, heads, blocks): one type for every path."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from .graph import DependencyGraph
from .plan import Plan


@dataclass
class StructuredResult:
    """Outcome of a structured prune.

    ``model``: the physically smaller copy. ``plan``: the cumulative plan relative to the base model
    (``model.prunekit_plan``). ``keep``: kept channels per pruned group in this step (unit indexes; for a
    ChannelSelection group the full-width positions it lets through). ``rows``: per-group channel counts.
    ``warnings``: groups that would have lost every channel (kept at one). ``info``: method-specific numbers,
    including ``max_abs_diff`` / ``rel_diff`` when verified.
    """

    model: nn.Module
    plan: Plan
    keep: dict[str, list[int]]
    rows: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    graph: DependencyGraph | None = None
    removed: dict[str, list[int]] = field(default_factory=dict)
    step_plan: Plan = field(default_factory=dict)
