"""Zero-pad pruned widths up to a multiple (an exact, export-time rewrite for runtimes with blocked conv layouts).

ONNX Runtime's fast CPU convolutions work on channel blocks (8 or 16 wide): a pruned model whose widths are not
multiples of the block runs those convs in a slower layout and can end up slower than the dense model
(docs/BENCHMARKS.md). Where the widths are fixed (a paper's plan, a global BN threshold) :func:`pad_widths`
restores hardware-friendly widths without changing the function: each padded channel gets a zero filter and zero
bias in its producer, zero scale and shift in its BatchNorm, and zero input columns in every consumer, so it carries
an exact 0 that nothing reads.

A channel group is padded when every producer and consumer is a plain conv/linear (no groups) whose channels are
exactly the group's, its norms are BatchNorms, and it has no parameter, selection or custom sites (residual
streams qualify: every producer of the sum is padded alike); other groups are left as they are and reported.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

import torch
import torch.nn as nn

from ...errors import check_number

log = logging.getLogger(__name__)

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _plain(m: nn.Module) -> bool:
    """A conv without groups or a linear: its channels can be appended to."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.groups == 1 and not m.transposed
    return isinstance(m, nn.Linear)


def _append(t: torch.Tensor, dim: int, extra: int, value: float = 0.0) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim=dim)


def _pad_side(m: nn.Module, side: str, extra: int) -> None:
    """Append ``extra`` zero output filters (and zero biases) or zero input columns to a plain conv/linear."""
    dim = 0 if side == "out" else 1
    m.weight = nn.Parameter(_append(m.weight.detach(), dim, extra), requires_grad=m.weight.requires_grad)
    if side == "out" and m.bias is not None:
        m.bias = nn.Parameter(_append(m.bias.detach(), 0, extra), requires_grad=m.bias.requires_grad)
    attr = {("out", True): "out_features", ("in", True): "in_features", ("out", False): "out_channels",
            ("in", False): "in_channels"}[(side, isinstance(m, nn.Linear))]
    setattr(m, attr, getattr(m, attr) + extra)


def _pad_norm(m: nn.Module, extra: int) -> None:
    if m.affine:
        m.weight = nn.Parameter(_append(m.weight.detach(), 0, extra))  # scale 0, shift 0: output exactly 0
        m.bias = nn.Parameter(_append(m.bias.detach(), 0, extra))
    if m.track_running_stats:
        m.running_mean = _append(m.running_mean, 0, extra)
        m.running_var = _append(m.running_var, 0, extra, 1.0)
    m.num_features += extra


def _width(m: nn.Module, side: str) -> int:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels if side == "out" else m.in_channels
    return m.out_features if side == "out" else m.in_features


def _paddable(group: Any, mods: dict[str, nn.Module]) -> str | None:
    """None if ``group`` can be padded at its end, else why not."""
    if group.params or group.select is not None or any(k[0] == "custom" for k in group.positions):
        return "it has parameter, selection or custom sites"
    if not group.producers or not group.consumers:
        return "no producer or no consumer"
    for name, side in [(p, "out") for p in group.producers] + [(c, "in") for c in group.consumers]:
        m = mods.get(name)
        if m is None or not _plain(m):
            return f"{name} is not a plain conv/linear"
        if _width(m, side) != group.size:  # it also has other channels (a concatenation) or a flattened map
            return f"{name} has {_width(m, side)} {side}put channels, not just these {group.size}"
    if any(not isinstance(mods.get(n), _NORMS) for n in group.norms):
        return "a norm that is not a BatchNorm"
    return None


def pad_widths(model: nn.Module, multiple: int, input_size: Sequence[int] | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) whose simple channel groups are zero-padded to a multiple of ``multiple``,
    computing exactly the same function. ``model.prunekit_padded`` lists ``{"group", "from", "to"}`` per padded
    group and ``prunekit_pad_skipped`` the groups that were not a multiple but could not be padded (with why).

    >>> import torch, prunekit
    >>> from prunekit.pruning.structured.pad import pad_widths
    >>> small = prunekit.prune_structured(prunekit.create_model("resnet20"), ratio=0.3).model.eval()
    >>> padded = pad_widths(small, 8)
    >>> x = torch.randn(2, 3, 32, 32)
    >>> bool((padded(x) - small(x)).abs().max() == 0), all(p["to"] % 8 == 0 for p in padded.prunekit_padded)
    (True, True)
    """
    from .pruner import graph_for

    multiple = check_number("multiple", multiple, low=1, high=4096, integer=True)
    out = copy.deepcopy(model).eval()
    graph = graph_for(out, input_size)
    mods = dict(out.named_modules())
    padded, skipped = [], []
    for g in graph.groups:
        target = -(-g.size // multiple) * multiple
        if target == g.size:
            continue
        why = _paddable(g, mods)
        if why is not None:
            skipped.append({"group": g.name, "size": g.size, "why": why})
            continue
        extra = target - g.size
        with torch.no_grad():
            for name in g.producers:
                _pad_side(mods[name], "out", extra)
            for name in g.norms:
                _pad_norm(mods[name], extra)
            for name in g.consumers:
                _pad_side(mods[name], "in", extra)
        padded.append({"group": g.name, "from": g.size, "to": target})
    log.debug("padded %d channel groups to multiples of %d; %d left as they are", len(padded), multiple, len(skipped))
    out.prunekit_padded = padded
    out.prunekit_pad_skipped = skipped
    return out
