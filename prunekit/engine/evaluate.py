"""Top-1 / top-5 evaluation."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def accuracy_counts(outputs: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is in the top-k predictions, for each k (k capped at #classes)."""
    maxk = min(max(ks), outputs.shape[1])
    pred = outputs.topk(maxk, dim=1).indices
    hit = pred.eq(targets.view(-1, 1))
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, batch_size: int = 256, device: str | torch.device | None = None,
             max_batches: int | None = None, progress: bool | None = None) -> dict[str, float]:
    """Evaluate ``model`` on dataset ``data`` (its test transform): ``{"top1", "top5", "loss", "n"}`` in percent.

    ``progress``: a progress bar on stderr (default: when stderr is a terminal and there are over 20 batches).
    """
    import sys
    from ..data.loader import BatchLoader

    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = BatchLoader(data, batch_size=batch_size, shuffle=False, seed=0, device=device, train=False)
    n = 0
    correct1 = correct5 = 0
    loss_sum = 0.0
    if progress is None:
        progress = sys.stderr.isatty() and len(loader) > 20
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc="eval", leave=False, unit="batch")
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            out = model(x).float()
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            c1, c5 = accuracy_counts(out, y)
            correct1 += c1
            correct5 += c5
            n += y.numel()
            if bar is not None:
                bar.update(1)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    n = max(n, 1)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n, "n": n}
