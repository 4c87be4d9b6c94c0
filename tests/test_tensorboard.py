"""Optional TensorBoard scalars for training: what is written equals log.csv and the masks; clear errors."""
from __future__ import annotations

import csv
import sys

import pytest
import torch

from prunekit.engine.trainer import TrainConfig, fit
from prunekit.errors import PrunekitError
from prunekit.models import create_model


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=2, batch_size=32, lr=0.05, seed=0, device="cpu", max_steps_per_epoch=2),
                          **kw})


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_per_epoch_equal_the_csv_log_and_the_masks(tmp_path, digits_small):
    pytest.importorskip("tensorboard")
    train, test = digits_small
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(p.shape, generator=g) < 0.25 for n, p in model.named_parameters() if p.dim() > 1}
    fit(model, train, test, _cfg(tensorboard=True), masks=masks, out_dir=tmp_path)
    ev = _events(tmp_path / "tensorboard")
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for tag, col in [("train/loss", "train_loss"), ("train/top1", "train_top1"), ("val/loss", "val_loss"),
                     ("val/top1", "val_top1"), ("val/top5", "val_top5"), ("lr", "lr")]:
        assert [s for s, _ in ev[tag]] == [1, 2], tag
        assert [v for _, v in ev[tag]] == pytest.approx([float(r[col]) for r in rows], rel=1e-6), tag
    for name, m in masks.items():  # hand count of the masked-out fraction
        expected = (m.numel() - int(m.sum())) / m.numel()
        assert [v for _, v in ev[f"sparsity/{name}"]] == pytest.approx([expected, expected], rel=1e-6)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert ev["sparsity/overall"][0][1] == pytest.approx((total - kept) / total, rel=1e-6)


def test_no_sparsity_scalars_without_masks_and_off_by_default(tmp_path, digits_small):
    pytest.importorskip("tensorboard")
    train, _ = digits_small
    fit(create_model("lenet5", num_classes=10, in_channels=1), train, None, _cfg(epochs=1), out_dir=tmp_path / "a")
    assert not (tmp_path / "a" / "tensorboard").exists()
    fit(create_model("lenet5", num_classes=10, in_channels=1), train, None, _cfg(epochs=1, tensorboard=True),
        out_dir=tmp_path / "b")
    tags = set(_events(tmp_path / "b" / "tensorboard"))
    assert {"train/loss", "lr"} <= tags and not any(t.startswith(("sparsity/", "val/")) for t in tags)


def test_missing_package_or_folder_is_a_clear_error(tmp_path, digits_small, monkeypatch):
    train, _ = digits_small
    model = create_model("lenet5", num_classes=10, in_channels=1)
    with pytest.raises(PrunekitError, match="output folder"):
        fit(model, train, None, _cfg(tensorboard=True))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    with pytest.raises(PrunekitError, match=r"pip install 'prunekit\[tensorboard\]'"):
        fit(model, train, None, _cfg(tensorboard=True), out_dir=tmp_path)
    assert not (tmp_path / "model.safetensors").exists()  # refused before training
