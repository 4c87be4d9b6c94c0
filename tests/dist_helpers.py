"""Helpers shared by the multi-process tests (gloo on CPU)."""
from __future__ import annotations

import time

import pytest
import torch.multiprocessing as mp


def spawn(fn, args, nprocs: int = 2, timeout: float = 120.0) -> None:
    """mp.spawn with a deadline: a hang fails the test instead of blocking the suite."""
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"distributed workers did not finish within {timeout:.0f}s (hang)")
