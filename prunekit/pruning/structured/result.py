"""The result of a structured prune (channels, heads, blocks): one type for every path."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ...models.hf import hf_spec
from .graph import DependencyGraph
from .plan import Plan


#: What a pruned copy keeps of how its model was built (zoo name, factory, Hugging Face class and config, ...).
IDENTITY_ATTRS = ("prunekit_name", "num_classes", "in_channels", "prunekit_factory", "prunekit_input_size",
                  "prunekit_options", "prunekit_hf")


def carry_identity(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src``'s build identity to its pruned copy ``dst``; a Hugging Face model records its dense class and
    config (``prunekit_hf``), which its checkpoints rebuild before the plan slices it."""
    for attr in IDENTITY_ATTRS:
        if hasattr(src, attr):
            setattr(dst, attr, copy.deepcopy(getattr(src, attr)))
    if not hasattr(dst, "prunekit_hf"):
        spec = hf_spec(src)
        if spec is not None:
            dst.prunekit_hf = spec


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
