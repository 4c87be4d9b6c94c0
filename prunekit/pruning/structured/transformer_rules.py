"""Channel rules of transformers: attention on heads, embeddings, and the norms of the residual stream.

Attention: ``q @ kᵀ``, ``attn @ v`` and ``F.scaled_dot_product_attention`` on heads.

Queries and keys are contracted over the head dim, so query head ``h`` and the key head it reads are removed
together (position by position); the attention weights of a head and that head's values go together too. With
heads as units (:mod:`.multidim`) this makes a head, in grouped-query attention a key/value head with its query
group, one unit across ``q_proj``/``k_proj``/``v_proj`` rows and ``o_proj`` columns. Any other matmul keeps its
channels whole, as before.

The hidden (residual-stream) width: an ``nn.Embedding`` makes new channels (its weight columns); a norm over the
last dim (``nn.LayerNorm``, ``nn.RMSNorm``, any library's ``*RMSNorm`` / ``*LayerNorm`` with one weight per channel)
passes its channels through and is recorded as a *stream norm* site: removing a channel there changes the
statistics, so structured pruning verifies such a prune against the unpruned model whose norms compute their
statistics over the kept channels (:mod:`.verify`). Parameters expanded or added into the stream (class tokens,
position embeddings) are sliced along.

Importing this module registers the rules (:mod:`.graph` does).
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import builtin_rules  # noqa: F401  (the generic tables first; these entries replace theirs)
from . import multidim as M
from ...errors import CheckpointError, PrunekitError
from ...models.attention import SlicedMultiheadAttention
from .rules import (FUNCTION_RULES, METHOD_RULES, MODULE_PREDICATE_RULES, MODULE_RULES, OPAQUE, Ch, RuleContext,
                    opaque_rule, register_module_rule)


def _keep_whole(ctx: RuleContext, why: str) -> object:
    """Keep every channel of the op whole; remember the module so the report can name it."""
    chs = [c for _, c in ctx.tensor_chs() if c.cdim is not None and c.param is None]
    if chs and ctx.graph.current_module not in ctx.graph.kept_whole:
        ctx.graph.kept_whole.append(ctx.graph.current_module)
    return opaque_rule(ctx)


def _aligned(c: Ch, v: torch.Tensor, on: int) -> tuple[list[int], np.ndarray] | None:
    if c.cdim is None or c.param is not None:
        return None
    return M.sorted_view(M.broadcast_align(c, v, on))


def matmul(ctx: RuleContext) -> object:
    """``a @ b`` for batched attention: scores ``q @ kᵀ`` (contracted over the head dim) and ``weights @ v``."""
    chs = ctx.tensor_chs()
    out = ctx.out
    if len(chs) != 2 or not isinstance(out, torch.Tensor) or out.dim() < 3:
        return _keep_whole(ctx, "matmul")
    (a, ca), (b, cb) = chs
    if a.dim() < 2 or b.dim() < 2:
        return _keep_whole(ctx, "matmul")
    on = out.dim()
    batch = set(range(on - 2))
    sa, sb = _aligned(ca, a, on), _aligned(cb, b, on)
    if sa is None and sb is None:
        return OPAQUE
    if sa is not None and sb is not None and on - 1 in sa[0] and on - 2 in sb[0]:  # q @ kᵀ over the head dim
        da, la = sa
        db, lb = sb
        if set(da) - {on - 1} != set(db) - {on - 2} or not set(da) - {on - 1} <= batch or la.shape != lb.shape:
            return _keep_whole(ctx, "matmul")
        ctx.union(la.reshape(-1), lb.reshape(-1))
        heads = [d for d in da if d != on - 1]
        if heads and M.constant_along(ctx, M.make(da, la), [on - 1]):
            return M.make(heads, np.take(la, 0, axis=da.index(on - 1)))
        return OPAQUE
    if sb is not None and (sa is None or set(sa[0]) <= batch) and set(sb[0]) - {on - 1} <= batch:  # weights @ v
        db, lb = sb
        heads = [d for d in db if d != on - 1]
        if not heads:
            return _keep_whole(ctx, "matmul")
        if sa is None:
            if any(a.shape[d - (on - a.dim())] > 1 for d in heads if d - (on - a.dim()) >= 0):
                return _keep_whole(ctx, "matmul")  # untracked weights that differ per head
            return M.make(db, lb)
        da, la = sa
        if da != heads:
            return _keep_whole(ctx, "matmul")
        per_head = lb if on - 1 not in db else lb.reshape(la.shape + (-1,))
        ctx.union(np.broadcast_to(la[..., None], per_head.shape).reshape(-1) if per_head.ndim > la.ndim else
                  la.reshape(-1), per_head.reshape(-1))
        return M.make(db, lb)
    return _keep_whole(ctx, "matmul")


def sdpa(ctx: RuleContext) -> object:
    """``F.scaled_dot_product_attention(q, k, v, ...)`` on ``(B, H, T, D)`` heads, grouped-query included."""
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    cq, ck, cv = ctx.graph.ch_of(q), ctx.graph.ch_of(k), ctx.graph.ch_of(v)
    if not all(M.is_multi(c) for c in (cq, ck, cv)) or q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        if any(isinstance(c, Ch) and c.cdim is not None for c in (cq, ck, cv)):
            return _keep_whole(ctx, "scaled_dot_product_attention")
        return OPAQUE
    if ctx.graph.options.get("head_dims") and ctx.arg(6, "scale") is None:
        raise PrunekitError(f"head_dims: F.scaled_dot_product_attention in module {ctx.graph.current_module!r} "
                            "scales by 1/sqrt(head_dim) of its inputs, which removing dims would change; pass "
                            "scale= in the model, or prune whole heads (head_dims=False)")
    views = [M.sorted_view(c) for c in (cq, ck, cv)]
    if any(d != [1, 3] for d, _ in views):
        return _keep_whole(ctx, "scaled_dot_product_attention")
    (_, lq), (_, lk), (_, lv) = views
    h, hk = lq.shape[0], lk.shape[0]
    if hk == 0 or h % hk or lv.shape[0] != hk or lq.shape[1] != lk.shape[1]:
        return _keep_whole(ctx, "scaled_dot_product_attention")
    mask = ctx.arg(3, "attn_mask")
    group = h // hk
    kv_of = np.arange(h) // group
    if isinstance(mask, torch.Tensor) and mask.dim() >= 3 and mask.shape[-3] > 1:  # a mask per head
        cm = ctx.graph.ch_of(mask)
        if isinstance(cm, Ch) and cm.cdim is not None and not cm.inner and cm.param is None and \
                cm.cdim == mask.dim() - 3 and len(cm.labels) == h:
            ctx.union(np.asarray(cm.labels), lq[:, 0])  # a relative-position bias per head goes with its head
        elif isinstance(cm, Ch) and cm.param is not None and cm.pmap is not None and \
                cm.pmap[mask.dim() - 3] >= 0 and mask.shape[-3] == h:
            pd = cm.pmap[mask.dim() - 3]
            ctx.site("param", f"{cm.param}@{pd}", lq[:, 0], param=cm.param, dim=pd)
        else:
            return _keep_whole(ctx, "scaled_dot_product_attention")
    ctx.union(lq.reshape(-1), lk[kv_of].reshape(-1))
    ctx.union(lq[:, 0], lv[kv_of, 0])
    return M.make([1, 3], lv[kv_of])


def embedding(ctx: RuleContext) -> Ch:
    """``nn.Embedding``: the indices carry no channels; the vectors are new channels (weight columns)."""
    m: nn.Embedding = ctx.module
    ctx.fix_inputs()
    out = ctx.new(m.embedding_dim)
    ctx.site("out", ctx.name, out, module_type="embedding", spatial=())
    return Ch(ctx.out.dim() - 1, out)


def _norm_width(m: nn.Module) -> int | None:
    """How many trailing dims a norm module normalises (None: not a last-dim norm prunekit can slice)."""
    shape = getattr(m, "normalized_shape", None)
    if shape is not None:
        return len(shape)
    w = getattr(m, "weight", None)
    return 1 if isinstance(w, torch.Tensor) and w.dim() == 1 else None


def stream_norm(ctx: RuleContext) -> Any:
    """LayerNorm/RMSNorm over the last dim: channels pass through; the norm is a stream-norm site (sliced along, its
    statistics then taken over the kept channels). Any other placement keeps the normalised channels whole."""
    m = ctx.module
    x = ctx.args[0]
    c = ctx.ch(0)
    if not isinstance(c, Ch) or c.cdim is None or c.param is not None:
        return OPAQUE
    nd = _norm_width(m)
    if nd is None or c.inner or not isinstance(ctx.out, torch.Tensor) or ctx.out.shape != x.shape:
        ctx.fix(c)
        return OPAQUE
    if c.cdim < x.dim() - nd:
        return Ch(c.cdim, c.labels)
    w = getattr(m, "weight", None)
    if nd != 1 or c.cdim != x.dim() - 1 or (isinstance(w, torch.Tensor) and tuple(w.shape) != (x.shape[-1],)):
        ctx.fix(c)
        return Ch(c.cdim, c.labels)
    ctx.site("norm", ctx.name, c.labels, module_type=type(m).__name__, stat=True)
    return Ch(c.cdim, c.labels)


def _is_library_norm(m: nn.Module) -> bool:
    """``LlamaRMSNorm``, ``Qwen2RMSNorm``, ``T5LayerNorm``, ...: a leaf norm with one weight per channel."""
    name = type(m).__name__
    if not name.endswith(("RMSNorm", "LayerNorm")) or isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
        return False
    w = getattr(m, "weight", None)
    return isinstance(w, nn.Parameter) and w.dim() == 1 and not any(True for _ in m.children()) and \
        any(hasattr(m, a) for a in ("eps", "variance_epsilon", "epsilon"))


def moves_along(ctx: RuleContext) -> Any:
    """``torch.roll`` / ``torch.flip``: positions move along ``dims`` (Swin's cyclic shift of windows); a channel
    dim among them keeps its channels whole, any other passes them through."""
    c = ctx.ch(0)
    x = ctx.args[0]
    if not isinstance(c, Ch) or c.cdim is None or c.param is not None:
        return OPAQUE
    dims = ctx.arg(2, "dims") if ctx.node.target in (torch.roll, "roll") else ctx.arg(1, "dims")
    dims = [dims] if isinstance(dims, int) else list(dims) if dims is not None else list(range(x.dim()))
    if any((d + x.dim()) % x.dim() in c.dims for d in dims):
        ctx.fix(c)
        return OPAQUE
    return c


for _f in (torch.matmul, torch.bmm, operator.matmul):
    FUNCTION_RULES[_f] = matmul
for _m in ("matmul", "bmm"):
    METHOD_RULES[_m] = matmul
FUNCTION_RULES[F.scaled_dot_product_attention] = sdpa
def multihead_attention(ctx: RuleContext) -> Any:
    """``nn.MultiheadAttention`` as self-attention (query, key and value the same tensor): whole heads are units
    (rows of q, k and v in ``in_proj_weight``, columns of ``out_proj``), the input width is ``in_proj_weight``'s
    columns and the output width ``out_proj``'s rows. Any other use keeps it whole."""
    m: nn.MultiheadAttention = ctx.module
    x = ctx.arg(0, "query")
    same = ctx.arg(1, "key") is x and ctx.arg(2, "value") is x
    out = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
    if not same or ctx.graph.options.get("head_dims") or not m._qkv_same_embed_dim or m.bias_k is not None or \
            m.add_zero_attn or \
            m.in_proj_weight is None or not isinstance(out, torch.Tensor):
        return _mha_whole(ctx)
    c = ctx.ch(0)
    name, h, d = ctx.name, m.num_heads, m.head_dim
    heads = ctx.new(h * d).reshape(h, d)
    ctx.union(np.repeat(heads[:, :1], d, axis=1).reshape(-1), heads.reshape(-1))  # whole heads
    rows = np.concatenate([heads.reshape(-1)] * 3)
    w = f"{name}.in_proj_weight"
    ctx.site("param", f"{w}@0", rows, param=w, dim=0)
    if m.in_proj_bias is not None:
        ctx.site("param", f"{name}.in_proj_bias@0", rows, param=f"{name}.in_proj_bias", dim=0)
    last = x.dim() - 1
    in_labels = c.labels if isinstance(c, Ch) and c.cdim == last and c.param is None and not c.inner else None
    if in_labels is None:
        ctx.fix(c)
        in_labels = ctx.fixed(x.shape[-1])
    ctx.site("param", f"{w}@1", in_labels, param=w, dim=1)
    ctx.site("custom", name, heads.reshape(-1))
    ctx.site("in", f"{name}.out_proj", heads.reshape(-1), module_type="linear")
    new = ctx.new(m.out_proj.out_features)
    ctx.site("out", f"{name}.out_proj", new, module_type="linear", spatial=(), tokens=x.numel() // x.shape[-1])
    ctx.graph.attention.append({"module": name, "labels": heads.copy(), "heads": h, "head_dim": d})
    res = Ch(out.dim() - 1, new)
    return (res,) + tuple(OPAQUE for _ in ctx.out[1:]) if isinstance(ctx.out, (tuple, list)) else res


def _mha_whole(ctx: RuleContext) -> Any:
    opaque_rule(ctx)
    out = ctx.out
    first = out[0] if isinstance(out, (tuple, list)) else out
    res = Ch(first.dim() - 1, ctx.fixed(first.shape[-1]))
    if ctx.graph.current_module not in ctx.graph.kept_whole:
        ctx.graph.kept_whole.append(ctx.graph.current_module)
    return (res,) + tuple(OPAQUE for _ in out[1:]) if isinstance(out, (tuple, list)) else res


def mha_slicer(m: nn.Module, kept: list, full: int) -> None:
    """Make an ``nn.MultiheadAttention`` work on the ``kept`` of its ``full`` head positions (whole heads)."""
    d = m.head_dim
    if len(kept) % d:
        raise CheckpointError(f"channel plan: attention keeps {len(kept)} of {full} positions, not whole heads of {d}")
    if not isinstance(m, SlicedMultiheadAttention):
        m.__class__ = SlicedMultiheadAttention
    m.num_heads = len(kept) // d


for _f in (torch.roll, torch.flip):
    FUNCTION_RULES[_f] = moves_along
for _m in ("roll", "flip"):
    METHOD_RULES[_m] = moves_along
moves_along.multidim = True  # type: ignore[attr-defined]
MODULE_RULES[nn.Embedding] = embedding
MODULE_RULES[nn.LayerNorm] = stream_norm
MODULE_RULES[nn.RMSNorm] = stream_norm
MODULE_PREDICATE_RULES.append((_is_library_norm, stream_norm))
register_module_rule(nn.MultiheadAttention, multihead_attention, slicer=mha_slicer)
matmul.multidim = True  # type: ignore[attr-defined]
sdpa.multidim = True  # type: ignore[attr-defined]
stream_norm.multidim = True  # type: ignore[attr-defined]
multihead_attention.multidim = True  # type: ignore[attr-defined]
