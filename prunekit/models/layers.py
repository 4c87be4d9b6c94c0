"""Building blocks shared by the model zoo: channel selection, option-A shortcut, cfg checking, inits."""
from __future__ import annotations

import math
from numbers import Integral
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PrunekitError


class ChannelSelection(nn.Module):
    """Keep the input channels whose entry in the 0/1 float buffer ``indexes`` is non-zero (network slimming).

    ``indexes`` is a buffer (saved in the state_dict, never trained). A fresh layer keeps the first ``kept``
    channels (all of them by default), so a model built from a pruned cfg runs before its weights are loaded.
    The gather index is cached and recomputed whenever the buffer is changed in place or replaced.
    """

    def __init__(self, num_channels: int, kept: int | None = None) -> None:
        super().__init__()
        kept = num_channels if kept is None else kept
        indexes = torch.zeros(num_channels)
        indexes[:kept] = 1.0
        self.register_buffer("indexes", indexes)
        self._cache_key: tuple[Any, ...] | None = None
        self._cache_idx: torch.Tensor | None = None

    def set_kept(self, kept: Sequence[int] | torch.Tensor) -> None:
        """Set the selection to exactly the channel positions in ``kept`` (0-based, full-width numbering)."""
        idx = torch.as_tensor(kept, dtype=torch.long, device=self.indexes.device).flatten()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.indexes.numel()):
            raise PrunekitError(f"channel selection of width {self.indexes.numel()}: kept positions out of "
                                f"range: {idx.tolist()}")
        with torch.no_grad():
            self.indexes.zero_()
            self.indexes[idx] = 1.0

    def num_kept(self) -> int:
        """Number of channels this layer lets through."""
        return int(torch.count_nonzero(self.indexes))

    def _kept_index(self) -> torch.Tensor | None:
        ind = self.indexes
        key = (ind.data_ptr(), ind._version, ind.device, ind.numel())
        if key != self._cache_key:
            idx = torch.nonzero(ind).flatten()
            self._cache_idx = None if idx.numel() == ind.numel() else idx
            self._cache_key = key
        return self._cache_idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self._kept_index()
        return x if idx is None else x.index_select(1, idx)

    def extra_repr(self) -> str:
        return f"{self.indexes.numel()}"


class ShortcutA(nn.Module):
    """Parameter-free "option A" shortcut: ``AvgPool2d(2)`` then zero-pad the channels up to ``out_channels``.

    ``ceil_mode`` makes the spatial size match a stride-2 3x3 conv on odd inputs (identical on even ones).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        pad = self.out_channels - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad > 0 else x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def check_cfg(model: str, cfg: Sequence[Any], expected_len: int, allow_pool: bool = False) -> list[Any]:
    """Validate a cfg and return it as a plain JSON-able list (``int`` widths, ``'M'`` if ``allow_pool``).

    Raises :class:`PrunekitError` naming ``model`` for a wrong length or a non-positive / non-integer width.
    """
    if isinstance(cfg, (str, bytes)) or not isinstance(cfg, Sequence):
        raise PrunekitError(f"{model}: cfg must be a list of {expected_len} entries, got {cfg!r}")
    if len(cfg) != expected_len:
        raise PrunekitError(f"{model}: cfg must have {expected_len} entries, got {len(cfg)}")
    out: list[Any] = []
    for i, v in enumerate(cfg):
        if allow_pool and v == "M":
            out.append("M")
        elif isinstance(v, Integral) and not isinstance(v, bool) and int(v) > 0:
            out.append(int(v))
        else:
            raise PrunekitError(f"{model}: cfg[{i}] must be a positive integer width, got {v!r}")
    return out


def check_at_most(model: str, cfg: Sequence[int], limits: Sequence[int]) -> None:
    """Raise if ``cfg[i] > limits[i]`` (a channel selection cannot keep more channels than its BN has)."""
    for i, (v, lim) in enumerate(zip(cfg, limits)):
        if v > lim:
            raise PrunekitError(f"{model}: cfg[{i}] = {v} exceeds the {lim} channels available at that layer")


def check_no_cfg(model: str, cfg: Sequence[Any] | None) -> None:
    """Raise for models that take no cfg."""
    if cfg is not None:
        raise PrunekitError(f"{model}: this model takes no cfg (got a list of {len(cfg)} entries)")


def init_conv_normal_fan_out(module: nn.Module, bn_weight: float) -> None:
    """Seed-codebase init: conv ``N(0, sqrt(2 / (k*k*out)))``, BN ``gamma = bn_weight``, ``beta = 0``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, bn_weight)
            nn.init.zeros_(m.bias)


def flatten_cfg(nested: Sequence[Sequence[int]]) -> list[int]:
    """Flatten a list of lists into one list."""
    return [int(v) for sub in nested for v in sub]


def residual_stages(n: int, widths: Sequence[int], make_block: Callable[[int, int, int, int], nn.Module],
                    inplanes: int = 16, expansion: int = 1) -> tuple[list[nn.Sequential], int]:
    """Three-stage CIFAR trunk: ``n`` blocks per stage, the first block of stages 2 and 3 strides by 2.

    ``make_block(inplanes, block_index, planes, stride)``; ``block_index`` counts over all stages (the cfg index).
    Returns the stages and the output width.
    """
    stages = []
    for s, planes in enumerate(widths):
        blocks = []
        for i in range(n):
            blocks.append(make_block(inplanes, s * n + i, planes, 2 if (s > 0 and i == 0) else 1))
            inplanes = planes * expansion
        stages.append(nn.Sequential(*blocks))
    return stages, inplanes
