"""Helpers shared by the metrics modules: where a model lives, input-size checks, mode preservation."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

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
