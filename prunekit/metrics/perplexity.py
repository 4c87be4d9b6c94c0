"""Perplexity of a language model over a token stream, in non-overlapping windows.

The stream is cut into ``len // seq_len`` windows of ``seq_len`` tokens (a shorter tail is dropped); in each window
the model predicts tokens 2..L from their prefixes, so ``seq_len - 1`` tokens per window count. Perplexity is
``exp(mean negative log-likelihood)`` over all counted tokens. The model may return logits ``[B, T, V]``, a tuple
starting with them, or an object with ``.logits`` (Hugging Face outputs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PrunekitError, check_number


@dataclass
class PerplexityResult:
    """``perplexity``, ``nll`` (mean, nats per token), ``tokens`` counted, ``windows`` used."""

    perplexity: float
    nll: float
    tokens: int
    windows: int


def logits_of(out: Any) -> torch.Tensor:
    """The logits in a model output (tensor, tuple, or object/dict with ``logits``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise PrunekitError(f"cannot find logits in a model output of type {type(out).__name__}")


@torch.no_grad()
def perplexity(model: nn.Module, tokens: torch.Tensor, seq_len: int, *, batch_size: int = 8,
               max_windows: int | None = None, device: str | torch.device | None = None) -> PerplexityResult:
    """Perplexity of ``model`` on the 1-D ``tokens`` in non-overlapping windows of ``seq_len`` tokens."""
    seq_len = int(check_number("seq_len", seq_len, low=2, integer=True))
    batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    windows = tokens.numel() // seq_len
    if max_windows is not None:
        windows = min(windows, int(check_number("max_windows", max_windows, low=1, integer=True)))
    if windows == 0:
        raise PrunekitError(f"the evaluation stream has {tokens.numel()} tokens, fewer than one window of {seq_len}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        data = tokens[: windows * seq_len].view(windows, seq_len)
        for i in range(0, windows, batch_size):
            ids = data[i:i + batch_size].to(device)
            logits = logits_of(model(ids)).float()
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                   reduction="sum")
            total += float(loss)
            count += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    nll = total / count
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, tokens=count, windows=windows)
