"""Synchronised batch norm that also works on CPU (gloo): PyTorch's ``nn.SyncBatchNorm`` is GPU-only."""
from __future__ import annotations

import torch
import torch.nn as nn


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across all ranks.

    Sums and squared sums are all-reduced with autograd (``torch.distributed.nn``), so gradients are exactly those
    of one process seeing the whole batch. Eval mode and the state_dict are plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable; its successor is private API

        c = x.shape[1]
        local_n = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), local_n])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*all_reduce is deprecated.*", category=FutureWarning)
            stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap BatchNorm2d layers for synchronised ones (``nn.SyncBatchNorm`` on CUDA, ours on CPU), in place."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats).to(device=_device_of(child), dtype=_dtype_of(child))
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module


def _device_of(m: nn.Module) -> torch.device:
    t = next(iter(m.state_dict().values()))
    return t.device


def _dtype_of(m: nn.Module) -> torch.dtype:
    return m.running_mean.dtype if m.running_mean is not None else torch.float32
