"""DDP helpers for runs launched with ``torchrun`` (NCCL on GPU, gloo on CPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """Read RANK/WORLD_SIZE/LOCAL_RANK set by torchrun (defaults: single process)."""
    return DistInfo(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the default process group when launched by torchrun; a no-op for one process.

    On CUDA the rank's device is made current first (``torch.cuda.set_device``), so NCCL's communicators, the
    barrier and every collective use this rank's GPU rather than all piling onto GPU 0.
    """
    info = env_dist_info()
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over all ranks in place and return it (unchanged for one process). ``t`` must live on the
    process group's device (the rank's GPU under NCCL, the CPU under gloo)."""
    if info.enabled and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_min(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise minimum of ``t`` over all ranks, in place (unchanged for one process)."""
    if info.enabled and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def barrier(info: DistInfo) -> None:
    """Synchronise all ranks (no-op for one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Send a picklable Python object from ``src`` to every rank (no-op for one process)."""
    if not (info.enabled and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def resolve_device(device: str | torch.device | None, info: DistInfo | None = None) -> torch.device:
    """'auto' (or None) -> this rank's CUDA device if available, else CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            idx = info.local_rank if info is not None else 0
            return torch.device("cuda", idx)
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from ..errors import PrunekitError

        raise PrunekitError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None and info is not None:
        dev = torch.device("cuda", info.local_rank)
    return dev
