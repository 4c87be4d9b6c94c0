"""Session fixtures of the bad-input corpus: one folder with every generated file, built once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from .fixtures import build_all


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{"root": session folder, "fx": fixture folder, name: path, ...}`` (the fixture map of cases.py)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("corpus")
    old = os.getcwd()
    os.chdir(root)  # anything a fixture command writes by mistake lands inside the watched folder
    try:
        files = build_all(root / "fx")
    finally:
        os.chdir(old)
    files["root"] = root
    files["fx"] = root / "fx"
    (root / "cases").mkdir()
    return files


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout holding ``prunekit/`` (for subprocess cases)."""
    return Path(__file__).resolve().parents[2]
