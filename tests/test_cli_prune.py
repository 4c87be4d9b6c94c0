"""CLI: prune / sweep / finetune / scratch for weight-level pruning (tiny models on digits)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from prunekit.checkpoint import load_checkpoint, save_model
from prunekit.cli import main
from prunekit.models import create_model


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def base_ckpt(tmp_path):
    torch.manual_seed(0)
    return save_model(create_model("lenet5", num_classes=10, in_channels=1), tmp_path / "base")


def test_prune_global_writes_model_reports_and_summary(tmp_path, base_ckpt, capsys):
    out = tmp_path / "p"
    code, stdout, _ = _run(["prune", "--checkpoint", base_ckpt, "--method", "global", "--ratio", "0.7", "--eval",
                            "--limit", "64", "--out", out], capsys)
    assert code == 0
    for f in ("model.safetensors", "prune_report.csv", "prune_report.md", "summary.json"):
        assert (out / f).is_file(), f
    s = json.loads((out / "summary.json").read_text())
    n = 20 * 25 + 50 * 20 * 25  # lenet5 conv weights, 1 input channel
    assert s["total_weights"] == n and s["total_pruned"] == round(0.7 * n) == 17850
    assert s["fresh_init"] is False and s["checkpoint"] == str(base_ckpt)
    assert s["accuracy_before"]["n"] == 64 and s["accuracy_after"] is not None
    assert s["after"]["nonzero_params"] == s["before"]["nonzero_params"] - 17850
    ck = load_checkpoint(out)
    assert sorted(ck.masks) == ["conv1.weight", "conv2.weight"]
    assert sum(int((~m).sum()) for m in ck.masks.values()) == 17850
    rows = list(csv.DictReader((out / "prune_report.csv").open()))
    assert [r["layer"] for r in rows] == ["conv1.weight", "conv2.weight"]
    assert sum(int(r["pruned"]) for r in rows) == 17850 and float(rows[1]["threshold"]) > 0
    assert "| conv2.weight" in stdout and "threshold (global)" in stdout


def test_prune_fresh_model_says_so(tmp_path, capsys):
    out = tmp_path / "fresh"
    code, stdout, err = _run(["prune", "--model", "lenet5", "--method", "layerwise", "--ratio", "0.5",
                              "--out", out], capsys)
    assert code == 0 and "freshly initialised lenet5" in err
    s = json.loads((out / "summary.json").read_text())
    assert s["checkpoint"] is None and s["fresh_init"] is True
    assert all(layer["pruned"] == round(layer["weights"] * 0.5) for layer in s["report"]["layers"])


def test_prune_gpmt_writes_the_seed_logs_and_sparse_storage(tmp_path, base_ckpt, capsys):
    out = tmp_path / "g"
    code, _, _ = _run(["prune", "--checkpoint", base_ckpt, "--method", "gpmt", "--ratio", "0.9",
                       "--min-threshold", "1", "--storage", "sparse", "--out", out], capsys)
    assert code == 0
    for f in ("prune_log.csv", "layer_sparsities.csv", "prune_refined_log.csv"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader((out / "prune_refined_log.csv").open()))
    assert min(int(r["Layer Weights"]) - int(r["Weights Pruned"]) for r in rows) >= min(
        4305, min(int(r["Layer Weights"]) for r in rows))
    ck = load_checkpoint(out)
    assert ck.meta["storage"] == "sparse" and len(ck.masks) == 4
    w = dict(ck.model.named_parameters())
    assert all(torch.all(w[k].detach()[~m] == 0) for k, m in ck.masks.items())


@pytest.mark.parametrize("argv,needle", [
    (["--method", "global", "--ratio", "0.999"], "removes every weight of layer(s) conv2.weight"),
    (["--method", "magic", "--ratio", "0.5"], "unknown pruning method 'magic'"),
    (["--method", "gp"], "needs --ratio"),
    (["--method", "gp", "--ratio", "0.5", "--percent", "0.5"], "--percent only apply to structured"),
    (["--method", "gp", "--ratio", "1.5"], "ratio must be in"),
    (["--method", "gpmt", "--ratio", "0.5"], "min-threshold"),
    (["--method", "gp", "--ratio", "0.5", "--scope", "bn"], "scope kinds"),
])
def test_prune_user_errors_are_one_line_and_leave_no_output(argv, needle, tmp_path, base_ckpt, capsys):
    out = tmp_path / "bad"
    code, _, err = _run(["prune", "--checkpoint", base_ckpt, "--out", out] + argv, capsys)
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not out.exists()


def test_prune_allow_empty_layers_warns_and_continues(tmp_path, base_ckpt, capsys):
    out = tmp_path / "e"
    code, stdout, err = _run(["prune", "--checkpoint", base_ckpt, "--method", "global", "--ratio", "0.999",
                              "--allow-empty-layers", "--out", out], capsys)
    assert code == 0 and "WARNING: layers with no weight left: conv2.weight" in stdout
    # the CLI prints the library's warning as one line
    warned = [line for line in err.splitlines() if line.startswith("prunekit: warning:")]
    assert any("conv2.weight" in line for line in warned) and "Traceback" not in err


def test_reprune_cannot_revive_pruned_weights(tmp_path, base_ckpt, capsys):
    p1 = tmp_path / "p1"
    assert _run(["prune", "--checkpoint", base_ckpt, "--method", "gp", "--ratio", "0.8", "--out", p1], capsys)[0] == 0
    code, _, err = _run(["prune", "--checkpoint", p1, "--method", "gp", "--ratio", "0.5", "--out", tmp_path / "x"],
                        capsys)
    assert code == 2 and "would come back" in err
    code, _, _ = _run(["prune", "--checkpoint", p1, "--method", "gp", "--ratio", "0.9", "--out", tmp_path / "p2"],
                      capsys)
    ck = load_checkpoint(tmp_path / "p2")
    assert code == 0 and sum(int((~m).sum()) for m in ck.masks.values()) == round(0.9 * 430_500)


def test_structured_methods_are_delegated(tmp_path, base_ckpt, capsys):
    code, _, err = _run(["prune", "--checkpoint", base_ckpt, "--method", "l1-filter", "--out", tmp_path / "s"],
                        capsys)
    assert code == 2 and "l1-filter needs" in err


def test_sweep_writes_table_csv_and_plot(tmp_path, base_ckpt, capsys):
    out = tmp_path / "sw"
    code, stdout, _ = _run(["sweep", "--checkpoint", base_ckpt, "--method", "global,gp", "--ratios", "0.3,0.6",
                            "--limit", "64", "--out", out], capsys)
    assert code == 0
    for f in ("sweep.csv", "sweep.md", "sweep.png", "summary.json"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["method"], r["ratio"]) for r in rows] == [("baseline", "baseline"), ("global", "0.3"),
                                                         ("global", "0.6"), ("gp", "0.3"), ("gp", "0.6")]
    assert rows[2]["fc_threshold"] == "" and rows[4]["fc_threshold"] == rows[4]["conv_threshold"] != ""
    md = (out / "sweep.md").read_text()
    assert "| Baseline |" in md and f"{float(rows[1]['conv_threshold']):0.4e}" in md
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_finetune_and_scratch_from_a_pruned_checkpoint(tmp_path, base_ckpt, capsys):
    p = tmp_path / "p"
    assert _run(["prune", "--checkpoint", base_ckpt, "--method", "gp", "--ratio", "0.75", "--out", p], capsys)[0] == 0
    code, _, _ = _run(["finetune", "--checkpoint", p, "--epochs", "1", "--limit", "64", "--batch-size", "32",
                       "--out", tmp_path / "ft", "--no-progress"], capsys)
    assert code == 0
    ft = load_checkpoint(tmp_path / "ft")
    assert all(torch.all(dict(ft.model.named_parameters())[k].detach()[~m] == 0) for k, m in ft.masks.items())
    code, stdout, _ = _run(["scratch", "--checkpoint", p, "--epochs", "10", "--budget", "B", "--plan-only",
                            "--out", tmp_path / "sc"], capsys)
    s = json.loads((tmp_path / "sc" / "summary.json").read_text())
    assert code == 0 and s["budget"]["epochs"] == int(10 * s["budget"]["ratio"]) > 10 and s["trained"] is False
    code, _, err = _run(["scratch", "--model", "lenet5", "--out", tmp_path / "sc2"], capsys)
    assert code == 2 and "needs --checkpoint" in err
