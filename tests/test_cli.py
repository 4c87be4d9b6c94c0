"""CLI: train/eval/info write their outputs; user errors are one line, exit 2, and leave no files behind."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from prunekit import create_model, save_model
from prunekit.cli import main


def _run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_train_then_eval_from_the_output_folder(tmp_path, capsys):
    out = tmp_path / "train"
    code, stdout, _ = _run(["train", "--model", "resnet20", "--epochs", "1", "--limit", "128", "--out", str(out),
                            "--no-progress"], capsys)
    assert code == 0
    for f in ("model.safetensors", "log.csv", "summary.json", "train_state.pt"):
        assert (out / f).is_file(), f
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "resnet20" and 0 <= s["top1"] <= 100 and s["params"] > 0
    code, stdout, _ = _run(["eval", "--checkpoint", str(out), "--limit", "64", "--out", str(tmp_path / "ev")], capsys)
    assert code == 0
    e = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert e["samples"] == 64 and e["latency_ms"] > 0 and e["params"] == s["params"]


def test_info_lists_models_and_layers(tmp_path, capsys):
    code, out, _ = _run(["info", "--list"], capsys)
    assert code == 0 and "resnet56" in out and "digits" in out
    code, out, _ = _run(["info", "--model", "resnet20", "--input-size", "3,32,32", "--out", str(tmp_path)], capsys)
    assert code == 0 and "layer1.0.conv1" in out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["params"] == 269722 and s["macs"] == 40_551_040  # hand count: convs + fc of CIFAR resnet20
    code, out, _ = _run(["info", "--model", "resnet20", "--out", str(tmp_path)], capsys)  # digits: 1 channel in
    assert json.loads((tmp_path / "summary.json").read_text())["params"] == 269722 - 16 * 9 * 2


@pytest.mark.parametrize("argv,needle", [
    (["train", "--model", "resnet999", "--epochs", "1"], "unknown model 'resnet999'; valid models:"),
    (["train", "--dataset", "imagenet21k", "--epochs", "1"], "unknown dataset"),
    (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent/cifar", "--epochs", "1"], "/nonexistent/cifar"),
    (["train", "--epochs", "0"], "epochs must be a positive integer"),
    (["train", "--epochs", "1", "--lr", "-1"], "lr must be in"),
    (["eval", "--checkpoint", "/nonexistent/ckpt"], "checkpoint not found"),
])
def test_user_errors_give_one_line_and_exit_2_and_no_output(argv, needle, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(argv + ["--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("prunekit: error:") and needle in err, err
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_and_mismatched_checkpoints_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = _run(["eval", "--checkpoint", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a readable prunekit checkpoint" in err
    _run(["train", "--model", "lenet5", "--epochs", "1", "--limit", "32", "--out", str(tmp_path / "l")], capsys)
    code, _, err = _run(["eval", "--model", "resnet20", "--checkpoint", str(tmp_path / "l"),
                         "--out", str(tmp_path / "o2")], capsys)
    assert code == 2 and "'lenet5' model, not 'resnet20'" in err


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "prunekit", "eval", "--checkpoint", str(tmp_path / "x"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("prunekit: error:")


def test_planning_on_a_fresh_model_follows_input_size(tmp_path, capsys):
    code, out, err = _run(["prune", "--model", "resnet56", "--method", "l1-filter", "--plan", "resnet56-A",
                           "--input-size", "3,32,32", "--latency-batch-sizes", "1", "--out", str(tmp_path / "p")],
                          capsys)
    assert code == 0 and "freshly initialised" in err
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert s["checkpoint"] is None and s["input_size"] == [3, 32, 32]
    assert "773,336" in out  # REFERENCE §4: ResNet-56-A


def test_input_size_with_the_wrong_channel_count_is_a_user_error(tmp_path, capsys):
    _run(["train", "--model", "lenet5", "--epochs", "1", "--limit", "32", "--out", str(tmp_path / "l")], capsys)
    code, _, err = _run(["prune", "--checkpoint", str(tmp_path / "l"), "--method", "gp", "--ratio", "0.5",
                         "--input-size", "3,32,32", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "has 3 channels; the model takes 1" in err


def test_every_model_producing_command_writes_the_standard_summary_keys(tmp_path, capsys):
    d = str(tmp_path)
    common = ["--dataset", "digits", "--limit", "64", "--no-progress"]
    steps = [
        ["train", "--model", "resnet20", "--epochs", "1", *common, "--out", f"{d}/t"],
        ["prune", "--checkpoint", f"{d}/t", "--method", "gp", "--ratio", "0.5", "--eval", "--dataset", "digits",
         "--limit", "64", "--out", f"{d}/p"],
        ["finetune", "--checkpoint", f"{d}/p", "--epochs", "1", *common, "--out", f"{d}/f"],
        ["scratch", "--checkpoint", f"{d}/p", "--budget", "E", "--epochs", "1", *common, "--out", f"{d}/s"],
        ["prune", "--checkpoint", f"{d}/t", "--method", "l1-filter", "--ratios", "0.5,0.5,0.5", "--eval",
         "--dataset", "digits", "--limit", "64", "--latency-batch-sizes", "1", "--out", f"{d}/l1"],
    ]
    for argv in steps:
        assert main(argv) == 0, argv
        s = json.loads((tmp_path / argv[-1].rsplit("/", 1)[1] / "summary.json").read_text())
        for key in ("top1", "top5", "params", "nonzero_params", "flops", "sparse_flops"):
            assert key in s, (argv[0], key)
        assert 0 <= s["top1"] <= 100 and s["params"] > 0, argv[0]
    capsys.readouterr()
    pruned = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert pruned["sparse_flops"] < pruned["flops"]
    l1 = json.loads((tmp_path / "l1" / "summary.json").read_text())
    assert l1["params"] < json.loads((tmp_path / "t" / "summary.json").read_text())["params"]


@pytest.mark.parametrize("argv", [
    ["prune", "--method", "gp", "--ratio", "0.5"],
    ["sweep", "--method", "gp", "--dataset", "digits", "--ratios", "0.5", "--limit", "64"],
    ["finetune", "--dataset", "digits", "--epochs", "1", "--limit", "64", "--no-progress"],
], ids=["prune-gp", "sweep", "finetune"])
def test_a_nan_checkpoint_is_one_error_line_naming_the_file_and_the_cause(argv, tmp_path, capsys):
    """The load warning (NaN weights) and the error it leads to are one line: the file's NaN, then the error."""
    model = create_model("lenet5", num_classes=10, in_channels=1)
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = float("nan")
    ck = tmp_path / "nan"
    save_model(model, ck)
    code, _, err = _run(argv + ["--checkpoint", str(ck), "--out", str(tmp_path / "o")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"prunekit: error: {ck}: 1 tensor(s) hold NaN or inf values (conv1.weight)")
    assert "warning" not in lines[0] and "non-finite" in lines[0]


def test_a_held_warning_of_a_command_that_succeeds_is_printed_once(tmp_path, capsys):
    model = create_model("lenet5", num_classes=10, in_channels=1)
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = float("nan")
    save_model(model, tmp_path / "nan")
    code, _, err = _run(["eval", "--checkpoint", str(tmp_path / "nan"), "--limit", "64", "--latency-budget", "0",
                         "--out", str(tmp_path / "o")], capsys)
    warn = [ln for ln in err.splitlines() if ln.startswith("prunekit: warning:")]
    assert code == 0 and len(warn) == 1 and "NaN or inf" in warn[0] and "evaluation loss" in warn[0], err
