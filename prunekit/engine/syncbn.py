"""Synchronised batch norm that also works on CPU (gloo): PyTorch's ``nn.SyncBatchNorm`` is GPU-only.

Statistics are computed in float32 whatever the input dtype (bf16 under CPU autocast), and merged across ranks
with Chan et al.'s parallel algorithm: each rank contributes ``(count, mean, M2)`` of its own shard (two-pass,
so data with a large mean keeps its precision) and the global mean and variance follow from
``mean = Σ nᵢ·meanᵢ / N`` and ``M2 = Σ M2ᵢ + Σ nᵢ·(meanᵢ − mean)²``; never from ``E[x²] − E[x]²``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (its backward all-reduces the gradient)."""
    import warnings

    from torch.distributed.nn.functional import all_reduce  # differentiable; its successor is private API

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_reduce is deprecated.*", category=FutureWarning)
        return all_reduce(t)


def sync_batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(mean, biased var, N)`` per channel (dim 1) of ``x`` over the batch of all ranks, float32, differentiable.

    Raises ``ValueError`` (as ``nn.BatchNorm`` does) when the global batch holds at most one value per channel.
    """
    c = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    x32 = x.float()
    n_local = x.numel() // c if c else 0
    if n_local:
        mean_l = x32.mean(dim=dims)
        m2_l = (x32 - mean_l.view(1, c, *([1] * (x.dim() - 2)))).pow(2).sum(dim=dims)
    else:  # an empty shard contributes nothing
        mean_l = x32.new_zeros(c) + x32.sum(dim=dims)
        m2_l = x32.new_zeros(c) + x32.sum(dim=dims)
    rank, world = _world()
    count = x32.new_full((1,), float(n_local))
    if world > 1:
        # every rank fills its own row; one summing all-reduce is then an all-gather that autograd understands
        mine = torch.cat([count, mean_l, m2_l])[None]
        rows = torch.cat([mine.new_zeros(rank, 2 * c + 1), mine, mine.new_zeros(world - rank - 1, 2 * c + 1)])
        rows = _all_reduce_sum(rows)
        counts, means, m2s = rows[:, :1], rows[:, 1:c + 1], rows[:, c + 1:]
    else:
        counts, means, m2s = count[None], mean_l[None], m2_l[None]
    n_total = int(round(float(counts.detach().sum())))
    if n_total <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(x.shape)}"
                         + (f" on each of {world} ranks (global batch: {n_total} value per channel)" if world > 1
                            else ""))
    mean = (counts * means).sum(dim=0) / n_total
    m2 = m2s.sum(dim=0) + (counts * (means - mean[None]).pow(2)).sum(dim=0)
    return mean, m2 / n_total, n_total


class _CPUSyncBatchNormMixin:
    """The synchronised forward shared by the 1d/2d/3d classes below (which keep ``isinstance`` checks working)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch_stats:
            return super().forward(x)
        mean, var, n = sync_batch_stats(x)
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * (n / (n - 1))
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.float()
        y = (x.float() - mean.view(shape)) * scale.view(shape)
        if self.affine:
            y = y + self.bias.float().view(shape)
        return y.to(x.dtype)


class CPUSyncBatchNorm1d(_CPUSyncBatchNormMixin, nn.BatchNorm1d):
    """BatchNorm1d with global-batch statistics across ranks (works on CPU/gloo). Eval and state_dict: plain BN."""


class CPUSyncBatchNorm(_CPUSyncBatchNormMixin, nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across all ranks.

    ``(count, mean, M2)`` are all-reduced with autograd (``torch.distributed.nn``), so gradients are those of one
    process seeing the whole batch. Eval mode and the state_dict are plain BatchNorm2d.
    """


CPUSyncBatchNorm2d = CPUSyncBatchNorm


class CPUSyncBatchNorm3d(_CPUSyncBatchNormMixin, nn.BatchNorm3d):
    """BatchNorm3d with global-batch statistics across ranks (works on CPU/gloo)."""


class CPUSyncBatchNormNd(_CPUSyncBatchNormMixin, _BatchNorm):
    """Any other ``_BatchNorm`` (input of 2 or more dims)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")


_SYNC_TYPES = (CPUSyncBatchNorm1d, CPUSyncBatchNorm, CPUSyncBatchNorm3d, CPUSyncBatchNormNd)


def _sync_class(bn: _BatchNorm) -> type:
    for base, cls in ((nn.BatchNorm1d, CPUSyncBatchNorm1d), (nn.BatchNorm2d, CPUSyncBatchNorm),
                      (nn.BatchNorm3d, CPUSyncBatchNorm3d)):
        if isinstance(bn, base):
            return cls
    return CPUSyncBatchNormNd


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap every ``_BatchNorm`` (1d/2d/3d) for a synchronised one: ``nn.SyncBatchNorm`` on CUDA, ours elsewhere.

    Like ``nn.SyncBatchNorm.convert_sync_batchnorm`` the new layer takes over the old one's parameters and buffers
    (the same tensors), so optimizers and hooks built afterwards see the same state_dict keys and values.
    Returns the converted module (``module`` itself unless ``module`` is a batch norm).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, (_SYNC_TYPES, nn.SyncBatchNorm)):
        return _convert_one(module)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, device)
        if new is not child:
            setattr(module, name, new)
    return module


def _convert_one(bn: _BatchNorm) -> nn.Module:
    cls = _sync_class(bn)
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        with torch.no_grad():
            new.weight = bn.weight
            new.bias = bn.bias
    new.running_mean, new.running_var = bn.running_mean, bn.running_var
    new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    return new
