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

    Forward is a plain ``x.index_select(1, kept_index)`` (or the identity when every channel is kept), so
    ``torch.export``, ``torch.compile``, TorchScript and ONNX see a constant gather with static shapes.
    ``kept_index`` is a *non-persistent* long buffer (not in the state_dict: the checkpoint format is unchanged)
    and ``all_kept`` a plain bool; both are refreshed by :meth:`set_kept`, after ``load_state_dict``, after
    ``.to()``/``.cuda()``/``.half()``, and, in eager mode, whenever ``indexes`` was changed in place or replaced
    (its version counter or identity moved). Under tracing/compiling/export they are used as they stand.
    """

    def __init__(self, num_channels: int, kept: int | None = None) -> None:
        super().__init__()
        kept = num_channels if kept is None else kept
        indexes = torch.zeros(num_channels)
        indexes[:kept] = 1.0
        self.register_buffer("indexes", indexes)
        self.register_buffer("kept_index", torch.arange(kept, dtype=torch.long), persistent=False)
        self.all_kept: bool = kept == num_channels
        self._synced: tuple[Any, int] = (self.indexes, self.indexes._version)

    def set_kept(self, kept: Sequence[int] | torch.Tensor) -> None:
        """Set the selection to exactly the channel positions in ``kept`` (0-based, full-width numbering)."""
        idx = torch.as_tensor(kept, dtype=torch.long, device=self.indexes.device).flatten()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.indexes.numel()):
            raise PrunekitError(f"channel selection of width {self.indexes.numel()}: kept positions out of "
                                f"range: {idx.tolist()}")
        with torch.no_grad():
            self.indexes.zero_()
            self.indexes[idx] = 1.0
        self.refresh()

    def num_kept(self) -> int:
        """Number of channels this layer lets through."""
        return int(torch.count_nonzero(self.indexes))

    def refresh(self) -> None:
        """Recompute ``kept_index`` and ``all_kept`` from ``indexes`` (done automatically; see the class doc)."""
        ind = self.indexes
        if ind.is_meta:  # no values to read (a model built on the meta device): nothing to sync yet
            self._synced = (ind, -1)
            return
        with torch.no_grad(), torch.inference_mode(False):  # a normal tensor: usable later under autograd
            idx = torch.nonzero(ind).flatten().to(torch.long)
        self.kept_index = idx  # assigning to a registered buffer keeps it registered (and non-persistent)
        self.all_kept = int(idx.numel()) == int(ind.numel())
        self._synced = (ind, ind._version)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ChannelSelection:
        out = super()._apply(fn, *args, **kwargs)
        self.refresh()  # .to(device) / .half() replace the buffers: resync on the new ones
        return out

    def _stale(self) -> bool:
        ref, version = self._synced
        ind = self._buffers["indexes"]  # not ``self.indexes``: nn.Module.__getattr__ is slow on the hot path
        return ref is not ind or version != ind._version

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # eager only: pick up a direct in-place edit / replacement of ``indexes`` (pure Python, no tensor op;
        # kept to a few attribute reads: this runs at every forward of every selection)
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.compiler.is_exporting()
                or torch.jit.is_scripting()) and self._stale():
            self.refresh()
        return x if self.all_kept else x.index_select(1, self._buffers["kept_index"])

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
