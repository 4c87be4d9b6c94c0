"""Helpers shared by the metrics modules: where a model lives, input-size checks, mode preservation."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from ..errors import PrunekitError


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first floating parameter or buffer (float32 if none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def check_shape(name: str, shape: Sequence[int], min_dims: int = 1) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints, or raise a :class:`PrunekitError` naming ``name``."""
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError) as e:
        raise PrunekitError(f"{name} must be a sequence of positive integers, got {shape!r}") from e
    if len(dims) < min_dims or any(d <= 0 for d in dims) or any(d != s for d, s in zip(dims, shape)):
        raise PrunekitError(f"{name} must be at least {min_dims} positive integers, got {tuple(shape)!r}")
    return dims


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; afterwards restore every submodule's own ``training`` flag."""
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


MAX_INPUT_ELEMENTS = 1 << 28
"""The largest input (batch included) the metrics build: 2**28 elements, 1 GiB of float32. A larger
``input_size`` is an error (e.g. ``(3, 100000, 100000)``), not an attempt to allocate it."""


def check_input_elements(dims: Sequence[int]) -> None:
    """Raise a :class:`PrunekitError` if an input of shape ``dims`` (batch included) has more than
    :data:`MAX_INPUT_ELEMENTS` elements."""
    n = 1
    for d in dims:
        n *= int(d)
    if n > MAX_INPUT_ELEMENTS:
        raise PrunekitError(f"an input of shape {list(dims)} has {n:,} elements, more than the {MAX_INPUT_ELEMENTS:,} "
                            "the metrics allow (check input_size: it is (C, H, W) or (N, C, H, W))")


_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_STOCK_FORWARDS = {c.forward for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d) + _POOLS}


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


@contextlib.contextmanager
def input_checks(model: nn.Module, dims: Sequence[int]) -> Iterator[None]:
    """For the forward passes in the block, check before each layer runs what a wrong ``input_size`` breaks:
    the first conv/linear layer called must take the input's channels (features), and every conv/pooling layer
    must get a spatial size at least its (dilated) kernel after padding; either failure is a PrunekitError naming
    the layer and the input size. Anything else a forward pass raises is left alone (a bug keeps its traceback)."""
    dims = tuple(int(d) for d in dims)
    state = {"first": True}
    names = {m: n for n, m in model.named_modules()}

    def pre(m: nn.Module, args: tuple) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is None:
            return
        label = f"{names.get(m) or '<model>'} ({type(m).__name__})"
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            first, state["first"] = state["first"], False
            want = m.in_features if isinstance(m, nn.Linear) else m.in_channels
            got = int(x.shape[-1]) if isinstance(m, nn.Linear) else (int(x.shape[1]) if x.dim() > 1 else None)
            if first and got is not None and got != want:
                what = "features" if isinstance(m, nn.Linear) else "channels"
                raise PrunekitError(f"an input of shape {list(dims)} gives the first layer {label} {got} input {what}; "
                                    f"it takes {want} (wrong input_size?)")
        if type(m).forward in _STOCK_FORWARDS:  # a subclass that pads in its own forward is left to itself
            n = len(m.kernel_size) if isinstance(m, nn.modules.conv._ConvNd) else x.dim() - 2
            if isinstance(m, nn.modules.conv._ConvNd) and isinstance(m.padding, str):
                return  # "same" / "valid": torch checks these itself
            k, pad = _tuple(m.kernel_size, n), _tuple(m.padding, n)
            dil, stride = _tuple(getattr(m, "dilation", 1), n), _tuple(m.stride, n)
            ceil = bool(getattr(m, "ceil_mode", False))
            spatial = tuple(int(s) for s in x.shape[-n:]) if n > 0 else ()
            need = tuple(d * (kk - 1) + 1 - 2 * p - (st - 1 if ceil else 0)
                         for kk, p, d, st in zip(k, pad, dil, stride))
            if any(s < r for s, r in zip(spatial, need)):
                raise PrunekitError(f"input_size {list(dims)} is too small: layer {label} gets a spatial size of "
                                    f"{'x'.join(map(str, spatial))}, less than its kernel "
                                    f"{'x'.join(map(str, k))} needs ({'x'.join(map(str, need))}); use a larger "
                                    "input_size")

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd) + _POOLS)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
