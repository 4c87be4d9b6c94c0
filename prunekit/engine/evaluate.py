"""Top-1 / top-5 evaluation (single process, or sharded over the ranks of a DDP job)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PrunekitError
from ..utils.warn import NonFiniteWarning, warn_user

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


def evaluate(model: nn.Module, data: Any, batch_size: int = 256, device: str | torch.device | None = None,
             max_batches: int | None = None, progress: bool | None = None,
             dist: "DistInfo | None" = None) -> dict[str, float]:
    """Evaluate ``model`` on dataset ``data`` (its test transform): ``{"top1", "top5", "loss", "n"}`` in percent.

    ``progress``: a progress bar on stderr (default: when stderr is a terminal and there are over 20 batches).
    ``dist``: when given and enabled, every rank of the job must call this; each evaluates a disjoint, unpadded
    shard (``batch_size`` is the global batch) and the counts are all-reduced, so every rank returns the counts of
    the whole dataset, each sample counted exactly once (top-1/top-5 identical to one process; the loss equal up
    to float summation order). Without it, this process evaluates everything and talks to no other rank.
    Sums stay on the device and are read once at the end. A non-finite loss (NaN/inf weights) is warned about.

    >>> evaluate(model, get_dataset("digits", train=False))["top1"]  # doctest: +SKIP
    """
    if device is None:
        device = next(model.parameters()).device
    return evaluate_outputs([model], lambda x: [model(x)], data, batch_size, device, max_batches=max_batches,
                            progress=progress, dist=dist)[0]


@torch.no_grad()
def evaluate_outputs(modules: Sequence[nn.Module], forward: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                     data: Any, batch_size: int, device: str | torch.device, *, max_batches: int | None = None,
                     progress: bool | None = False, dist: "DistInfo | None" = None) -> list[dict[str, float]]:
    """The one evaluation loop: ``forward(x)`` returns several ``[batch, classes]`` outputs (e.g. the members of an
    ensemble and their combination); returns ``{"top1", "top5", "loss", "n"}`` for each, in that order.

    ``modules`` are put in eval mode for the pass and restored after; see :func:`evaluate` for ``dist`` and
    ``progress``. Raises :class:`PrunekitError` for an empty evaluation set."""
    import sys

    from ..data.loader import BatchLoader
    from .distributed import all_reduce_sum

    device = torch.device(device)
    sharded = dist is not None and dist.enabled
    rank, world = (dist.rank, dist.world_size) if sharded else (0, 1)
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    bs = batch_size if batch_size % world == 0 else (batch_size // world + 1) * world
    loader = BatchLoader(data, batch_size=bs, shuffle=False, seed=0, device=device, train=False, rank=rank,
                         world_size=world, pad_shards=False)
    sums: torch.Tensor | None = None  # [outputs, 4]: loss, top-1, top-5, n
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
            outs = [o.float() for o in forward(x)]
            if sums is None:
                sums = torch.zeros(len(outs), 4, dtype=accumulator_dtype(device), device=device)
            for j, out in enumerate(outs):
                sums[j, 0] += F.cross_entropy(out, y, reduction="sum").to(sums.dtype)
                sums[j, 1:3] += accuracy_hits(out, y).to(sums.dtype)
                sums[j, 3] += y.numel()
            if bar is not None:
                bar.update(1)
    finally:
        for m, t in zip(modules, was_training):
            m.train(t)
        if bar is not None:
            bar.close()
    if sums is None:
        sums = torch.zeros(len(modules), 4, dtype=accumulator_dtype(device), device=device)
    if sharded:
        all_reduce_sum(sums, dist)
    results = []
    for loss_sum, correct1, correct5, n in sums.tolist():
        n = int(round(n))
        if n == 0:
            raise PrunekitError("the evaluation set is empty")
        if not math.isfinite(loss_sum):
            warn_user(NonFiniteWarning(f"the evaluation loss over {n} samples is not finite: the model has NaN/inf "
                                       "weights or outputs, so its accuracy means nothing",
                                       f"the evaluation loss over {n} samples is not finite"))
        results.append({"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n, "n": n})
    return results
