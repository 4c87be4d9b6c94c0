"""Ensembles: exact combination rules, one-pass evaluation of every member, num_classes checks, the CLI command."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn as nn

from prunekit import create_model, load_checkpoint, save_model
from prunekit.cli import main
from prunekit.data import ImageDataset
from prunekit.engine import evaluate
from prunekit.errors import PrunekitError
from prunekit.experiments import ensemble_logits, evaluate_ensemble, load_members


class _Const(nn.Module):
    """Returns the same logits row for every sample."""

    def __init__(self, row):
        super().__init__()
        self.register_buffer("row", torch.tensor(row, dtype=torch.float32))
        self.num_classes = len(row)

    def forward(self, x):
        return self.row.expand(x.shape[0], -1)


class _Table(nn.Module):
    """Returns ``table[i]`` for the sample whose (1x1, single-channel) pixel value is ``i``."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table.float())
        self.dummy = nn.Parameter(torch.zeros(1))
        self.num_classes = table.shape[1]

    def forward(self, x):
        idx = (x.flatten(1)[:, 0] * 255.0).round().long()
        return self.table[idx] + 0.0 * self.dummy


def _index_dataset(labels: torch.Tensor, num_classes: int) -> ImageDataset:
    n = labels.numel()
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    return ImageDataset(name="index", train=False, num_classes=num_classes, in_channels=1, image_size=(1, 1),
                        mean=(0.0,), std=(1.0,), images=images, labels=labels.long())


def _tiny_lenet(seed: int, num_classes: int = 10):
    torch.manual_seed(seed)
    return create_model("lenet5", num_classes=num_classes, cfg=[4, 8, 16], in_channels=1)


def test_ensemble_of_identical_checkpoints_equals_the_single_model(tmp_path, digits_small):
    _, test = digits_small
    model = _tiny_lenet(0)
    save_model(model, tmp_path / "a.safetensors")
    save_model(model, tmp_path / "folder")
    single = evaluate(model, test, batch_size=50)
    ckpts = load_members([tmp_path / "a.safetensors", tmp_path / "folder"])
    for mode in ("sum_logits", "mean_softmax"):
        res = evaluate_ensemble([c.model for c in ckpts], test, mode, batch_size=50, device="cpu")
        assert res["n"] == 128
        assert res["top1"] == single["top1"] and res["top5"] == single["top5"]
        assert res["members"] == [single["top1"], single["top1"]]


def test_sum_logits_and_mean_softmax_disagree_on_a_hand_made_example():
    # A is very sure of class 0; B and C mildly prefer class 1. Sum [10, 6] -> class 0;
    # mean softmax: class 1 gets (~0 + 2 * 0.9526) / 3 = 0.635 -> class 1.
    models = [_Const([10.0, 0.0]), _Const([0.0, 3.0]), _Const([0.0, 3.0])]
    x = torch.zeros(2, 1, 1, 1)
    summed = ensemble_logits(models, x, "sum_logits")
    assert torch.equal(summed, torch.tensor([[10.0, 6.0], [10.0, 6.0]]))
    probs = ensemble_logits(models, x, "mean_softmax")
    e3 = torch.tensor(3.0).exp()
    p_b = torch.stack([1 / (1 + e3), e3 / (1 + e3)])
    em10 = torch.tensor(-10.0).exp()
    p_a = torch.stack([1 / (1 + em10), em10 / (1 + em10)])
    torch.testing.assert_close(probs[0], (p_a + 2 * p_b) / 3)
    assert summed.argmax(1).tolist() == [0, 0] and probs.argmax(1).tolist() == [1, 1]


def test_ensemble_prediction_is_exactly_the_argmax_of_summed_logits():
    g = torch.Generator().manual_seed(0)
    n, classes = 200, 8
    tables = [torch.randn(n, classes, generator=g) * s for s in (6.0, 1.0, 1.0)]
    summed = sum(tables)
    labels = summed.argmax(1)
    models = [_Table(t) for t in tables]
    data = _index_dataset(labels, classes)
    res = evaluate_ensemble(models, data, "sum_logits", batch_size=64, device="cpu")
    assert res["n"] == n and res["top1"] == 100.0
    for j, t in enumerate(tables):
        assert res["members"][j] == 100.0 * int((t.argmax(1) == labels).sum()) / n
    mean_pred = torch.stack([t.softmax(1) for t in tables]).mean(0).argmax(1)
    agree = int((mean_pred == labels).sum())
    assert agree < n  # the two rules really differ on this data
    soft = evaluate_ensemble(models, data, "mean_softmax", batch_size=64, device="cpu")
    assert soft["top1"] == 100.0 * agree / n
    mean_probs = torch.stack([t.softmax(1) for t in tables]).mean(0)
    top5 = int((mean_probs.topk(5, dim=1).indices == labels[:, None]).any(1).sum())
    assert soft["top5"] == 100.0 * top5 / n


def test_members_must_agree_on_num_classes(tmp_path, digits_small):
    _, test = digits_small
    save_model(_tiny_lenet(0, 10), tmp_path / "ten")
    save_model(_tiny_lenet(1, 3), tmp_path / "three")
    with pytest.raises(PrunekitError, match="three.*has 3 classes"):
        load_members([tmp_path / "ten", tmp_path / "three"])
    models = [_tiny_lenet(0, 10), _tiny_lenet(1, 3)]
    with pytest.raises(PrunekitError, match="b.safetensors has 3 classes, but the dataset has 10"):
        evaluate_ensemble(models, test, names=["a.safetensors", "b.safetensors"])
    with pytest.raises(PrunekitError, match="unknown ensemble mode 'vote'"):
        evaluate_ensemble(models[:1], test, mode="vote")


def test_members_run_in_eval_mode_and_get_their_train_mode_back(digits_small):
    _, test = digits_small
    torch.manual_seed(0)
    m = create_model("resnet20", num_classes=10, cfg=[4] * 9, in_channels=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    evaluate_ensemble([m], test, batch_size=64, device="cpu")
    assert m.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # eval mode: BN stats untouched


def _run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_ensemble_command_writes_summary_and_csv(tmp_path, capsys, digits_small):
    a, b = tmp_path / "a", tmp_path / "b.safetensors"
    save_model(_tiny_lenet(0), a)
    torch.manual_seed(1)
    save_model(create_model("resnet20", num_classes=10, cfg=[4, 2, 3] * 3, in_channels=1), b)
    out = tmp_path / "ens"
    code, stdout, _ = _run(["ensemble", "--checkpoints", f"{a},{b}", "--mode", "mean_softmax", "--limit", "64",
                            "--out", str(out)], capsys)
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    from prunekit.data import get_dataset, subset

    test = subset(get_dataset("digits", train=False), 64)
    models = [load_checkpoint(a).model, load_checkpoint(b).model]
    ref = evaluate_ensemble(models, test, "mean_softmax", device="cpu")
    assert s["mode"] == "mean_softmax" and s["samples"] == 64 and s["name"] == "E-1-2"
    assert s["top1"] == ref["top1"] and s["top5"] == ref["top5"]
    assert [m["top1"] for m in s["members"]] == [evaluate(m, test)["top1"] for m in models]
    assert [m["model"] for m in s["members"]] == ["lenet5", "resnet20"]
    n_params = [sum(p.numel() for p in m.parameters()) for m in models]
    assert [m["params"] for m in s["members"]] == n_params and s["params"] == sum(n_params)
    rows = list(csv.DictReader((out / "ensemble.csv").open()))
    assert [r["member"] for r in rows] == ["1", "2", "E-1-2"]
    assert "| E-1-2" in stdout and "| 1 " in stdout and "| 2 " in stdout


@pytest.mark.parametrize("spec,needle", [
    (",", "--checkpoints needs at least one checkpoint"),
    ("", "--checkpoints needs at least one checkpoint"),
    ("{a},,{a}", "--checkpoints has an empty entry"),
    ("{a},{missing}", "checkpoint not found"),
    ("{a},{three}", "has 3 classes"),
])
def test_bad_checkpoint_list_exits_2_with_one_line(spec, needle, tmp_path, capsys):
    a, three = tmp_path / "a", tmp_path / "three"
    save_model(_tiny_lenet(0), a)
    save_model(_tiny_lenet(0, num_classes=3), three)
    out = tmp_path / "out"
    spec = spec.format(a=a, three=three, missing=tmp_path / "missing")
    code, _, err = _run(["ensemble", "--checkpoints", spec, "--limit", "16", "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("prunekit: error:") and needle in err, err
    assert not out.exists()
