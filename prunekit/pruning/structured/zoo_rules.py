"""Channel rules for prunekit's own layers (registered on import through the public extension API).

* :class:`~prunekit.models.layers.ChannelSelection` (network slimming): its input channels are kept whole (FIXED);
  its outputs are new channels whose importance is the γ of the BatchNorm feeding it, and removing them sets the
  selection instead of slicing that BatchNorm.
* :class:`~prunekit.models.layers.ShortcutA` (parameter-free option-A shortcut): input channels pass through, the
  zero-padded ones are FIXED; removing input channels shrinks both widths by as many, so the padding is unchanged.
* LeNet-5's ``pad_to_min_size`` (spatial padding of small inputs): channels pass through.

:func:`selection_consumer` finds the one layer reading a selection's output (for
:func:`prunekit.deploy.fold_selections`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.layers import ChannelSelection, ShortcutA
from ...models.lenet import pad_to_min_size
from .rules import ELEMENTWISE, Ch, RuleContext, register_function_rule, register_module_rule


def channel_selection_rule(ctx: RuleContext) -> Ch:
    """Selection output = new channels (the selected positions); the input is never pruned through it."""
    m: ChannelSelection = ctx.module
    ctx.fix(ctx.ch(0))
    kept = torch.nonzero(m.indexes).flatten().tolist()
    out = ctx.new(len(kept))
    ctx.site("select_out", ctx.name, out, full=int(m.indexes.numel()), kept=kept,
             spatial=tuple(ctx.out.shape[2:]), module_type="ChannelSelection")
    src = ctx.graph.producer_of(ctx.node.args[0])
    if src is not None:
        bn = ctx.graph.modules.get(src)
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            ctx.graph.select_scores[ctx.name] = (src, kept)
    return Ch(1, out)


def shortcut_a_rule(ctx: RuleContext) -> Ch:
    """Option-A shortcut: input channels continue at the same positions, the padded ones are FIXED."""
    c = ctx.ch(0)
    width = int(ctx.out.shape[1])
    if not isinstance(c, Ch) or c.cdim != 1 or c.param is not None:
        ctx.fix(c)
        return Ch(1, ctx.fixed(width))
    ctx.site("custom", ctx.name, c.labels, module_type="ShortcutA")
    return Ch(1, np.concatenate([c.labels, ctx.fixed(width - len(c.labels))]))


def shortcut_a_slicer(m: nn.Module, kept: list, full: int) -> None:
    """Drop ``full - len(kept)`` input channels: both widths shrink by as many (the padding stays)."""
    removed = full - len(kept)
    if m.in_channels == full:
        m.in_channels -= removed
        m.out_channels -= removed


# what reads a selection's output (for folding it away at deploy time)

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout)
_PASS_FUNCS = {"relu", "relu6", "dropout"}


def _pass_through(node: Any, modules: dict[str, nn.Module], pooled: bool) -> tuple[bool, bool]:
    """``(channel-wise op a selection commutes with, the spatial size is now 1)`` for the fx ``node``: ReLU,
    dropout, identity, adaptive average pooling to 1, and a flatten right after that pooling."""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        if isinstance(m, _PASS_MODULES):
            return True, pooled
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            return True, True
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and pooled:
            return True, True
        return False, pooled
    name = getattr(node.target, "__name__", str(node.target))
    if node.op in ("call_function", "call_method") and name in _PASS_FUNCS:
        return True, pooled
    if node.target is F.adaptive_avg_pool2d and node.args[1:2] in ((1,), ((1, 1),)):
        return True, True
    if name == "flatten" and pooled and tuple(node.args[1:]) == (1,) and not node.kwargs:
        return True, True
    return False, pooled


def selection_consumer(sel: Any, modules: dict[str, nn.Module], calls: dict[str, int]) -> str | None:
    """The conv (groups 1) or linear layer that is the only reader of the ChannelSelection fx node ``sel``'s
    output, through channel-wise ops with one user each (``calls``: calls per module); None if there is none.
    :func:`prunekit.deploy.fold_selections` absorbs the selection into it."""
    node, pooled = sel, False
    while len(node.users) == 1:
        prev, node = node, next(iter(node.users))
        if not node.args or node.args[0] is not prev or any(a is prev for a in node.args[1:]):
            return None
        if node.op == "call_module" and calls.get(str(node.target)) == 1 and len(node.args) == 1 \
                and not node.kwargs:
            m = modules.get(str(node.target))
            if isinstance(m, nn.Linear) or (isinstance(m, nn.modules.conv._ConvNd) and m.groups == 1 and
                                            not isinstance(m, nn.modules.conv._ConvTransposeNd) and not pooled):
                return str(node.target)
        ok, pooled = _pass_through(node, modules, pooled)
        if not ok:
            return None
    return None


register_module_rule(ChannelSelection, channel_selection_rule)
register_module_rule(ShortcutA, shortcut_a_rule, slicer=shortcut_a_slicer)
register_function_rule(pad_to_min_size, ELEMENTWISE)  # LeNet-5's spatial padding of small inputs
