"""Top-1 / top-5 evaluation (single process, or sharded over the ranks of a DDP job)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from .distributed import DistInfo


def accuracy_hits(outputs: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is in the top-k predictions, for each k (k capped at #classes), as an int64
    tensor on the outputs' device: no host synchronisation."""
    maxk = min(max(ks), outputs.shape[1])
    pred = outputs.topk(maxk, dim=1).indices
    hit = pred.eq(targets.view(-1, 1))
    return torch.stack([hit[:, :min(k, maxk)].any(dim=1).sum() for k in ks])


def accuracy_counts(outputs: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is in the top-k predictions, for each k (k capped at #classes)."""
    return [int(v) for v in accuracy_hits(outputs, targets, ks).tolist()]


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for on-device sums (exact counts, same rounding as Python floats); float32 where the device has no
    float64 (MPS)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, batch_size: int = 256, device: str | torch.device | None = None,
             max_batches: int | None = None, progress: bool | None = None,
             dist: "DistInfo | None" = None) -> dict[str, float]:
    """Evaluate ``model`` on dataset ``data`` (its test transform): ``{"top1", "top5", "loss", "n"}`` in percent.

    ``progress``: a progress bar on stderr (default: when stderr is a terminal and there are over 20 batches).
    ``dist``: when given and enabled, every rank of the job must call this; each evaluates a disjoint, unpadded
    shard (``batch_size`` is the global batch) and the counts are all-reduced, so every rank returns the counts of
    the whole dataset, each sample counted exactly once (top-1/top-5 identical to one process; the loss equal up
    to float summation order). Without it, this process evaluates everything and talks to no other rank.
    Sums stay on the device and are read once at the end.
    """
    import sys
    from ..data.loader import BatchLoader
    from .distributed import all_reduce_sum

    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    sharded = dist is not None and dist.enabled
    rank, world = (dist.rank, dist.world_size) if sharded else (0, 1)
    was_training = model.training
    model.eval()
    bs = batch_size if batch_size % world == 0 else (batch_size // world + 1) * world
    loader = BatchLoader(data, batch_size=bs, shuffle=False, seed=0, device=device, train=False, rank=rank,
                         world_size=world, pad_shards=False)
    sums = torch.zeros(4, dtype=accumulator_dtype(device), device=device)  # loss, top-1, top-5, n
    if progress is None:
        progress = sys.stderr.isatty() and len(loader) > 20 and rank == 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc="eval", leave=False, unit="batch")
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            out = model(x).float()
            sums[0] += F.cross_entropy(out, y, reduction="sum").to(sums.dtype)
            sums[1:3] += accuracy_hits(out, y).to(sums.dtype)
            sums[3] += y.numel()
            if bar is not None:
                bar.update(1)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if sharded:
        all_reduce_sum(sums, dist)
    loss_sum, correct1, correct5, n = sums.tolist()
    n = max(int(round(n)), 1)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n, "n": n}
