"""Channels spread over several dims: attention heads.

A projection's output channels (``q_proj``: ``H·D`` of them) become two dims when the model views them as heads
(``(B, T, H, D)``), sometimes three (a fused ``qkv`` viewed as ``(B, N, 3, H, D)``). A :class:`~.rules.Ch` then has
``cdim`` plus ``inner`` dims and one label axis per channel dim. The rules here follow such tensors through the
ops attention uses (view/reshape, transpose/permute, slicing and concatenation along head dims for rotary
embeddings, broadcasting with masks and rotary tables, matmul, ``F.scaled_dot_product_attention``) and send them
back to one dim when the heads are merged again (``(B, T, H·D)`` into ``o_proj``).

Where a channel dim is split into heads, prunekit decides what a *unit* is: by default a whole head (the ``D``
positions of a head are united, so every head stays ``D`` wide and the view ``(B, T, -1, D)`` stays valid); a
split that is not recognisably attention (no ``head_dim``-like attribute of the module equals the inner size) keeps
its channels whole, as before. Grouped-query attention needs nothing special: ``repeat_kv`` or ``enable_gqa`` maps
query head ``h`` to key/value head ``h // groups``, and the matmul unites them, so a key/value head and its query
heads are one unit and every layer keeps a valid GQA layout.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .rules import OPAQUE, Ch, RuleContext, _norm_dim

HEAD_DIM_ATTRS = ("head_dim", "attention_head_size", "head_size", "dim_head", "d_head", "d_k", "head_dim_qk")
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads")


def is_multi(c: Any) -> bool:
    """A ``Ch`` whose channels span several dims."""
    return isinstance(c, Ch) and c.cdim is not None and c.param is None and bool(c.inner)


def make(dims: Sequence[int], labels: np.ndarray) -> Ch:
    """A ``Ch`` over ``dims`` (label-axis order) with n-D ``labels``; one dim gives a plain ``Ch``."""
    dims = tuple(int(d) for d in dims)
    if not dims:
        return OPAQUE
    if len(dims) == 1:
        return Ch(dims[0], np.asarray(labels).reshape(-1))
    return Ch(dims[0], np.asarray(labels), inner=dims[1:])


def sorted_view(c: Ch) -> tuple[list[int], np.ndarray]:
    """``(channel dims in increasing order, labels with axes in that order)``."""
    dims = list(c.dims)
    order = list(np.argsort(dims))
    return [dims[i] for i in order], np.transpose(np.asarray(c.labels).reshape([len_ for len_ in _shape(c)]), order)


def _shape(c: Ch) -> tuple[int, ...]:
    lab = np.asarray(c.labels)
    return lab.shape if lab.ndim == len(c.dims) else (lab.size,)


def _blocks(src: Sequence[int], dst: Sequence[int]) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """Split a reshape into blocks of consecutive dims with equal products (size-1 dims are blocks of their own
    where possible): ``[((a, b), (p, q)), ...]`` meaning ``src[a:b]`` became ``dst[p:q]``."""
    out, i, j = [], 0, 0
    n, m = len(src), len(dst)
    while i < n or j < m:
        if i < n and j < m and src[i] == dst[j]:
            out.append(((i, i + 1), (j, j + 1)))
            i, j = i + 1, j + 1
            continue
        if i < n and src[i] == 1 and (j >= m or dst[j] != 1):
            out.append(((i, i + 1), (j, j)))
            i += 1
            continue
        if j < m and dst[j] == 1 and (i >= n or src[i] != 1):
            out.append(((i, i), (j, j + 1)))
            j += 1
            continue
        a, p = i, j
        ps, pd = 1, 1
        if i < n:
            ps *= src[i]
            i += 1
        if j < m:
            pd *= dst[j]
            j += 1
        while ps != pd:
            if ps < pd and i < n:
                ps *= src[i]
                i += 1
            elif pd < ps and j < m:
                pd *= dst[j]
                j += 1
            else:
                return None
        out.append(((a, i), (p, j)))
    return out


def regroup(c: Ch, in_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[Ch, bool] | None:
    """The channels of ``view(out_shape)`` of a tensor of ``in_shape`` with channels ``c``: ``(Ch, split)`` where
    ``split`` says that one channel dim became several; None when the reshape cannot be followed."""
    blocks = _blocks(list(in_shape), list(out_shape))
    if blocks is None:
        return None
    dims, lab = sorted_view(c)
    chan_blocks = [blk for blk in blocks if any(blk[0][0] <= d < blk[0][1] for d in dims)]
    in_sel = [1] * len(in_shape)
    out_sel = [1] * len(out_shape)
    for (a, b), (p, q) in chan_blocks:
        for d in range(a, b):
            in_sel[d] = int(in_shape[d])
        for d in range(p, q):
            out_sel[d] = int(out_shape[d])
    expanded = [int(in_shape[d]) if d in dims else 1 for d in range(len(in_shape))]
    full = np.broadcast_to(lab.reshape(expanded), in_sel).reshape(out_sel)
    new_dims = []
    for (a, b), (p, q) in chan_blocks:
        for d in range(p, q):
            if out_sel[d] > 1 and not (full == full.take([0], axis=d)).all():
                new_dims.append(d)
    if not new_dims:
        return None
    index = tuple(slice(None) if d in new_dims else 0 for d in range(len(out_shape)))
    labels = full[index]
    split = len(new_dims) > len(dims)
    return make(new_dims, np.ascontiguousarray(labels)), split


def head_attrs(ctx: RuleContext) -> dict[str, int]:
    """Integer head attributes (``head_dim``, ``num_heads``, ...) of the module the op runs in and its parents."""
    graph = ctx.graph
    path = graph.current_module
    found: dict[str, int] = {}
    while True:
        m = graph.modules.get(path)
        for a in HEAD_DIM_ATTRS + HEAD_COUNT_ATTRS:
            v = getattr(m, a, None) if m is not None else None
            if isinstance(v, int) and not isinstance(v, bool) and a not in found:
                found[a] = v
        if not path:
            return found
        path = path.rpartition(".")[0]


def split_heads(ctx: RuleContext, c: Ch) -> Ch:
    """A channel dim just split into several (``(B, T, H·D)`` viewed as ``(B, T, H, D)``): whole heads are units
    when this is recognisably attention, else the channels stay whole."""
    lab = np.asarray(c.labels)
    sizes = lab.shape
    attrs = head_attrs(ctx)
    d_inner = sizes[-1]
    is_attention = any(attrs.get(a) == d_inner for a in HEAD_DIM_ATTRS) or \
        any(attrs.get(a) == sizes[-2] for a in HEAD_COUNT_ATTRS)
    if not is_attention or lab.ndim < 2:
        ctx.fix(c)
        return OPAQUE
    head_dims = bool(ctx.graph.options.get("head_dims"))
    if head_dims:  # every head loses the same dims: position d of every head is one unit
        first = lab.reshape(-1, sizes[-2], d_inner)[:, :1, :]
        ctx.union(np.broadcast_to(first, lab.reshape(-1, sizes[-2], d_inner).shape).reshape(-1), lab.reshape(-1))
    else:  # whole heads
        rows = lab.reshape(-1, d_inner)
        ctx.union(np.repeat(rows[:, :1], d_inner, axis=1).reshape(-1), rows.reshape(-1))
    ctx.graph.attention.append({"module": ctx.graph.current_module, "labels": lab.copy(),
                                "heads": int(sizes[-2]), "head_dim": int(d_inner)})
    return c


def reshape(ctx: RuleContext, c: Ch, x: torch.Tensor, out: torch.Tensor) -> Ch:
    """view/reshape/flatten/unflatten/squeeze/unsqueeze of a tensor with (possibly multi-dim) channels."""
    res = regroup(c, tuple(x.shape), tuple(out.shape))
    if res is None:
        ctx.fix(c)
        return OPAQUE
    new, split = res
    if split and not c.inner:
        return split_heads(ctx, new)
    return new


def permute(c: Ch, order: Sequence[int]) -> Ch:
    """The channel dims follow a permutation of the tensor's dims."""
    return make([list(order).index(d) for d in c.dims], np.asarray(c.labels))


def like_input(ctx: RuleContext, c: Ch, x: torch.Tensor, out: Any) -> Ch:
    """Elementwise: the output has the input's channels when it has the input's shape."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
        ctx.fix(c)
        return OPAQUE
    return c


def reduce(ctx: RuleContext, c: Ch, ndim: int, dims: Any, keepdim: bool) -> Ch:
    """A reduction over ``dims``: channels survive on the dims that are not reduced."""
    if dims is None:
        ctx.fix(c)
        return OPAQUE
    dims = [_norm_dim(d, ndim) for d in ([dims] if isinstance(dims, int) else list(dims))]
    if any(d in c.dims for d in dims):
        ctx.fix(c)
        return OPAQUE
    shift = (lambda d: d) if keepdim else (lambda d: d - sum(1 for r in dims if r < d))
    return make([shift(d) for d in c.dims], np.asarray(c.labels))


def basic_index(idx: Any, ndim: int) -> list[Any] | None:
    """``x[idx]`` as one entry per dim (ints, slices; ``None`` for inserted dims), Ellipsis expanded; None for
    advanced indexing (tensors, lists)."""
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, (torch.Tensor, list)) for i in idx):
        return None
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded: list[Any] = []
    for i in idx:
        expanded += [slice(None)] * (ndim - n_real) if i is Ellipsis else [i]
    return expanded + [slice(None)] * (ndim - sum(1 for i in expanded if i is not None))


def getitem(ctx: RuleContext, c: Ch, src: torch.Tensor, idx: Any) -> Ch:
    """Basic indexing (ints, slices, None, Ellipsis): slices of a channel dim slice its labels, an int drops it."""
    expanded = basic_index(idx, src.dim())
    if expanded is None:
        ctx.fix(c)
        return OPAQUE
    lab = np.asarray(c.labels)
    axes = list(c.dims)
    new_dims: dict[int, int] = {}
    in_d = out_d = 0
    for i in expanded:
        if i is None:
            out_d += 1
            continue
        if in_d in axes:
            ax = axes.index(in_d)
            if isinstance(i, int):
                lab = np.take(lab, i, axis=ax)
                axes.pop(ax)
                for k in list(new_dims):
                    if k > ax:
                        new_dims[k - 1] = new_dims.pop(k)
            else:
                lab = np.take(lab, range(src.shape[in_d])[i], axis=ax)
                new_dims[ax] = out_d
        if not isinstance(i, int):
            out_d += 1
        in_d += 1
    if not axes:
        ctx.fix(c)
        return OPAQUE
    return make([new_dims[k] for k in range(len(axes))], lab)


def unbind_pieces(ctx: RuleContext, c: Ch, d: int, n: int) -> tuple:
    """``unbind(d)`` along a channel dim of a multi-dim ``Ch`` (a fused qkv's ``3``): the pieces are united position
    by position (the same heads leave q, k and v) and keep the other channel dims."""
    ax = list(c.dims).index(d)
    lab = np.asarray(c.labels)
    pieces = [np.take(lab, i, axis=ax) for i in range(n)]
    for p in pieces[1:]:
        ctx.union(pieces[0].reshape(-1), p.reshape(-1))
    rest = [e - (1 if e > d else 0) for e in c.dims if e != d]
    return tuple(make(rest, p) for p in pieces)


def broadcast_align(c: Ch, v: torch.Tensor, out_ndim: int) -> Ch:
    """``c`` (of tensor ``v``) with its dims counted in the broadcast output."""
    off = out_ndim - v.dim()
    return make([d + off for d in c.dims], np.asarray(c.labels))


def constant_along(ctx: RuleContext, c: Ch, dims: Sequence[int]) -> bool:
    """Whether every unit of ``c`` spans whole rows along each of ``dims`` (so removing units never changes the size
    of those dims: an opaque operand spanning them, such as a rotary table along the head dim, stays valid)."""
    lab = np.asarray(c.labels)
    roots = ctx.graph.uf.roots(lab.reshape(-1)).reshape(lab.shape)
    for d in dims:
        if d not in c.dims:
            return False
        ax = list(c.dims).index(d)
        if not (roots == roots.take([0], axis=ax)).all():
            return False
    return True


def prod(xs: Sequence[int]) -> int:
    return int(math.prod(xs))
