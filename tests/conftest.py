"""Shared test fixtures: tiny data and models, single-threaded torch for stable timing on 2 cores."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def digits_small():
    """A 256/128-sample cut of the bundled digits dataset (train, test)."""
    from prunekit.data import get_dataset, subset

    return subset(get_dataset("digits", train=True), 256), subset(get_dataset("digits", train=False), 128)
