"""Per-module cost formulas used by :mod:`prunekit.metrics.flops`.

Every formula sees one call of one module (its inputs and output, batch included) and returns a :class:`Cost`
for the whole batch, in both conventions and both dense / sparse-aware forms:

* MACs (ptflops / thop / most papers): conv = weight entries x output positions, linear = weight entries x rows;
  bias adds, normalisation, activations, pooling and dropout are 0.
* Rethinking FLOPs (rethinking-network-pruning's ``compute_flops``): conv ``(2*nnz(W) + [bias]*Cout) * positions``,
  linear ``2*nnz(W) + [bias]*out`` per row, normalisation 2 per output element, activation 1 per element,
  pooling ``window size`` per output element.

Sparse-aware forms count only weight entries that are not exactly zero.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn

from ..errors import PrunekitError


class Cost(NamedTuple):
    """Cost of one module call over the whole batch."""

    macs: int
    sparse_macs: int
    rflops: int
    sparse_rflops: int


ZERO = Cost(0, 0, 0, 0)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
         nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_ACT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
        nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_POOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                  nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_FREE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
         nn.Identity, nn.Flatten, nn.Unflatten, nn.Embedding)
# Modules that hold parameters directly *and* have children, whose arithmetic is functional: we cannot count it.
_OPAQUE = (nn.MultiheadAttention,)


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


def _conv(m: nn.Module, out: torch.Tensor) -> Cost:
    w = m.weight
    positions = out.numel() // m.out_channels          # batch x output spatial positions
    bias = out.numel() if m.bias is not None else 0    # one add per output element
    dense, nnz = w.numel(), _nnz(w)
    return Cost(dense * positions, nnz * positions, 2 * dense * positions + bias, 2 * nnz * positions + bias)


def _conv_transpose(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> Cost:
    w = m.weight
    positions = inp.numel() // m.in_channels           # every input position scatters through the kernel
    bias = out.numel() if m.bias is not None else 0
    dense, nnz = w.numel(), _nnz(w)
    return Cost(dense * positions, nnz * positions, 2 * dense * positions + bias, 2 * nnz * positions + bias)


def _linear(m: nn.Linear, out: torch.Tensor) -> Cost:
    rows = out.numel() // m.out_features
    bias = m.out_features if m.bias is not None else 0
    dense, nnz = m.weight.numel(), _nnz(m.weight)
    return Cost(dense * rows, nnz * rows, (2 * dense + bias) * rows, (2 * nnz + bias) * rows)


def _window(kernel: Any, dims: int) -> int:
    if isinstance(kernel, int):
        return kernel ** dims
    return math.prod(int(k) for k in kernel)


def _adaptive_windows(n_in: int, n_out: int) -> int:
    """Sum of the adaptive pooling window lengths along one dimension (= n_in when n_out divides it)."""
    return sum(-((-(i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))


def _adaptive(inp: torch.Tensor, out: torch.Tensor, dims: int) -> int:
    per_map = math.prod(_adaptive_windows(a, b) for a, b in zip(inp.shape[-dims:], out.shape[-dims:]))
    maps = out.numel() // math.prod(out.shape[-dims:])  # batch x channels
    return per_map * maps


_1D = (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
_3D = (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)


def _dims(m: nn.Module) -> int:
    return 1 if isinstance(m, _1D) else 3 if isinstance(m, _3D) else 2


def module_cost(m: nn.Module, inputs: tuple, output: Any) -> Optional[Cost]:
    """Cost of one call of ``m``, or ``None`` when the module type has no formula here."""
    if isinstance(m, _OPAQUE):
        return None
    out = first_tensor(output)
    inp = first_tensor(inputs)
    if out is None:
        return None
    if isinstance(m, _CONV + _CONV_T) and inp is not None and inp.dim() == m.weight.dim() - 1:
        raise PrunekitError(f"{type(m).__name__} got an unbatched input of shape {list(inp.shape)}: "
                            "input_size must start with the batch dimension, e.g. (1, 3, 32, 32)")
    if isinstance(m, _CONV_T):
        return _conv_transpose(m, inp, out) if inp is not None else None
    if isinstance(m, _CONV):
        return _conv(m, out)
    if isinstance(m, nn.Linear):
        return _linear(m, out)
    if isinstance(m, _NORM):
        return Cost(0, 0, 2 * out.numel(), 2 * out.numel())
    if isinstance(m, _ACT):
        return Cost(0, 0, out.numel(), out.numel())
    if isinstance(m, _POOL):
        ops = _window(m.kernel_size, _dims(m)) * out.numel()
        return Cost(0, 0, ops, ops)
    if isinstance(m, _ADAPTIVE_POOL):
        if inp is None:
            return None
        ops = _adaptive(inp, out, _dims(m))
        return Cost(0, 0, ops, ops)
    if isinstance(m, _FREE):
        return ZERO
    return None
