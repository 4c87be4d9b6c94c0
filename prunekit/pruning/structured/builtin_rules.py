"""The built-in channel rules: torch.nn layers, torch functions and Tensor methods (see :mod:`.rules` for the
protocol). Importing this module fills the rule tables; :mod:`.graph` does so.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import PrunekitError
from . import multidim as M
from .rules import (FUNCTION_RULES, METHOD_RULES, MODULE_RULES, OPAQUE, Ch, RuleContext, _like_first, _norm_dim,
                    elementwise, opaque_rule)


def _param_dim_at(c: Ch, value: torch.Tensor, out_ndim: int, out_cdim: int) -> int | None:
    """For a raw-parameter ``Ch`` broadcast into an output of ``out_ndim`` dims: the parameter dim that lies on
    output dim ``out_cdim`` if it has size > 1 there (else None)."""
    off = out_ndim - value.dim()
    d = out_cdim - off
    if d < 0 or value.shape[d] == 1 or c.pmap is None:
        return None
    return c.pmap[d] if c.pmap[d] >= 0 else None


def broadcast(ctx: RuleContext) -> Ch:
    """Elementwise binary/ternary ops with broadcasting (add, sub, mul, div, where, maximum ...): every operand with
    the channel dim couples position by position; a parameter on that dim is sliced along; an opaque one fixes it."""
    out = ctx.out
    if not isinstance(out, torch.Tensor):
        return OPAQUE
    chs = ctx.tensor_chs()
    on = out.dim()
    if any(M.is_multi(c) for _, c in chs):
        return _broadcast_multi(ctx, chs, out)
    cdims = {c.cdim + on - v.dim() for v, c in chs if c.cdim is not None and c.param is None}
    if not cdims:
        return _param_born(ctx, chs, out)
    if len(cdims) > 1:  # channels of different tensors meet on different dims: keep them all
        for _, c in chs:
            ctx.fix(c)
        return OPAQUE
    cd = cdims.pop()
    labels: np.ndarray | None = None
    for v, c in chs:
        off = on - v.dim()
        if cd - off < 0 or v.shape[cd - off] == 1:
            continue  # broadcast along the channel dim: no coupling
        if c.param is not None:
            pd = _param_dim_at(c, v, on, cd)
            if pd is None:
                continue
            if labels is None:
                labels = ctx.new(out.shape[cd])
            ctx.site("param", f"{c.param}@{pd}", labels, param=c.param, dim=pd)
        elif c.cdim is None:
            if labels is None:
                labels = ctx.new(out.shape[cd])
            ctx.union(labels, ctx.fixed(len(labels)))
        else:
            if labels is None:
                labels = c.labels
            else:
                ctx.union(labels, c.labels)
    return Ch(cd, labels if labels is not None else ctx.fixed(out.shape[cd]))


def _param_born(ctx: RuleContext, chs: list, out: torch.Tensor) -> Ch:
    """A parameter that spans one dim (a relative-position bias per head) combined with untracked values (a window
    mask): that dim becomes channels sliced along the parameter; anything else is opaque."""
    params = [(v, c) for v, c in chs if c.param is not None and c.pmap is not None]
    if len(params) != 1 or params[0][1].param not in ctx.graph.trainable:
        return OPAQUE  # buffers (a rotary inv_freq) are tables, not channels
    v, c = params[0]
    off = out.dim() - v.dim()
    spans = [d for d in range(v.dim()) if v.shape[d] > 1 and c.pmap[d] >= 0]
    if len(spans) != 1:
        return OPAQUE
    d = spans[0]
    if any(o.shape[d + off - (out.dim() - o.dim())] > 1 for o, oc in chs
           if oc is not c and d + off - (out.dim() - o.dim()) >= 0):
        return OPAQUE  # something untracked also varies along that dim
    labels = ctx.new(out.shape[d + off])
    ctx.site("param", f"{c.param}@{c.pmap[d]}", labels, param=c.param, dim=c.pmap[d])
    return Ch(d + off, labels)


def _broadcast_multi(ctx: RuleContext, chs: list, out: torch.Tensor) -> Ch:
    """Broadcasting with channels on several dims (heads): operands with channels must have the same channel dims
    (united position by position); an untracked operand may span only dims along which every unit is whole."""
    on = out.dim()
    views = [M.sorted_view(M.broadcast_align(c, v, on)) for v, c in chs if c.cdim is not None and c.param is None]
    dims = views[0][0]
    if any(d != dims or lab.shape != views[0][1].shape for d, lab in views[1:]):
        for _, c in chs:
            ctx.fix(c)
        return OPAQUE
    labels = views[0][1]
    for _, lab in views[1:]:
        ctx.union(labels.reshape(-1), lab.reshape(-1))
    ref = M.make(dims, labels)
    for v, c in chs:
        if c.cdim is not None and c.param is None:
            continue
        off = on - v.dim()
        spanned = [d for d in dims if d - off >= 0 and v.shape[d - off] > 1]
        if spanned and ctx.graph.options.get("head_dims") and dims[-1] in spanned:
            raise PrunekitError(f"head_dims: module {ctx.graph.current_module!r} multiplies the head dims by a "
                                "position table (rotary embeddings): removing dims would change the frequencies of "
                                "the dims kept; prune whole heads instead (head_dims=False)")
        if spanned and not M.constant_along(ctx, ref, spanned):
            for _, c2 in chs:
                ctx.fix(c2)
            return OPAQUE
    return ref


def _reduce_dims(ctx: RuleContext, dims: Any, keepdim: bool) -> Ch:
    c = ctx.ch(0)
    x = ctx.args[0]
    if not isinstance(c, Ch) or c.cdim is None or c.param is not None:
        return OPAQUE
    if c.inner:
        return M.reduce(ctx, c, x.dim(), dims, keepdim)
    if dims is None:
        ctx.fix(c)
        return OPAQUE
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = [_norm_dim(d, x.dim()) for d in dims]
    if c.cdim in dims:
        ctx.fix(c)
        return OPAQUE
    cd = c.cdim if keepdim else c.cdim - sum(1 for d in dims if d < c.cdim)
    return Ch(cd, c.labels)


def reduction(ctx: RuleContext) -> Ch:
    """``mean/sum/amax/...(dim, keepdim)``: reducing the channel dim fixes the channels; other dims pass."""
    dims = ctx.arg(1, "dim")
    keep = bool(ctx.arg(2, "keepdim", False))
    if "axis" in ctx.kwargs:
        dims = ctx.kwargs["axis"]
    return _reduce_dims(ctx, dims, keep)


def along_dim(ctx: RuleContext) -> Ch:
    """``softmax/cumsum/normalize/...(dim)``: mixing along the channel dim fixes it, other dims pass through."""
    c = ctx.ch(0)
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    d = ctx.arg(1, "dim")
    if d is None:
        ctx.fix(c)
        return OPAQUE
    if _norm_dim(d, ctx.args[0].dim()) in c.dims:
        ctx.fix(c)
        return OPAQUE
    return c


def normalize(ctx: RuleContext) -> Ch:
    """``F.normalize(x, p, dim=1)``."""
    c = ctx.ch(0)
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    d = ctx.arg(2, "dim", 1)
    if _norm_dim(d, ctx.args[0].dim()) == c.cdim:
        ctx.fix(c)
        return OPAQUE
    return Ch(c.cdim, c.labels)


# -- shape ops ----------------------------------------------------------------------------------------------------


def _expand_flat(labels: np.ndarray, sizes: Sequence[int], pos: int) -> np.ndarray:
    """Labels of a flattened block of dims ``sizes`` where the channel dim is ``sizes[pos]``."""
    inner = int(np.prod(sizes[pos + 1:])) if pos + 1 < len(sizes) else 1
    outer = int(np.prod(sizes[:pos])) if pos > 0 else 1
    return np.tile(np.repeat(labels, inner), outer)


def _reshape_map(in_shape: Sequence[int], out_shape: Sequence[int], cdim: int) -> tuple[str, Any]:
    """Where the channel dim of ``in_shape`` goes in ``out_shape``: ``("same", d)``, ``("merged", (d, sizes, pos))``
    (the block of input dims ``sizes`` flattened into output dim ``d``, the channel dim at ``pos`` in it) or
    ``("split", None)`` (the channel dim is spread over several output dims)."""
    out_pre = [math.prod(out_shape[:j]) for j in range(len(out_shape))]
    n = len(in_shape)
    for width in range(1, n + 1):  # the smallest block of input dims around cdim that is one output dim
        for a in range(max(0, cdim - width + 1), cdim + 1):
            b = a + width
            if b > n:
                continue
            block, before = math.prod(in_shape[a:b]), math.prod(in_shape[:a])
            for j, s in enumerate(out_shape):
                if s == block and out_pre[j] == before:
                    return ("same", j) if width == 1 else ("merged", (j, list(in_shape[a:b]), cdim - a))
    return "split", None


def reshape(ctx: RuleContext) -> Ch:
    """view/reshape/flatten: the channel dim kept, merged (labels expanded channel-major) or split (fixed)."""
    c = ctx.ch(0)
    x, out = ctx.args[0], ctx.out
    if not isinstance(out, torch.Tensor) or not isinstance(c, Ch):
        return OPAQUE
    if c.param is not None:
        return _param_reshape(c, x, out)
    if c.cdim is None:
        return OPAQUE
    if c.inner:
        return M.reshape(ctx, c, x, out)
    kind, where = _reshape_map(tuple(x.shape), tuple(out.shape), c.cdim)
    if kind == "same":
        return Ch(where, c.labels)
    if kind == "merged":
        d, sizes, pos = where
        return Ch(d, _expand_flat(c.labels, sizes, pos))
    return M.reshape(ctx, c, x, out)  # the channel dim split: attention heads, else kept whole


def _param_reshape(c: Ch, x: torch.Tensor, out: torch.Tensor) -> Ch:
    """A parameter viewed in another shape keeps the dims that pass through whole (a relative-position table
    ``(N·N, H)`` viewed as ``(N, N, H)`` keeps its heads dim); merged or split dims lose their map."""
    blocks = M._blocks(list(x.shape), list(out.shape))
    if blocks is None or c.pmap is None:
        return OPAQUE
    pmap = [-1] * out.dim()
    for (a, b), (p, q) in blocks:
        if b - a == 1 and q - p == 1 and x.shape[a] == out.shape[p]:
            pmap[p] = c.pmap[a]
    return Ch(None, None, c.param, tuple(pmap))


def _param_getitem(c: Ch, src: torch.Tensor, idx: Any, out: Any) -> Ch:
    """Indexing a parameter: a tensor index on its first dim (a table lookup) or basic indexing; the dims that
    come through whole keep their map."""
    if not isinstance(out, torch.Tensor) or c.pmap is None:
        return OPAQUE
    if isinstance(idx, torch.Tensor):
        return Ch(None, None, c.param, (-1,) * idx.dim() + tuple(c.pmap[1:]))
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, (torch.Tensor, list)) or i is Ellipsis for i in idx):
        return OPAQUE
    idx = idx + (slice(None),) * (src.dim() - sum(1 for i in idx if i is not None))
    pmap, d = [], 0
    for i in idx:
        if i is None:
            pmap.append(-1)
            continue
        if isinstance(i, slice):
            pmap.append(c.pmap[d] if range(src.shape[d])[i] == range(src.shape[d]) else -1)
        d += 1
    return Ch(None, None, c.param, tuple(pmap)) if len(pmap) == out.dim() else OPAQUE


def permute(ctx: RuleContext) -> Ch:
    """``permute/transpose/movedim/swapaxes/t``: the channel dim moves with its data."""
    c = ctx.ch(0)
    x, out = ctx.args[0], ctx.out
    if isinstance(c, Ch) and c.param is not None and c.pmap is not None and isinstance(out, torch.Tensor):
        param = c
        c = Ch(0, np.zeros(x.shape[0], dtype=np.int64))  # stand-in to compute the order below
    else:
        param = None
    if not isinstance(c, Ch) or c.cdim is None or not isinstance(out, torch.Tensor):
        return OPAQUE
    n = x.dim()
    node = ctx.node
    target = node.target
    if target in ("permute",) or target is torch.permute:
        dims = ctx.args[1:] if node.op == "call_method" else ctx.arg(1, "dims")
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        order = [_norm_dim(d, n) for d in dims]
    elif target in ("transpose", "swapaxes", "swapdims") or target in (torch.transpose, torch.swapaxes):
        a, b = _norm_dim(ctx.arg(1, "dim0"), n), _norm_dim(ctx.arg(2, "dim1"), n)
        order = list(range(n))
        order[a], order[b] = order[b], order[a]
    elif target in ("t",) or target is torch.t:
        order = list(range(n))[::-1]
    elif target in ("movedim", "moveaxis") or target in (torch.movedim, torch.moveaxis):
        src, dst = ctx.arg(1, "source"), ctx.arg(2, "destination")
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        order = _movedim_order(n, src, dst)
    else:  # mT / mH
        order = list(range(n))
        order[-1], order[-2] = order[-2], order[-1]
    if param is not None:
        return Ch(None, None, param.param, tuple(param.pmap[o] for o in order))
    if c.inner:
        return M.permute(c, order)
    return Ch(order.index(c.cdim), c.labels)


def _movedim_order(n: int, src: list[int], dst: list[int]) -> list[int]:
    src = [_norm_dim(s, n) for s in src]
    dst = [_norm_dim(d, n) for d in dst]
    order = [-1] * n
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(i for i in range(n) if i not in src)
    return [o if o >= 0 else next(rest) for o in order]


def unsqueeze(ctx: RuleContext) -> Ch:
    """``unsqueeze(d)`` / ``squeeze(d)``: the channel dim shifts."""
    c = ctx.ch(0)
    if isinstance(c, Ch) and c.param is not None:
        return _param_reshape(c, ctx.args[0], ctx.out)
    return reshape(ctx)


def cat(ctx: RuleContext) -> Ch:
    """``torch.cat(tensors, dim)``: along the channel dim the labels are concatenated; along another dim every
    input couples position by position (parameters such as a class token are sliced along)."""
    tensors = ctx.args[0] if ctx.args else ctx.kwargs["tensors"]
    nodes = ctx.node.args[0] if ctx.node.args else ctx.node.kwargs["tensors"]
    out = ctx.out
    d = _norm_dim(ctx.arg(1, "dim", 0), out.dim())
    chs = [ctx.graph.ch_of(a) for a in nodes]
    chs = [c if isinstance(c, Ch) else OPAQUE for c in chs]
    live = [i for i, t in enumerate(tensors) if not (isinstance(t, torch.Tensor) and t.numel() == 0)]
    tensors, chs = [tensors[i] for i in live], [chs[i] for i in live]  # an empty tensor (a fresh cache) adds nothing
    if not chs:
        return OPAQUE
    if any(M.is_multi(c) for c in chs):
        return _cat_multi(ctx, tensors, chs, d)
    cdims = {c.cdim for c in chs if c.cdim is not None and c.param is None}
    if not cdims:
        return OPAQUE
    if len(cdims) > 1:
        for c in chs:
            ctx.fix(c)
        return OPAQUE
    cd = cdims.pop()
    if cd == d:
        parts = []
        for v, c in zip(tensors, chs):
            if c.cdim is None or c.param is not None:
                parts.append(ctx.fixed(v.shape[d]))
            else:
                parts.append(c.labels)
        return Ch(cd, np.concatenate(parts))
    labels = None
    for v, c in zip(tensors, chs):
        if c.param is not None:
            pd = _param_dim_at(c, v, out.dim(), cd)
            if pd is not None:
                labels = labels if labels is not None else ctx.new(out.shape[cd])
                ctx.site("param", f"{c.param}@{pd}", labels, param=c.param, dim=pd)
        elif c.cdim is None:
            labels = labels if labels is not None else ctx.new(out.shape[cd])
            ctx.union(labels, ctx.fixed(len(labels)))
        elif labels is None:
            labels = c.labels
        else:
            ctx.union(labels, c.labels)
    return Ch(cd, labels)


def _cat_multi(ctx: RuleContext, tensors: Sequence[torch.Tensor], chs: list, d: int) -> Ch:
    """``cat`` of tensors with channels on several dims (rotary ``cat((-x2, x1), -1)`` on the head dim)."""
    views = [M.sorted_view(c) if c.cdim is not None and c.param is None else None for c in chs]
    dims = next(v[0] for v in views if v is not None)
    if any(v is not None and v[0] != dims for v in views):
        for c in chs:
            ctx.fix(c)
        return OPAQUE
    if d in dims:
        ax = dims.index(d)
        ref = next(v[1] for v in views if v is not None)
        parts = []
        for t, v in zip(tensors, views):
            if v is None:
                shape = list(ref.shape)
                shape[ax] = t.shape[d]
                parts.append(np.zeros(shape, dtype=np.int64))
            else:
                parts.append(v[1])
        try:
            return M.make(dims, np.concatenate(parts, axis=ax))
        except ValueError:
            for c in chs:
                ctx.fix(c)
            return OPAQUE
    labels = None
    for v in views:
        if v is None:
            continue
        if labels is None:
            labels = v[1]
        elif v[1].shape == labels.shape:
            ctx.union(labels.reshape(-1), v[1].reshape(-1))
        else:
            for c in chs:
                ctx.fix(c)
            return OPAQUE
    if any(v is None for v in views):
        ctx.fix(M.make(dims, labels))
    return M.make(dims, labels)


def stack(ctx: RuleContext) -> Ch:
    """``torch.stack(tensors, dim)``: a new dim; inputs couple position by position."""
    nodes = ctx.node.args[0] if ctx.node.args else ctx.node.kwargs["tensors"]
    chs = [ctx.graph.ch_of(a) for a in nodes]
    chs = [c if isinstance(c, Ch) else OPAQUE for c in chs]
    d = _norm_dim(ctx.arg(1, "dim", 0), ctx.out.dim())
    cdims = {c.cdim for c in chs if c.cdim is not None}
    if len(cdims) != 1 or any(c.cdim is None for c in chs):
        for c in chs:
            ctx.fix(c)
        return OPAQUE
    cd = cdims.pop()
    labels = chs[0].labels
    for c in chs[1:]:
        ctx.union(labels, c.labels)
    return Ch(cd + 1 if d <= cd else cd, labels)


def _equal_pieces(ctx: RuleContext, c: Ch, outs: Sequence[torch.Tensor], d: int) -> tuple | None:
    """Pieces of equal size along the channel dim: position j of every piece is coupled, so every piece loses
    the same channels and the split (``chunk(k)``, ``split(s)`` with ``s·k = C``) stays valid after pruning."""
    sizes = [o.shape[d] for o in outs]
    if len(set(sizes)) != 1:
        return None
    n = sizes[0]
    pieces = [c.labels[i * n:(i + 1) * n] for i in range(len(outs))]
    for p in pieces[1:]:
        ctx.union(pieces[0], p)
    return tuple(Ch(c.cdim, p) for p in pieces)


def split(ctx: RuleContext) -> tuple:
    """``split/chunk/tensor_split/unbind``: along the channel dim, equal pieces (``chunk(k)``, ``split(size)``)
    couple their positions; pieces of sizes written as constants (``split([8, 16])``) cannot follow a pruned
    width, so their channels are FIXED. Along other dims every piece keeps the labels."""
    c = ctx.ch(0)
    outs = ctx.out
    x = ctx.args[0]
    target = ctx.node.target
    is_unbind = target in ("unbind",) or target is torch.unbind
    if is_unbind:
        d = _norm_dim(ctx.arg(1, "dim", 0), x.dim())
    else:
        d = _norm_dim(ctx.arg(2, "dim", 0), x.dim())
    if not isinstance(c, Ch) or c.cdim is None or c.param is not None:
        return tuple(OPAQUE for _ in outs)
    if c.inner:
        if is_unbind and d in c.dims:
            return M.unbind_pieces(ctx, c, d, len(outs))
        if d in c.dims:
            ctx.fix(c)
            return tuple(OPAQUE for _ in outs)
        if is_unbind:
            return tuple(M.make([e - (1 if e > d else 0) for e in c.dims], np.asarray(c.labels)) for _ in outs)
        return tuple(c for _ in outs)
    if is_unbind:
        if d == c.cdim:
            ctx.fix(c)
            return tuple(OPAQUE for _ in outs)
        return tuple(Ch(c.cdim - (1 if d < c.cdim else 0), c.labels) for _ in outs)
    if d != c.cdim:
        return tuple(Ch(c.cdim, c.labels) for _ in outs)
    how = ctx.arg(1, "split_size_or_sections", None)
    if how is None:
        how = ctx.kwargs.get("chunks", ctx.kwargs.get("split_size", ctx.kwargs.get("sections",
                                                                                  ctx.kwargs.get("indices"))))
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    by_count = name in ("chunk",) or (name == "tensor_split" and isinstance(how, int))
    by_size = name == "split" and isinstance(how, int)
    if by_count or by_size:
        equal = _equal_pieces(ctx, c, outs, d)
        if equal is not None:
            return equal
    ctx.fix(c)
    start, pieces = 0, []
    for o in outs:
        n = o.shape[d]
        pieces.append(Ch(c.cdim, c.labels[start:start + n]))
        start += n
    return tuple(pieces)


def getitem(ctx: RuleContext) -> Any:
    """``x[idx]`` on tensors (slices along the channel dim slice the labels) and on tuples (pick the element)."""
    container = ctx.node.args[0]
    c = ctx.graph.ch_of(container)
    idx = ctx.args[1]
    src = ctx.args[0]
    if not isinstance(src, torch.Tensor):
        if isinstance(c, (tuple, list)) and isinstance(idx, (int, slice)):
            return c[idx]
        return None
    if isinstance(c, Ch) and c.param is not None:
        return _param_getitem(c, src, idx, ctx.out)
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    if c.inner:
        return M.getitem(ctx, c, src, idx)
    expanded = M.basic_index(idx, src.dim())
    if expanded is None:
        ctx.fix(c)
        return OPAQUE
    in_d = out_d = 0
    for i in expanded:
        if i is None:
            out_d += 1
            continue
        if in_d == c.cdim:
            if isinstance(i, int):
                ctx.fix(c)
                return OPAQUE
            return Ch(out_d, c.labels[i])
        if not isinstance(i, int):
            out_d += 1
        in_d += 1
    return Ch(out_d + (c.cdim - in_d), c.labels)


def pad(ctx: RuleContext) -> Ch:
    """``F.pad``: padding the channel dim adds FIXED positions; spatial padding passes through."""
    c = ctx.ch(0)
    x = ctx.args[0]
    p = list(ctx.arg(1, "pad"))
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    k = x.dim() - 1 - c.cdim  # pads are given from the last dim backwards
    if 2 * k + 1 >= len(p) or (p[2 * k] == 0 and p[2 * k + 1] == 0):
        return Ch(c.cdim, c.labels)
    before, after = p[2 * k], p[2 * k + 1]
    if before < 0 or after < 0:
        ctx.fix(c)
        return OPAQUE
    return Ch(c.cdim, np.concatenate([ctx.fixed(before), c.labels, ctx.fixed(after)]))


def expand_param(ctx: RuleContext, c: Ch) -> Ch:
    """A parameter broadcast to a bigger shape (a class token ``expand(B, -1, -1)``): it stays that parameter."""
    x, out = ctx.args[0], ctx.out
    off = out.dim() - x.dim()
    if c.pmap is None or off < 0:
        return OPAQUE
    pmap = [-1] * off + [p if out.shape[d + off] == x.shape[d] else -1 for d, p in enumerate(c.pmap)]
    return Ch(None, None, c.param, tuple(pmap))


def expand(ctx: RuleContext) -> Ch:
    """``expand/expand_as/repeat/broadcast_to``: the channel dim passes if its size is unchanged."""
    c = ctx.ch(0)
    x, out = ctx.args[0], ctx.out
    if isinstance(c, Ch) and c.param is not None:
        return expand_param(ctx, c)
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    if c.inner:
        off = out.dim() - x.dim()
        if any(out.shape[e + off] != x.shape[e] for e in c.dims):
            ctx.fix(c)
            return OPAQUE
        return M.make([e + off for e in c.dims], np.asarray(c.labels))
    cd = c.cdim + out.dim() - x.dim()
    if out.shape[cd] != x.shape[c.cdim]:
        ctx.fix(c)
        return OPAQUE
    return Ch(cd, c.labels)


def matmul(ctx: RuleContext) -> Any:
    """matmul/bmm/einsum/attention: conservative, every input channel FIXED and the output opaque."""
    return opaque_rule(ctx)


def non_tensor(ctx: RuleContext) -> None:
    """``x.size()``, ``x.shape``, ``x.dim()``: no channel semantics."""
    return None


# -- layers -------------------------------------------------------------------------------------------------------


def _input(ctx: RuleContext) -> tuple[torch.Tensor, Ch]:
    x = ctx.args[0]
    c = ctx.ch(0)
    return x, c if isinstance(c, Ch) else OPAQUE


def conv(ctx: RuleContext) -> Ch:
    """Conv1d/2d/3d: the input channels are consumed (grouped: the same positions in every group); the outputs are
    new channels, coupled to the inputs for depthwise convs."""
    m: nn.Module = ctx.module
    x, c = _input(ctx)
    cin, cout, g = m.in_channels, m.out_channels, m.groups
    n_in, n_out = cin // g, cout // g
    if c.cdim is None or c.param is not None or c.cdim != 1:
        ctx.fix(c)
        in_labels = ctx.fixed(cin)
    else:
        in_labels = c.labels
    ctx.site("in", ctx.name, in_labels, module_type="conv", in_spatial=tuple(x.shape[2:]),
             out_spatial=tuple(ctx.out.shape[2:]))
    out = ctx.new(cout)
    if g > 1:
        if n_in == 1:  # depthwise (multiplier n_out): output j belongs to input channel j // n_out
            ctx.union(out, np.repeat(in_labels, n_out))
        else:  # grouped: local position l is removed from every group at once
            ins = in_labels.reshape(g, n_in)
            for k in range(1, g):
                ctx.union(ins[0], ins[k])
            outs = out.reshape(g, n_out)
            for k in range(1, g):
                ctx.union(outs[0], outs[k])
    ctx.site("out", ctx.name, out, module_type="conv", spatial=tuple(ctx.out.shape[2:]))
    return Ch(1, out)


def linear(ctx: RuleContext) -> Ch:
    """Linear: consumes the last dim (when it is the channel dim), produces new channels on the last dim."""
    m: nn.Linear = ctx.module
    x, c = _input(ctx)
    if c.cdim is not None and c.param is None and c.cdim == x.dim() - 1:
        in_labels = c.labels
    else:
        if c.cdim is not None and c.param is None:
            # the linear acts on another dim than the tracked channels: those pass through untouched
            ctx.site("in", ctx.name, ctx.fixed(m.in_features), module_type="linear")
            return Ch(c.cdim, c.labels)
        ctx.fix(c)
        in_labels = ctx.fixed(m.in_features)
    ctx.site("in", ctx.name, in_labels, module_type="linear")
    out = ctx.new(m.out_features)
    ctx.site("out", ctx.name, out, module_type="linear", spatial=(),
             tokens=math.prod(ctx.out.shape[1:-1]) if ctx.out.dim() > 2 else 1)
    return Ch(ctx.out.dim() - 1, out)


def batchnorm(ctx: RuleContext) -> Ch:
    """BatchNorm/InstanceNorm: per-channel parameters and statistics on dim 1, sliced along."""
    x, c = _input(ctx)
    if c.cdim != 1 or c.param is not None:
        ctx.fix(c)
        return OPAQUE
    ctx.site("norm", ctx.name, c.labels, module_type=type(ctx.module).__name__)
    return Ch(1, c.labels)


def groupnorm(ctx: RuleContext) -> Ch:
    """GroupNorm: statistics are shared inside a group, so a channel goes only with its whole group."""
    m: nn.GroupNorm = ctx.module
    x, c = _input(ctx)
    if c.cdim != 1 or c.param is not None:
        ctx.fix(c)
        return OPAQUE
    per = m.num_channels // m.num_groups
    grp = c.labels.reshape(m.num_groups, per)
    for k in range(1, per):
        ctx.union(grp[:, 0], grp[:, k])
    ctx.site("norm", ctx.name, c.labels, module_type="GroupNorm")
    return Ch(1, c.labels)


def layernorm(ctx: RuleContext) -> Ch:
    """LayerNorm normalises over its last dims: channels among them would change the statistics (FIXED)."""
    m: nn.LayerNorm = ctx.module
    x, c = _input(ctx)
    if c.cdim is None or c.param is not None:
        return OPAQUE
    nd = len(m.normalized_shape)
    if c.cdim >= x.dim() - nd:
        ctx.fix(c)
    return Ch(c.cdim, c.labels)


def f_layer_norm(ctx: RuleContext) -> Ch:
    """``F.layer_norm(x, shape, weight, bias)``."""
    x, c = _input(ctx)
    if c.cdim is None:
        ctx.fix_inputs()
        return OPAQUE
    nd = len(ctx.arg(1, "normalized_shape"))
    if c.cdim >= x.dim() - nd:
        ctx.fix_inputs()
    return Ch(c.cdim, c.labels)


def prelu(ctx: RuleContext) -> Ch:
    """PReLU: one slope per channel (sliced along) or a single shared one."""
    m: nn.PReLU = ctx.module
    x, c = _input(ctx)
    if m.num_parameters == 1 or c.cdim is None:
        return _like_first(ctx)
    if c.cdim != 1:
        ctx.fix(c)
        return OPAQUE
    ctx.site("norm", ctx.name, c.labels, module_type="PReLU")
    return Ch(1, c.labels)


def channel_mixing_module(ctx: RuleContext) -> Ch:
    """Softmax/LogSoftmax modules: mixing along their dim."""
    m = ctx.module
    c = ctx.ch(0)
    if not isinstance(c, Ch) or c.cdim is None:
        return OPAQUE
    d = getattr(m, "dim", None)
    if d is None or _norm_dim(d, ctx.args[0].dim()) == c.cdim:
        ctx.fix(c)
        return OPAQUE
    return Ch(c.cdim, c.labels)


# ----------------------------------------------------------------------------------------------------------------
# the built-in tables

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                        nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Tanhshrink,
                        nn.Softsign, nn.LogSigmoid, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                        nn.AlphaDropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                        nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                        nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                        nn.LPPool2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d,
                        nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.Threshold)
for _cls in _ELEMENTWISE_MODULES:
    MODULE_RULES[_cls] = elementwise
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    MODULE_RULES[_cls] = conv
MODULE_RULES[nn.Linear] = linear
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
             nn.InstanceNorm2d, nn.InstanceNorm3d):
    MODULE_RULES[_cls] = batchnorm
MODULE_RULES[nn.GroupNorm] = groupnorm
MODULE_RULES[nn.LayerNorm] = layernorm
MODULE_RULES[nn.PReLU] = prelu
MODULE_RULES[nn.Softmax] = channel_mixing_module
MODULE_RULES[nn.LogSoftmax] = channel_mixing_module
MODULE_RULES[nn.Softmax2d] = lambda ctx: (ctx.fix(ctx.ch(0)), OPAQUE)[1]
MODULE_RULES[nn.Flatten] = reshape
MODULE_RULES[nn.ChannelShuffle] = opaque_rule
MODULE_RULES[nn.PixelShuffle] = opaque_rule
MODULE_RULES[nn.PixelUnshuffle] = opaque_rule

_ELEMENTWISE_FUNCS = [F.relu, F.relu_, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh,
                      F.leaky_relu, F.elu, F.selu, F.celu, F.mish, F.softplus, F.hardtanh, F.dropout, F.dropout1d,
                      F.dropout2d, F.dropout3d, F.alpha_dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d,
                      F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                      F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
                      F.interpolate, F.upsample, F.logsigmoid, torch.relu, torch.sigmoid, torch.tanh, torch.exp,
                      torch.abs, torch.neg, torch.sqrt, torch.rsqrt, torch.square, torch.clamp, torch.clip,
                      torch.log, torch.sin, torch.cos, torch.erf, torch.sign, torch.zeros_like, torch.ones_like,
                      torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like, torch.pow,
                      torch.nan_to_num, torch.detach, torch.clone, operator.neg, operator.pos, abs,
                      torch.nn.functional.hardshrink, torch.nn.functional.softshrink, torch.relu_]
for _f in _ELEMENTWISE_FUNCS:
    FUNCTION_RULES[_f] = elementwise
for _f in (operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.iadd,
           operator.isub, operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
           torch.maximum, torch.minimum, torch.where, torch.true_divide, torch.rsub, torch.lerp, torch.addcmul,
           torch.addcdiv, torch.fmod, torch.remainder, operator.mod, operator.pow):
    FUNCTION_RULES[_f] = broadcast
for _f in (torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var, torch.prod, torch.logsumexp,
           torch.max, torch.min, torch.norm, torch.median):
    FUNCTION_RULES[_f] = reduction
for _f in (torch.softmax, F.softmax, F.log_softmax, torch.log_softmax, torch.cumsum, torch.cumprod, F.softmin,
           F.glu):
    FUNCTION_RULES[_f] = along_dim
FUNCTION_RULES[F.normalize] = normalize
for _f in (torch.flatten, torch.reshape):
    FUNCTION_RULES[_f] = reshape
for _f in (torch.permute, torch.transpose, torch.swapaxes, torch.t, torch.movedim, torch.moveaxis):
    FUNCTION_RULES[_f] = permute
for _f in (torch.unsqueeze, torch.squeeze):
    FUNCTION_RULES[_f] = unsqueeze
FUNCTION_RULES[torch.cat] = cat
FUNCTION_RULES[torch.concat] = cat
FUNCTION_RULES[torch.concatenate] = cat
FUNCTION_RULES[torch.stack] = stack
for _f in (torch.split, torch.chunk, torch.tensor_split, torch.unbind):
    FUNCTION_RULES[_f] = split
FUNCTION_RULES[operator.getitem] = getitem
FUNCTION_RULES[F.pad] = pad
FUNCTION_RULES[torch.broadcast_to] = expand
for _f in (torch.matmul, torch.bmm, torch.mm, torch.einsum, torch.baddbmm, torch.addmm, operator.matmul,
           F.scaled_dot_product_attention, torch.outer, torch.kron):
    FUNCTION_RULES[_f] = matmul
FUNCTION_RULES[F.layer_norm] = f_layer_norm
FUNCTION_RULES[getattr] = non_tensor
FUNCTION_RULES[torch.numel] = non_tensor

for _m in ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "contiguous",
           "clone", "float", "half", "double", "bfloat16", "to", "type", "type_as", "detach", "abs", "neg", "exp",
           "sqrt", "rsqrt", "square", "log", "pow", "sign", "cpu", "cuda", "requires_grad_", "zero_", "fill_",
           "new_zeros_like", "erf", "nan_to_num", "hardswish", "sin", "cos"):
    METHOD_RULES[_m] = elementwise
for _m in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "true_divide", "maximum", "minimum",
           "where", "lerp", "addcmul", "addcdiv", "masked_fill", "masked_fill_", "pow_", "rsub", "fmod"):
    METHOD_RULES[_m] = broadcast
for _m in ("mean", "sum", "amax", "amin", "std", "var", "prod", "logsumexp", "max", "min", "norm", "median"):
    METHOD_RULES[_m] = reduction
for _m in ("softmax", "log_softmax", "cumsum", "cumprod"):
    METHOD_RULES[_m] = along_dim
for _m in ("view", "reshape", "flatten", "view_as", "reshape_as", "unflatten"):
    METHOD_RULES[_m] = reshape
for _m in ("permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "mT"):
    METHOD_RULES[_m] = permute
for _m in ("unsqueeze", "squeeze", "unsqueeze_", "squeeze_"):
    METHOD_RULES[_m] = unsqueeze
for _m in ("split", "chunk", "tensor_split", "unbind"):
    METHOD_RULES[_m] = split
for _m in ("expand", "expand_as", "repeat", "broadcast_to"):
    METHOD_RULES[_m] = expand
for _m in ("matmul", "bmm", "mm"):
    METHOD_RULES[_m] = matmul
for _m in ("size", "dim", "numel", "__len__", "nelement", "element_size", "get_device", "is_contiguous"):
    METHOD_RULES[_m] = non_tensor


def describe_rule_tables() -> dict[str, int]:
    """How many module classes, functions and methods have a built-in rule (for docs and tests)."""
    return {"modules": len(MODULE_RULES), "functions": len(FUNCTION_RULES), "methods": len(METHOD_RULES)}



# rules that understand channels on several dims (attention heads, :mod:`.multidim`); any other rule sees such
# inputs as opaque after their channels are kept whole (graph.apply)
for _r in (elementwise, broadcast, reduction, along_dim, reshape, permute, unsqueeze, cat, split, getitem, expand,
           non_tensor, opaque_rule):
    _r.multidim = True  # type: ignore[attr-defined]
