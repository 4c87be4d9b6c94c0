"""``prunekit prune`` on any model: zoo models at their natural input, a user's own architecture named as
``module:callable`` (fresh, or from a plain state_dict file), budgets and options, and the trust rule on reload."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from prunekit import load_checkpoint, load_model
from prunekit.cli import main
from prunekit.metrics import count_params

FAST = ["--latency-batch-sizes", "1", "--latency-repeats", "1"]


def _summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_a_zoo_model_without_dataset_takes_its_natural_input_and_the_paper_plan_is_exact(tmp_path):
    out = tmp_path / "r56"
    assert main(["prune", "--model", "resnet56", "--method", "l1-filter", "--plan", "resnet56-A", "--out", str(out),
                 *FAST]) == 0
    s = _summary(out)
    assert s["input_size"] == [3, 32, 32] and s["params"] == 773_336  # Li et al.'s ResNet-56-A
    assert count_params(load_model(out)) == 773_336


def test_resnet50_prunes_with_global_ranking_round_to_and_reloads(tmp_path, capsys):
    out = tmp_path / "r50"
    assert main(["prune", "--model", "resnet50", "--method", "l1-filter", "--ratio", "0.3", "--global",
                 "--round-to", "8", "--input-size", "3,64,64", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "exact: max |pruned - reference|" in printed
    s = _summary(out)
    assert s["exactness_max_abs_diff"] is not None and s["info"]["rel_diff"] <= 1e-5
    assert s["params"] < 25_557_032 and s["dense"]["dense_params"] == 25_557_032
    back = load_model(out)
    convs = [m for m in back.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert (out / "groups.csv").read_text().count("\n") > 10


def test_target_macs_ignore_and_criterion_flags(tmp_path):
    out = tmp_path / "t"
    assert main(["prune", "--model", "resnet20", "--method", "l1-filter", "--target-macs", "0.6", "--criterion",
                 "bn", "--ignore", "^layer3", "--out", str(out), *FAST]) == 0
    s = _summary(out)
    assert s["info"]["target_reached"] <= 0.6
    model = load_model(out)
    assert [b.conv1.out_channels for b in model.layer3] == [64, 64, 64]
    assert s["ratios"]["macs"] >= 1 / 0.6 - 1e-6


@pytest.mark.parametrize("argv,message", [
    (["--method", "l1-filter", "--ratio", "0.3", "--plan", "resnet56-A"], "do not combine"),
    (["--method", "slimming", "--ratio", "0.3"], "applies to --method structured"),
    (["--method", "l1-filter", "--ratio", "0.3", "--target-macs", "0.5"], "give one of"),
    (["--method", "l1-filter", "--plan", "resnet56-A", "--round-to", "8"], "need --ratio"),
    (["--method", "l1-filter", "--ratio", "0.3", "--criterion", "magic"], "--criterion must be one of"),
    (["--method", "l1-filter", "--ratio", "nan"], "finite"),
    (["--method", "l1-filter", "--ratio", "0.3", "--ignore", "("], "not a valid regular expression"),
    (["--method", "gp", "--ratio", "0.3", "--global"], "only apply to structured methods"),
    (["--method", "gp", "--ratio", "0.3", "--target-latency", "0.6"], "only apply to structured methods"),
])
def test_bad_structured_flags_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["prune", "--model", "resnet56", *argv, "--out", str(tmp_path / "x"), *FAST]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prunekit: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_a_user_architecture_by_factory_prunes_saves_and_needs_trust_to_reload(tmp_path, capsys):
    out = tmp_path / "rx"
    assert main(["prune", "--model", "user_models:resnext", "--method", "l1-filter", "--ratio", "0.3",
                 "--input-size", "3,32,32", "--out", str(out), *FAST]) == 0
    ck = load_checkpoint(out, factory="user_models:resnext")
    assert ck.meta["factory"]["target"] == "user_models:resnext" and ck.meta["model"] is None
    assert ck.meta["plan"]["format"] == "prunekit-plan/2"
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err
    assert "never imports or calls code named by a file" in err and "--trust-factory user_models:resnext" in err
    assert main(["info", "--checkpoint", str(out), "--trust-factory", "user_models:resnext",
                 "--input-size", "3,32,32"]) == 0


def test_a_state_dict_file_of_a_user_architecture_is_pruned(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mynets.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self, width=16, classes=10):
                super().__init__()
                self.conv1 = nn.Conv2d(3, width, 3, padding=1)
                self.bn1 = nn.BatchNorm2d(width)
                self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
                self.fc = nn.Linear(2 * width, classes)

            def forward(self, x):
                x = F.relu(self.bn1(self.conv1(x)))
                return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1).flatten(1))
    '''))
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("mynets", None)
    import mynets

    torch.manual_seed(0)
    trained = mynets.Net(width=24)
    torch.save(trained.state_dict(), tmp_path / "weights.pth")
    out = tmp_path / "o"
    assert main(["prune", "--model", "mynets:Net", "--model-kwargs", '{"width": 24}', "--checkpoint",
                 str(tmp_path / "weights.pth"), "--method", "l1-filter", "--ratio", "0.5", "--input-size", "3,16,16",
                 "--out", str(out), *FAST]) == 0
    back = load_model(out, factory="mynets:Net")
    assert back.conv1.out_channels == 12 and back.conv2.out_channels == 24
    # the kept filters are the trained model's largest-L1 ones, weights carried over
    norms = trained.conv1.weight.detach().abs().sum((1, 2, 3))
    kept = sorted(torch.argsort(norms, descending=True, stable=True)[:12].tolist())
    assert torch.equal(back.conv1.weight, trained.conv1.weight[kept])
    assert main(["prune", "--model", "mynets:Net", "--model-kwargs", "[1]", "--method", "l1-filter", "--ratio",
                 "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert main(["prune", "--model", "mynets:Nope", "--method", "l1-filter", "--ratio", "0.5", "--out",
                 str(tmp_path / "bad2")]) == 2
