"""Per-operator cost rules used by :mod:`prunekit.metrics.flops`.

:func:`op_cost` sees one call of one ATen operator (its arguments and result, batch included) and returns a
:class:`Cost` for the whole batch, in both conventions and both dense / sparse-aware forms, or ``None`` when the
operator has no rule and is not known to be free.

* MACs: convolution = weight entries x output positions (transposed: x input positions); ``mm``/``addmm``/``bmm``/
  ``baddbmm``/``mv``/``addmv`` = ``M*K*N``; fused attention (``scaled_dot_product_attention`` kernels) =
  ``batch*heads*Lq*Lk*(E + Ev)`` (its two matmuls); the fused ``nn.MultiheadAttention`` fast path = its
  projections + attention. Everything else is 0.
* ``all-ops`` FLOPs (Rethinking's per-element prices on every operator): those ops ``2*MACs``, plus 1 per output element for a bias (``addmm``/``baddbmm``/
  ``addmv``/conv with bias); normalisation (batch/layer/group norm) 2 per output element; softmax 2 per element
  (exp + division); pointwise ops (activations, ``add``/``sub``/``mul``/``div``, comparisons, ...) 1 per output
  element; pooling ``kernel size`` per output element (adaptive pooling: the actual window sizes); reductions
  (``mean``/``sum``/``amax``/...) 1 per input element (``var``/``std`` 2); fused attention adds 3 per attention
  score (scale, softmax) and 1 more with a mask (what the explicit ``q @ k^T * s -> softmax -> @ v`` costs).
* Free (0 in all conventions): views, copies, ``cat``/``stack``, padding, indexing/gathering, tensor creation.

Sparse-aware forms: for a matmul or convolution one of whose operands is a *weight* (computed from parameters,
buffers or constants only, not from the model input), only its non-zero entries count: ``nnz(W) x positions``
instead of ``numel(W) x positions``. Products of two activations (attention) are counted densely.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn as nn


class Cost(NamedTuple):
    """Cost of one operator (or one module's operators) over the whole batch: MACs, ``all-ops`` FLOPs
    (``rflops``) and ``rethinking`` FLOPs (``hflops``: what the seed's module hooks count, see
    :func:`module_hook_cost`), each dense and sparse-aware."""

    macs: int
    sparse_macs: int
    rflops: int
    sparse_rflops: int
    hflops: int = 0
    sparse_hflops: int = 0


ZERO = Cost(0, 0, 0, 0)

IsWeight = Callable[[torch.Tensor], bool]


def first_tensor(x: Any) -> Optional[torch.Tensor]:
    """The first tensor in ``x`` (a tensor, or a nested tuple/list such as an LSTM's output)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def _nnz(w: torch.Tensor) -> int:
    return int(torch.count_nonzero(w.detach()))


def _bind(func: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments of an ATen call by schema name (defaults are not filled in)."""
    names = [a.name for a in func._schema.arguments]
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def _product(macs: int, operands: tuple[torch.Tensor, ...], is_weight: IsWeight) -> int:
    """Sparse-aware MACs of a product: ``macs * nnz(W) / numel(W)`` for the first weight operand (exact: every
    weight entry is used ``macs / numel(W)`` times), else ``macs``."""
    for t in operands:
        if isinstance(t, torch.Tensor) and is_weight(t) and t.numel():
            return macs // t.numel() * _nnz(t)
    return macs


def _matmul(macs: int, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, is_weight: IsWeight,
            bias_add: bool) -> Cost:
    sparse = _product(macs, (b, a), is_weight)
    extra = out.numel() if bias_add else 0
    return Cost(macs, sparse, 2 * macs + extra, 2 * sparse + extra)


def _mm(bound: dict, out: Any, is_weight: IsWeight, bias: bool) -> Cost:
    a, b = (bound["mat1"] if bias else bound["self"]), bound["mat2"]
    return _matmul(a.shape[0] * a.shape[1] * b.shape[1], a, b, out, is_weight, bias)


def _bmm(bound: dict, out: Any, is_weight: IsWeight, bias: bool) -> Cost:
    a, b = (bound["batch1"], bound["batch2"]) if bias else (bound["self"], bound["mat2"])
    return _matmul(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], a, b, out, is_weight, bias)


def _mv(bound: dict, out: Any, is_weight: IsWeight, bias: bool) -> Cost:
    a, v = (bound["mat"] if bias else bound["self"]), bound["vec"]
    return _matmul(a.shape[0] * a.shape[1], a, v, out, is_weight, bias)


def _conv(bound: dict, out: Any, is_weight: IsWeight) -> Cost:
    inp, w, out_t = bound["input"], bound["weight"], first_tensor(out)
    if bound.get("transposed", False):
        positions = inp.numel() // inp.shape[1]          # every input position scatters through the kernel
    else:
        positions = out_t.numel() // out_t.shape[1]      # batch x output spatial positions
    macs = w.numel() * positions
    sparse = _nnz(w) * positions if is_weight(w) else macs
    bias = out_t.numel() if bound.get("bias") is not None else 0
    return Cost(macs, sparse, 2 * macs + bias, 2 * sparse + bias)


def _attention_scores(q: torch.Tensor, k: torch.Tensor) -> int:
    return math.prod(q.shape[:-2]) * q.shape[-2] * k.shape[-2]


def _sdpa(bound: dict, out: Any, is_weight: IsWeight) -> Cost:
    q, k, v = bound["query"], bound["key"], bound["value"]
    scores = _attention_scores(q, k)
    macs = scores * (q.shape[-1] + v.shape[-1])
    masked = bound.get("attn_mask") is not None or bound.get("attn_bias") is not None or bool(
        bound.get("is_causal", False))
    extra = (3 + int(masked)) * scores
    return Cost(macs, macs, 2 * macs + extra, 2 * macs + extra)


def _native_mha(bound: dict, out: Any, is_weight: IsWeight) -> Cost:
    """``nn.MultiheadAttention``'s fused fast path: in-projections, attention, out-projection in one op."""
    q, k = bound["query"], bound["key"]
    e, heads = int(bound["embed_dim"]), int(bound["num_head"])
    w_qkv, w_out = bound["qkv_weight"], bound["proj_weight"]
    rows_q, rows_k = q.numel() // e, k.numel() // e      # batch x Lq, batch x Lk
    dense = (rows_q + 2 * rows_k) * e * e + rows_q * e * e
    if is_weight(w_qkv):
        wq, wk, wv = w_qkv[:e], w_qkv[e:2 * e], w_qkv[2 * e:]
        sparse = rows_q * _nnz(wq) + rows_k * (_nnz(wk) + _nnz(wv))
    else:
        sparse = (rows_q + 2 * rows_k) * e * e
    sparse += rows_q * _nnz(w_out) if is_weight(w_out) else rows_q * e * e
    batch = rows_q // q.shape[-2]
    scores = batch * heads * q.shape[-2] * k.shape[-2]
    attn = scores * 2 * (e // heads)
    biases = (rows_q + 2 * rows_k) * e * int(bound.get("qkv_bias") is not None) + \
        rows_q * e * int(bound.get("proj_bias") is not None)
    extra = biases + (3 + int(bound.get("mask") is not None)) * scores
    if bound.get("need_weights", True) and bound.get("average_attn_weights", True):
        extra += scores                                   # the mean over heads of the returned weights
    macs, smacs = dense + attn, sparse + attn
    return Cost(macs, smacs, 2 * macs + extra, 2 * smacs + extra)


def _rflops(n: int) -> Cost:
    return Cost(0, 0, n, n)


def _window(kernel: Any, dims: int) -> int:
    if isinstance(kernel, int):
        return kernel ** dims
    ks = [int(k) for k in kernel]
    if len(ks) == 1:
        ks = ks * dims
    return math.prod(ks)


def _adaptive_windows(n_in: int, n_out: int) -> int:
    """Sum of the adaptive pooling window lengths along one dimension (= n_in when n_out divides it)."""
    return sum(-((-(i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))


def _adaptive(inp: torch.Tensor, out: torch.Tensor, dims: int) -> int:
    per_map = math.prod(_adaptive_windows(a, b) for a, b in zip(inp.shape[-dims:], out.shape[-dims:]))
    maps = out.numel() // max(1, math.prod(out.shape[-dims:]))  # batch x channels
    return per_map * maps


def _dims(name: str) -> int:
    return 1 if "1d" in name else 3 if "3d" in name else 2


_MM = {"mm": (_mm, False), "addmm": (_mm, True), "bmm": (_bmm, False), "baddbmm": (_bmm, True),
       "mv": (_mv, False), "addmv": (_mv, True)}
_CONV = {"convolution", "_convolution", "convolution_overrideable", "cudnn_convolution", "mkldnn_convolution",
         "_slow_conv2d_forward", "slow_conv3d_forward", "cudnn_convolution_transpose"}
_SDPA = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
         "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
         "_scaled_dot_product_fused_attention_overrideable"}
_NORM = {"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
         "_native_batch_norm_legit_functional", "_batch_norm_with_update", "_batch_norm_no_update",
         "_batch_norm_with_update_functional", "cudnn_batch_norm", "miopen_batch_norm", "native_layer_norm",
         "native_group_norm"}
_SOFTMAX = {"_softmax", "_log_softmax", "_safe_softmax"}
_POOL = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
         "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "mkldnn_max_pool2d",
         "mkldnn_max_pool3d", "quantized_max_pool2d"}
_ADAPTIVE = {"_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
             "adaptive_max_pool2d", "adaptive_max_pool3d", "mkldnn_adaptive_avg_pool2d"}
_REDUCE_1 = {"sum", "mean", "amax", "amin", "max", "min", "prod", "logsumexp", "argmax", "argmin", "norm",
             "linalg_vector_norm", "nansum", "nanmean", "aminmax", "cumsum", "cumprod", "any", "all"}
_REDUCE_2 = {"var", "std", "var_mean", "std_mean"}
# Elementwise non-linearities without ATen's "pointwise" tag.
_ACTIVATIONS = {"_prelu_kernel", "hardswish", "hardswish_", "log_sigmoid_forward", "glu", "rrelu_with_noise",
                "rrelu_with_noise_", "celu", "celu_", "selu", "selu_"}
# Data movement, views, creation: no arithmetic (some carry ATen's "pointwise" tag, e.g. clone, fill).
FREE = {"alias", "clone", "copy", "copy_", "_to_copy", "to", "contiguous", "detach", "lift_fresh", "lift_fresh_copy",
        "cat", "concat", "stack", "hstack", "vstack", "constant_pad_nd", "pad", "reflection_pad1d",
        "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
        "index_select", "index", "gather", "take", "embedding", "masked_select", "nonzero", "index_put",
        "index_put_", "scatter", "scatter_", "slice_scatter", "select_scatter", "masked_scatter", "zeros", "ones",
        "empty", "empty_strided", "full", "zeros_like", "ones_like", "empty_like", "full_like", "new_zeros",
        "new_ones", "new_empty", "new_full", "new_empty_strided", "fill", "fill_", "zero_", "arange",
        "scalar_tensor", "dropout", "native_dropout", "feature_dropout", "alpha_dropout", "repeat", "flip", "roll",
        "tile", "_unsafe_view", "_reshape_alias", "split", "split_with_sizes", "unbind", "chunk", "im2col",
        "col2im", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
        "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "_local_scalar_dense", "item", "resize_",
        "set_", "as_strided_", "unfold", "positive", "_conj", "resolve_conj", "resolve_neg", "one_hot",
        "_unsafe_index", "tril", "triu", "diagonal", "diag", "diag_embed", "_pin_memory",
        "record_stream", "bernoulli", "bernoulli_", "normal_", "uniform_", "randn", "rand", "randint",
        "randperm", "randn_like", "rand_like", "empty_permuted", "_assert_async", "_assert_tensor_metadata",
        "_functional_assert_async", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "dim"}


def op_name(func: Any) -> str:
    """``aten.relu_`` for ``torch.ops.aten.relu_.default``."""
    packet = func.overloadpacket
    return f"{func.namespace}.{packet.__name__}"


def op_cost(func: Any, args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> Optional[Cost]:
    """Cost of one ATen call over the whole batch, or ``None`` for an operator without a rule here.

    ``is_weight(t)`` says whether tensor ``t`` is a weight (computed without the model input).
    """
    name = func.overloadpacket.__name__
    if func.namespace not in ("aten", "prims"):
        return None
    if name in _MM:
        rule, bias = _MM[name]
        return rule(_bind(func, args, kwargs), out, is_weight, bias)
    if name in _CONV:
        return _conv(_bind(func, args, kwargs), out, is_weight)
    if name in _SDPA:
        return _sdpa(_bind(func, args, kwargs), out, is_weight)
    if name == "_native_multi_head_attention":
        return _native_mha(_bind(func, args, kwargs), out, is_weight)
    if name in FREE or getattr(func, "is_view", False):
        return ZERO
    out_t = first_tensor(out)
    if out_t is None:
        return ZERO
    if name in _NORM:
        return _rflops(2 * out_t.numel())
    if name in _SOFTMAX:
        return _rflops(2 * out_t.numel())
    if name in _POOL:
        bound = _bind(func, args, kwargs)
        return _rflops(_window(bound["kernel_size"], _dims(name)) * out_t.numel())
    if name in _ADAPTIVE:
        inp = first_tensor(args)
        return _rflops(_adaptive(inp, out_t, _dims(name))) if inp is not None else None
    if name in _REDUCE_1 or name in _REDUCE_2:
        inp = first_tensor(args)
        n = inp.numel() if inp is not None else out_t.numel()
        return _rflops(n * (2 if name in _REDUCE_2 else 1))
    if name in _ACTIVATIONS or torch.Tag.pointwise in func.tags:
        return _rflops(out_t.numel())
    return None


# Rethinking's counter (rethinking-network-pruning ``compute_flops.print_model_param_flops``): forward hooks on the
# leaf modules of these types; nothing else (functional ops, residual adds, adaptive pooling, ...) is seen.
HOOKED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Upsample)


def module_hook_cost(module: nn.Module, inputs: Any, output: Any, nnz: Optional[int]) -> tuple[int, int]:
    """``(dense, sparse)`` FLOPs (whole batch) of one call of a leaf ``module`` as Rethinking's hooks count it.

    Conv2d ``(2*W + [bias]*Cout)*Hout*Wout*N`` (``W`` = weight entries, non-zero ones for the sparse form); Linear
    ``rows*(2*W + bias entries)`` (the seed counts one row for inputs that are not 2-D; we count every row);
    BatchNorm2d 2 per input element; ReLU 1 per input element; MaxPool2d/AvgPool2d ``kh*kw`` per output element;
    Upsample 12 per output element. Any other module: 0. ``nnz``: the non-zero weight entries (conv/linear)."""
    if not isinstance(module, HOOKED):
        return 0, 0
    inp, out = first_tensor(inputs), first_tensor(output)
    if inp is None or out is None:
        return 0, 0
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        numel = module.weight.numel()
        nnz = numel if nnz is None else nnz
        if isinstance(module, nn.Conv2d):
            bias = out.shape[1] if module.bias is not None else 0
            positions = out.numel() // out.shape[1]  # N * Hout * Wout
            return (2 * numel + bias) * positions, (2 * nnz + bias) * positions
        rows = inp.numel() // max(1, module.in_features)
        bias = module.bias.numel() if module.bias is not None else 0
        return rows * (2 * numel + bias), rows * (2 * nnz + bias)
    if isinstance(module, nn.BatchNorm2d):
        n = 2 * inp.numel()
    elif isinstance(module, nn.ReLU):
        n = inp.numel()
    elif isinstance(module, nn.Upsample):
        n = 12 * out.numel()
    else:
        k = module.kernel_size
        n = (k * k if isinstance(k, int) else math.prod(k)) * out.numel()
    return n, n
