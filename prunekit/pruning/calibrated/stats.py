"""What a layer's calibration inputs contribute: the Gram matrix ``XᵀX`` of its input columns.

Every supported layer is a matrix ``W`` of shape ``[out, cols]`` applied to input rows ``x`` (one per token, or
per output position of a conv):

- ``nn.Linear``: ``W`` is the weight, ``x`` the last dimension of the input;
- ``nn.Conv2d`` (``groups=1``, zero padding): the convolution is a Linear over unfolded inputs (``F.unfold``); the
  columns are ordered *position-major, channel fastest* (``W.permute(0, 2, 3, 1)``), so that ``m`` consecutive
  columns are ``m`` consecutive input channels at one kernel position: the N:M blocks of :mod:`prunekit.pruning.nm`.

From ``G = Σ xxᵀ`` over ``n`` rows come Wanda's column norms ``‖X_j‖₂ = sqrt(G_jj)``, SparseGPT's Hessian
``H = 2G/n`` and the reconstruction error ``‖(W − Ŵ)X‖ / ‖WX‖``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be calibrated here (None when it can)."""
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return "grouped/depthwise conv"
        if module.padding_mode != "zeros":
            return f"conv with padding_mode={module.padding_mode}"
        if isinstance(module.padding, str):
            return f"conv with padding={module.padding!r}"
        return None
    return f"{type(module).__name__} layers are not supported by calibrated methods (Linear and Conv2d are)"


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as a float32 ``[out, cols]`` matrix (a copy), in the column order of :func:`input_rows`."""
    w = module.weight.detach()
    if w.dim() == 4:
        w = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w.to(torch.float32).clone()


def matrix_to_weight(mat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`weight_matrix`: ``mat`` back in the shape and dtype of ``weight``."""
    if weight.dim() == 4:
        o, c, kh, kw = weight.shape
        mat = mat.reshape(o, kh, kw, c).permute(0, 3, 1, 2)
    return mat.reshape(weight.shape).to(weight.dtype)


def matrix_to_mask(keep: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A ``[out, cols]`` keep matrix as a bool mask shaped like ``weight``."""
    if weight.dim() == 4:
        o, c, kh, kw = weight.shape
        keep = keep.reshape(o, kh, kw, c).permute(0, 3, 1, 2)
    return keep.reshape(weight.shape).to(torch.bool).contiguous()


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer input ``x`` as float32 rows ``[n, cols]`` (one row per token / output position)."""
    if isinstance(module, nn.Linear):
        return x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
    cols = F.unfold(x.detach().to(torch.float32), module.kernel_size, dilation=module.dilation,
                    padding=module.padding, stride=module.stride)  # [B, C*kh*kw, L], channel slowest
    b, _, npos = cols.shape
    c = module.in_channels
    kk = module.kernel_size[0] * module.kernel_size[1]
    return cols.reshape(b, c, kk, npos).permute(0, 3, 2, 1).reshape(b * npos, kk * c)


class GramCollector:
    """Accumulates ``G = Σ xxᵀ`` (float32, as the reference SparseGPT) and the row count ``n`` of one layer's inputs, from a forward hook."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.cols = weight_matrix(module).shape[1] if not isinstance(module, nn.Linear) else module.in_features
        self.gram = torch.zeros(self.cols, self.cols, dtype=torch.float32, device=module.weight.device)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of layer inputs."""
        rows = input_rows(self.module, x)
        self.gram.addmm_(rows.t(), rows)
        self.n += rows.shape[0]

    def hook(self, _module: nn.Module, args: tuple, _out: object) -> None:
        """Forward hook: the layer's first input."""
        self.add(args[0])

    def column_norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` per input column (float32)."""
        return self.gram.diagonal().clamp_min(0).sqrt().to(torch.float32)

    def hessian(self) -> torch.Tensor:
        """SparseGPT's ``H = 2XXᵀ/n`` (float32)."""
        return (2.0 * self.gram / max(self.n, 1)).to(torch.float32)


def reconstruction_error(w: torch.Tensor, w_new: torch.Tensor, gram: torch.Tensor) -> float:
    """``‖WX − ŴX‖ / ‖WX‖`` from ``G = XᵀX`` (0 when ``WX`` is 0); float32 products, float64 sums."""
    g = gram.to(torch.float32)
    d = (w - w_new).to(torch.float32)
    num = float(((d @ g) * d).sum(dtype=torch.float64).clamp_min(0))
    den = float(((w.to(torch.float32) @ g) * w).sum(dtype=torch.float64).clamp_min(0))
    return (num / den) ** 0.5 if den > 0 else 0.0
