"""End to end through the CLI on real data (digits): the pipelines the seeds run, test-sized."""
from __future__ import annotations

import json

import torch

from prunekit import load_checkpoint, load_model
from prunekit.cli import main

NARROW_VGG = '[16,"M",32,"M",64,64,"M",128,128,"M",128,128]'


def _summary(path):
    return json.loads((path / "summary.json").read_text())


def _mean_abs_gamma(path) -> float:
    m = load_model(path)
    return torch.cat([b.weight.detach().abs() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]).mean().item()


def test_slimming_pipeline_sparsity_train_prune_finetune_eval(tmp_path, capsys):
    train = ["train", "--model", "vgg11", "--cfg", NARROW_VGG, "--epochs", "4", "--lr", "0.05", "--schedule",
             "cosine", "--no-progress"]
    assert main(train + ["--out", str(tmp_path / "dense")]) == 0
    assert main(train + ["--sparsity-reg", "1e-2", "--out", str(tmp_path / "sparse")]) == 0
    # the L1 subgradient on BN gammas really shrinks them
    assert _mean_abs_gamma(tmp_path / "sparse") < 0.6 * _mean_abs_gamma(tmp_path / "dense")

    assert main(["prune", "--checkpoint", str(tmp_path / "sparse"), "--method", "slimming", "--percent", "0.5",
                 "--eval", "--latency-batch-sizes", "1", "--out", str(tmp_path / "pruned")]) == 0
    pruned = _summary(tmp_path / "pruned")
    acc = pruned["accuracy"]
    assert acc["masked (removed channels zeroed)"] == acc["after"]  # removal is exact
    assert pruned["params"] < 0.35 * _summary(tmp_path / "sparse")["params"]

    assert main(["finetune", "--checkpoint", str(tmp_path / "pruned"), "--epochs", "3", "--lr", "0.05",
                 "--schedule", "cosine", "--no-progress", "--out", str(tmp_path / "ft")]) == 0
    ft = _summary(tmp_path / "ft")
    assert ft["top1"] > acc["after"] + 20 and ft["top1"] > 80
    assert ft["params"] == pruned["params"]  # finetuning keeps the smaller architecture ...
    assert main(["eval", "--checkpoint", str(tmp_path / "ft"), "--out", str(tmp_path / "ev")]) == 0
    ev = _summary(tmp_path / "ev")
    assert ev["params"] == pruned["params"] and abs(ev["top1"] - ft["top1"]) < 1e-9  # ... and reloads from its cfg
    capsys.readouterr()


def test_l1_filter_then_finetune_resaves_a_plan_that_reloads(tmp_path, capsys):
    assert main(["train", "--model", "resnet20", "--epochs", "2", "--limit", "256", "--no-progress",
                 "--out", str(tmp_path / "base")]) == 0
    assert main(["prune", "--checkpoint", str(tmp_path / "base"), "--method", "l1-filter", "--ratios", "0.5,0.5,0.5",
                 "--latency-batch-sizes", "1", "--out", str(tmp_path / "l1")]) == 0
    assert main(["finetune", "--checkpoint", str(tmp_path / "l1"), "--epochs", "1", "--limit", "256",
                 "--no-progress", "--out", str(tmp_path / "ft")]) == 0
    a, b = load_checkpoint(tmp_path / "l1"), load_checkpoint(tmp_path / "ft")
    assert a.meta["cfg"] == b.meta["cfg"] and a.meta["plan"] == b.meta["plan"]
    assert b.model.layer1[0].conv1.out_channels == 8  # 16 * (1 - 0.5)
    x = torch.randn(2, 1, 8, 8)
    assert load_model(tmp_path / "ft").eval()(x).shape == (2, 10)
    capsys.readouterr()
