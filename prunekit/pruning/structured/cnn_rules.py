"""Channel rules of CNN, segmentation and detection models (timm's building blocks, torchvision's detection ops).

* **Functional layers on a module's own parameters.** timm's ``BatchNormAct2d`` is a ``BatchNorm2d`` subclass whose
  ``forward`` calls ``F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, ...)``; the
  capture follows such a subclass inside, and these rules place the functional call on the module that owns the
  parameters, exactly as the module rule would (``F.batch_norm`` / ``F.instance_norm`` -> a ``norm`` site,
  ``F.group_norm`` -> whole groups, ``F.conv1d/2d/3d`` -> ``in``/``out`` sites, ``F.linear`` -> ``in``/``out``
  sites; an ``F.linear`` whose bias is not the module's own, such as BEiT's ``cat(q_bias, 0, v_bias)``, keeps its
  outputs). A call on parameters that belong to no such module, or on computed weights (weight standardisation),
  keeps its channels whole.
* **Transposed convolutions** (``nn.ConvTranspose1d/2d/3d``, ``groups=1``): the inputs are consumed (weight dim 0),
  the outputs are new channels (weight dim 1); other group counts keep their channels whole.
* **Detection ops.** ``F.grid_sample`` (RoIAlign written with bilinear sampling) and torchvision's RoI pooling
  modules (``RoIAlign``, ``RoIPool``, ``MultiScaleRoIAlign``, recognised by class name: torchvision is never
  imported) keep the channels of their features; indexing, ``index_select`` and ``index_copy`` along another dim
  than the channels (the boxes' batch index, the level each box is pooled from) pass them through. ``topk``,
  ``sort``, ``argsort``, ``argmax``, ``nonzero``, ``gather``, ``masked_select``, ``unique`` and the like are
  *boundaries*: data-dependent selections (proposals, NMS, detections) consume no prunable channels, so what they
  read is kept whole and their results carry none. Tensor factories (``x.new_zeros(...)``) carry none either.
* A few elementwise functions and methods the built-in tables lack (``floor``, ``log2``, ``reciprocal``, comparisons
  ``gt``/``lt``/... as broadcasting ops, ...).

Importing this module registers the rules (:mod:`prunekit.pruning.structured` does). Entries never replace one
registered before (the built-in and transformer tables win), except ``operator.getitem``, whose built-in rule is
kept for everything but tensor indices along a non-channel dim.
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import builtin_rules as B
from . import transformer_rules  # noqa: F401  (its entries first: nothing here replaces them)
from .rules import (FUNCTION_RULES, METHOD_RULES, MODULE_PREDICATE_RULES, MODULE_RULES, OPAQUE, Ch, RuleContext,
                    _norm_dim, elementwise, opaque_rule)


class _Node:
    """A module call in the terms a module rule reads (``op``, ``target``, ``args``, ``kwargs``)."""

    def __init__(self, target: str, args: tuple) -> None:
        self.op, self.target, self.args, self.kwargs = "call_module", target, args, {}


def _owner(ctx: RuleContext, t: Any) -> tuple[str, nn.Module, str] | None:
    """``(module path, module, attribute)`` when ``t`` is a parameter or buffer read as it is, else None."""
    if not isinstance(t, torch.Tensor):
        return None
    c = ctx.graph.ch_of(t)
    if not isinstance(c, Ch) or c.param is None or c.pmap != tuple(range(t.dim())):
        return None
    path, _, attr = c.param.rpartition(".")
    m = ctx.graph.modules.get(path)
    return None if m is None else (path, m, attr)


def _as_module_call(ctx: RuleContext, path: str, module: nn.Module, rule: Any) -> Any:
    """Apply a module rule to ``module`` called on this op's first argument (positional or ``input=``)."""
    x = ctx.arg(0, "input")
    sub = RuleContext(ctx.graph, _Node(path, (x,)), (x,), {}, ctx.out, module)
    return rule(sub)


def _own_params(ctx: RuleContext, cls: type | tuple[type, ...], names: dict[str, Any]) -> tuple[str, nn.Module] | None:
    """The module of class ``cls`` whose own parameters/buffers are every non-None tensor of ``names``
    (``{attribute: tensor}``), or None."""
    found: tuple[str, nn.Module] | None = None
    for attr, t in names.items():
        if t is None:
            if isinstance(getattr(found[1] if found else None, attr, None), torch.Tensor):
                return None
            continue
        hit = _owner(ctx, t)
        if hit is None or hit[2] != attr or not isinstance(hit[1], cls):
            return None
        if found is not None and found[0] != hit[0]:
            return None
        found = (hit[0], hit[1])
    return found


def _keep(ctx: RuleContext) -> Any:
    """Keep every channel of the op whole (its outputs carry none)."""
    return opaque_rule(ctx)


# -- functional layers ---------------------------------------------------------------------------------------------


def f_batch_norm(ctx: RuleContext) -> Any:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, ...)`` / ``F.instance_norm`` on a norm module's own
    parameters and statistics: the module's ``norm`` site, as the module rule records it."""
    names = {"running_mean": ctx.arg(1, "running_mean"), "running_var": ctx.arg(2, "running_var"),
             "weight": ctx.arg(3, "weight"), "bias": ctx.arg(4, "bias")}
    own = _own_params(ctx, nn.modules.batchnorm._NormBase, names)
    if own is None:
        return _stat_only(ctx) if all(v is None for v in names.values()) else _keep(ctx)
    return _as_module_call(ctx, own[0], own[1], B.batchnorm)


def _stat_only(ctx: RuleContext) -> Any:
    """A batch/instance norm with no parameters at all: per-channel statistics, channels pass through."""
    c = ctx.ch(0)
    if not isinstance(c, Ch) or c.cdim != 1 or c.param is not None or c.inner:
        return _keep(ctx)
    return Ch(1, c.labels)


def f_group_norm(ctx: RuleContext) -> Any:
    """``F.group_norm(x, num_groups, weight, bias, eps)`` on a ``GroupNorm``'s own parameters (timm's
    ``GroupNormAct``): whole groups, as the module rule."""
    own = _own_params(ctx, nn.GroupNorm, {"weight": ctx.arg(2, "weight"), "bias": ctx.arg(3, "bias")})
    if own is None or int(ctx.arg(1, "num_groups")) != own[1].num_groups:
        return _keep(ctx)
    return _as_module_call(ctx, own[0], own[1], B.groupnorm)


def f_conv(ctx: RuleContext) -> Any:
    """``F.conv1d/2d/3d(x, weight, bias, ...)`` on a conv module's own weight and bias (timm's ``Conv2dSame``,
    ``CondConv``-free paths): the module's ``in``/``out`` sites, as the module rule records them."""
    own = _own_params(ctx, nn.modules.conv._ConvNd, {"weight": ctx.arg(1, "weight"), "bias": ctx.arg(2, "bias")})
    if own is None or isinstance(own[1], nn.modules.conv._ConvTransposeNd) or \
            int(ctx.arg(6, "groups", 1)) != own[1].groups:
        return _keep(ctx)
    return _as_module_call(ctx, own[0], own[1], B.conv)


def f_linear(ctx: RuleContext) -> Any:
    """``F.linear(x, weight, bias)`` on an ``nn.Linear``'s own weight: its ``in``/``out`` sites. A bias that is not
    the module's own (BEiT's ``cat(q_bias, zeros, v_bias)``) cannot be sliced: the outputs are then kept whole."""
    hit = _owner(ctx, ctx.arg(1, "weight"))
    if hit is None or hit[2] != "weight" or not isinstance(hit[1], nn.Linear):
        return _keep(ctx)
    path, m, _ = hit
    bias = ctx.arg(2, "bias")
    own_bias = bias is None and m.bias is None or (_owner(ctx, bias) or (None, None, None))[:2] == (path, m)
    out = _as_module_call(ctx, path, m, B.linear)
    if not own_bias:
        ctx.fix(out)
        if isinstance(bias, torch.Tensor):
            ctx.fix(ctx.graph.ch_of(bias))
    return out


def conv_transpose(ctx: RuleContext) -> Any:
    """``nn.ConvTranspose1d/2d/3d`` with ``groups=1``: inputs consumed (weight dim 0), outputs new (weight dim 1)."""
    m = ctx.module
    x = ctx.args[0]
    c = ctx.ch(0)
    c = c if isinstance(c, Ch) else OPAQUE
    if m.groups != 1 or len(ctx.args) > 1 or ctx.kwargs:  # grouped, or an explicit output_size: kept whole
        return _keep(ctx)
    if c.cdim != 1 or c.param is not None or c.inner:
        ctx.fix(c)
        in_labels = ctx.fixed(m.in_channels)
    else:
        in_labels = c.labels
    ctx.site("in", ctx.name, in_labels, module_type="conv_transpose", in_spatial=tuple(x.shape[2:]),
             out_spatial=tuple(ctx.out.shape[2:]))
    out = ctx.new(m.out_channels)
    ctx.site("out", ctx.name, out, module_type="conv_transpose", spatial=tuple(ctx.out.shape[2:]))
    return Ch(1, out)


# -- detection ops -------------------------------------------------------------------------------------------------


def grid_sample(ctx: RuleContext) -> Any:
    """``F.grid_sample(input, grid)``: every channel is sampled at the same points (RoIAlign in plain torch)."""
    c = ctx.ch(0)
    g = ctx.graph.ch_of(ctx.arg(1, "grid"))
    ctx.fix(g)
    if not isinstance(c, Ch) or c.cdim != 1 or c.param is not None or c.inner:
        ctx.fix(c)
        return OPAQUE
    return Ch(1, c.labels)


def roi_module(ctx: RuleContext) -> Any:
    """torchvision's ``RoIAlign`` / ``RoIPool`` / ``MultiScaleRoIAlign``: the pooled boxes keep the channels of the
    feature maps (the maps of every level pooled share them); the boxes carry none."""
    x = ctx.args[0]
    feats = list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, (list, tuple)) else [x]
    names = getattr(ctx.module, "featmap_names", None)
    if isinstance(x, dict) and names is not None:
        feats = [x[k] for k in names if k in x]
    labels = None
    for f in feats:
        c = ctx.graph.ch_of(f)
        if not isinstance(c, Ch) or c.cdim != 1 or c.param is not None or c.inner:
            return _keep(ctx)
        if labels is None:
            labels = c.labels
        elif len(labels) == len(c.labels):
            ctx.union(labels, c.labels)
        else:
            return _keep(ctx)
    for t in _tensors_in(ctx.args[1:]) + _tensors_in(list(ctx.kwargs.values())):
        ctx.fix(ctx.graph.ch_of(t))
    out = ctx.out
    if labels is None or not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[1] != len(labels):
        return _keep(ctx)
    return Ch(1, labels)


def _tensors_in(v: Any) -> list[torch.Tensor]:
    """Tensors among ``v`` (nested lists/tuples/dicts)."""
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (list, tuple)):
        return [t for x in v for t in _tensors_in(x)]
    if isinstance(v, dict):
        return [t for x in v.values() for t in _tensors_in(x)]
    return []


_ROI_MODULES = frozenset({"RoIAlign", "RoIPool", "MultiScaleRoIAlign"})


def _is_roi_module(m: nn.Module) -> bool:
    """torchvision's channel-preserving RoI pooling modules, by class name (position-sensitive ones mix channels)."""
    return type(m).__name__ in _ROI_MODULES and type(m).__module__.startswith("torchvision")


_builtin_getitem = FUNCTION_RULES[operator.getitem]


def getitem(ctx: RuleContext) -> Any:
    """``x[idx]`` where the only tensor index is one 1-D index (long or bool) along a dim before or after the channel
    dim, with full slices elsewhere (``feat[batch_index]``, ``rois[keep]``): the channels pass through. Everything
    else: the built-in rule."""
    src, idx = ctx.args[0], ctx.args[1]
    c = ctx.graph.ch_of(ctx.node.args[0])
    if not isinstance(src, torch.Tensor) or not isinstance(c, Ch) or c.cdim is None or c.param is not None or \
            c.inner:
        return _builtin_getitem(ctx)
    items = idx if isinstance(idx, tuple) else (idx,)
    tensors = [i for i, v in enumerate(items) if isinstance(v, torch.Tensor)]
    if len(tensors) != 1 or any(not isinstance(v, (torch.Tensor, slice)) for v in items):
        return _builtin_getitem(ctx)
    t = items[tensors[0]]
    if t.dim() != 1 or tensors[0] == c.cdim or any(v != slice(None) for v in items if isinstance(v, slice)):
        return _builtin_getitem(ctx)
    out = ctx.out
    if not isinstance(out, torch.Tensor) or out.dim() != src.dim() or out.shape[c.cdim] != src.shape[c.cdim]:
        return _builtin_getitem(ctx)
    return Ch(c.cdim, c.labels)


def index_select(ctx: RuleContext) -> Any:
    """``x.index_select(dim, index)``: along another dim than the channels they pass, along it they are kept."""
    c = ctx.ch(0)
    x = ctx.args[0]
    if not isinstance(c, Ch) or c.cdim is None or c.param is not None or c.inner:
        return _keep(ctx) if isinstance(c, Ch) and c.cdim is not None else OPAQUE
    if _norm_dim(ctx.arg(1, "dim"), x.dim()) == c.cdim:
        ctx.fix(c)
        return OPAQUE
    return Ch(c.cdim, c.labels)


def index_copy(ctx: RuleContext) -> Any:
    """``x.index_copy(dim, index, source)`` / ``index_add``: rows of ``source`` written into ``x`` along another dim
    than the channels: the two share channels position by position (``x`` may be a fresh ``new_zeros``)."""
    x, src = ctx.args[0], ctx.arg(3, "source")
    cx, cs = ctx.ch(0), ctx.graph.ch_of(src)
    d = _norm_dim(ctx.arg(1, "dim"), x.dim())
    live = [c for c in (cx, cs) if isinstance(c, Ch) and c.cdim is not None]
    if not live:
        return OPAQUE
    if any(c.param is not None or c.inner or c.cdim == d for c in live) or \
            len({c.cdim for c in live}) != 1 or src.dim() != x.dim():
        return _keep(ctx)
    labels = live[0].labels
    for c in live[1:]:
        ctx.union(labels, c.labels)
    return Ch(live[0].cdim, labels)


def boundary(ctx: RuleContext) -> Any:
    """A data-dependent selection (``topk``, ``sort``, ``nonzero``, ``gather`` ...): what it reads is kept whole and its
    results carry no channels (anchors, box coding, NMS, detections)."""
    return _keep(ctx)


def factory(ctx: RuleContext) -> Any:
    """``x.new_zeros(...)`` and the like: a fresh tensor, no channels (only ``x``'s dtype and device are read)."""
    out = ctx.out
    return tuple(OPAQUE for _ in out) if isinstance(out, (tuple, list)) else OPAQUE


def last_two_dims(ctx: RuleContext) -> Any:
    """``triu`` / ``tril``: elementwise except along the last two dims (channels there are kept whole)."""
    c = ctx.ch(0)
    x = ctx.args[0]
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    if any(d >= x.dim() - 2 for d in c.dims):
        ctx.fix(c)
        return OPAQUE
    return elementwise(ctx)


def repeat_interleave(ctx: RuleContext) -> Any:
    """``x.repeat_interleave(r, dim)`` with an integer ``r``: along the channel dim every label is repeated ``r`` times
    (a unit keeps its copies together), along another dim the channels pass; anything else is kept whole."""
    c = ctx.ch(0)
    x, out = ctx.args[0], ctx.out
    r, d = ctx.arg(1, "repeats"), ctx.arg(2, "dim")
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    if c.param is not None or c.inner or not isinstance(r, int) or d is None or not isinstance(out, torch.Tensor):
        return _keep(ctx)
    if _norm_dim(d, x.dim()) == c.cdim:
        return Ch(c.cdim, np.repeat(c.labels, r))
    return Ch(c.cdim, c.labels)


# -- registration --------------------------------------------------------------------------------------------------


def _add(table: dict, key: Any, rule: Any) -> None:
    if key not in table:
        table[key] = rule


for _f in (F.batch_norm, F.instance_norm):
    _add(FUNCTION_RULES, _f, f_batch_norm)
_add(FUNCTION_RULES, F.group_norm, f_group_norm)
for _f in (F.conv1d, F.conv2d, F.conv3d):
    _add(FUNCTION_RULES, _f, f_conv)
_add(FUNCTION_RULES, F.linear, f_linear)
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    _add(MODULE_RULES, _cls, conv_transpose)
_add(FUNCTION_RULES, F.grid_sample, grid_sample)
MODULE_PREDICATE_RULES.append((_is_roi_module, roi_module))
FUNCTION_RULES[operator.getitem] = getitem
_add(FUNCTION_RULES, torch.index_select, index_select)
_add(METHOD_RULES, "index_select", index_select)
for _m in ("index_copy", "index_add"):
    _add(METHOD_RULES, _m, index_copy)
for _f in (torch.index_copy, torch.index_add):
    _add(FUNCTION_RULES, _f, index_copy)
for _f in (torch.topk, torch.sort, torch.argsort, torch.argmax, torch.argmin, torch.nonzero, torch.gather,
           torch.masked_select, torch.unique, torch.searchsorted, torch.bucketize, torch.take_along_dim,
           torch.kthvalue, torch.msort, torch.argwhere, torch.unique_consecutive):
    _add(FUNCTION_RULES, _f, boundary)
for _m in ("topk", "sort", "argsort", "argmax", "argmin", "nonzero", "gather", "masked_select", "unique",
           "take_along_dim", "kthvalue", "msort", "argwhere", "unique_consecutive"):
    _add(METHOD_RULES, _m, boundary)
for _m in ("new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"):
    _add(METHOD_RULES, _m, factory)
for _f in (torch.triu, torch.tril):
    _add(FUNCTION_RULES, _f, last_two_dims)
for _m in ("triu", "tril"):
    _add(METHOD_RULES, _m, last_two_dims)
for _m in ("gt", "lt", "ge", "le", "eq", "ne", "greater", "less", "logical_and", "logical_or", "bitwise_and",
           "bitwise_or"):
    _add(METHOD_RULES, _m, B.broadcast)
for _f in (torch.gt, torch.lt, torch.ge, torch.le, torch.eq, torch.ne, torch.logical_and, torch.logical_or,
           torch.bitwise_and, torch.bitwise_or):
    _add(FUNCTION_RULES, _f, B.broadcast)
_add(METHOD_RULES, "repeat_interleave", repeat_interleave)
_add(FUNCTION_RULES, torch.repeat_interleave, repeat_interleave)
if hasattr(F, "rms_norm"):  # like F.layer_norm: channels among the normalised dims are kept whole
    _add(FUNCTION_RULES, F.rms_norm, B.f_layer_norm)
for _m in ("any", "all"):
    _add(METHOD_RULES, _m, B.reduction)
for _f in (torch.any, torch.all):
    _add(FUNCTION_RULES, _f, B.reduction)
for _f in (torch.floor, torch.ceil, torch.round, torch.trunc, torch.frac, torch.log2, torch.log10, torch.log1p,
           torch.expm1, torch.exp2, torch.reciprocal, torch.logical_not, torch.isfinite, torch.isnan,
           torch.clamp_min, torch.clamp_max, torch.sigmoid_, F.hardtanh_, F.elu_, F.leaky_relu_, F.threshold,
           F.relu6, F.silu, torch.nn.functional.gelu, torch.special.expit, torch.special.erf):
    _add(FUNCTION_RULES, _f, elementwise)
for _m in ("floor", "ceil", "round", "trunc", "frac", "log2", "log10", "log1p", "expm1", "exp2", "reciprocal",
           "logical_not", "isfinite", "isnan", "clamp_min", "clamp_max", "bool", "long", "int", "short", "byte",
           "char", "exp_", "abs_", "neg_", "floor_", "ceil_", "round_", "reciprocal_", "silu", "gelu",
           "hardsigmoid", "relu6", "mish", "softplus", "clamp_min_", "clamp_max_", "detach_", "sqrt_", "log_"):
    _add(METHOD_RULES, _m, elementwise)
for _r in (grid_sample, getitem, index_select, index_copy, boundary, factory, last_two_dims, roi_module):
    _r.multidim = True  # type: ignore[attr-defined]
