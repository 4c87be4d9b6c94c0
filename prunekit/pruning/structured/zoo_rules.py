"""Channel rules for prunekit's own layers (registered on import through the public extension API).

* :class:`~prunekit.models.layers.ChannelSelection` (network slimming): its input channels are kept whole (FIXED);
  its outputs are new channels whose importance is the γ of the BatchNorm feeding it, and removing them sets the
  selection instead of slicing that BatchNorm.
* :class:`~prunekit.models.layers.ShortcutA` (parameter-free option-A shortcut): input channels pass through, the
  zero-padded ones are FIXED; removing input channels shrinks both widths by as many, so the padding is unchanged.
* LeNet-5's ``pad_to_min_size`` (spatial padding of small inputs): channels pass through.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

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
    src = ctx.node.args[0]
    if getattr(src, "op", None) == "call_module":
        bn = ctx.graph.modules.get(str(src.target))
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            ctx.graph.select_scores[ctx.name] = (str(src.target), kept)
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


register_module_rule(ChannelSelection, channel_selection_rule)
register_module_rule(ShortcutA, shortcut_a_rule, slicer=shortcut_a_slicer)
register_function_rule(pad_to_min_size, ELEMENTWISE)  # LeNet-5's spatial padding of small inputs
