"""CLI: prunekit prune --method wanda|sparsegpt --calibration FILE on a small byte-level LM (a factory model)."""
from __future__ import annotations

import csv
import json

import pytest

from prunekit.checkpoint import load_checkpoint
from prunekit.cli import main
from prunekit.data.text import encode

LM = "prunekit.models.lm:byte_lm"
SMALL = '{"dim": 32, "layers": 2, "heads": 2, "max_len": 64}'


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "calib.txt"
    p.write_text("def f(x):\n    return x * 2  # a comment\n" * 200)
    return p


def test_wanda_nm_writes_masks_reports_and_perplexity(tmp_path, text, capsys):
    out = tmp_path / "w"
    code, stdout, _ = _run(["prune", "--model", LM, "--model-kwargs", SMALL, "--method", "wanda", "--nm", "2:4",
                            "--calibration", text, "--calibration-samples", "6", "--seq-len", "32", "--eval",
                            "--out", out], capsys)
    assert code == 0, stdout
    s = json.loads((out / "summary.json").read_text())
    per_block = 4 * 32 * 32 + 2 * 32 * 128  # q, k, v, o + fc1, fc2
    assert s["total_weights"] == 2 * per_block and s["total_pruned"] == per_block and s["nm"] == "2:4"
    assert s["blocks"] == ["blocks.0", "blocks.1"] and s["perplexity_before"] > 1 and s["perplexity_after"] > 1
    ck = load_checkpoint(out, factory=LM)
    assert len(ck.masks) == 12 and "lm_head.weight" not in ck.masks
    rows = list(csv.DictReader((out / "calibration_report.csv").open()))
    assert len(rows) == 12 and all(0 < float(r["error"]) < 1 for r in rows)
    assert "held-out perplexity:" in stdout and "mean layer error" in stdout


@pytest.mark.parametrize("extra,needle", [
    (["--method", "wanda", "--ratio", "0.5"], "needs calibration data"),
    (["--method", "sparsegpt", "--calibration", "CALIB"], "needs --ratio R (e.g. 0.5) or --nm"),
    (["--method", "sparsegpt", "--ratio", "1.5", "--calibration", "CALIB"], "--ratio"),
    (["--method", "wanda", "--nm", "4:2", "--calibration", "CALIB"], "1 <= N < M"),
    (["--method", "wanda", "--nm", "2:4", "--ratio", "0.5", "--calibration", "CALIB"], "not both"),
    (["--method", "wanda", "--ratio", "0.5", "--calibration", "missing.txt"], "no such file"),
    (["--method", "global", "--ratio", "0.5", "--calibration", "CALIB"], "only apply to the calibrated"),
    (["--method", "wanda", "--nm", "2:4", "--calibration", "CALIB", "--model-kwargs",
      '{"dim": 30, "layers": 1, "heads": 2, "max_len": 64}'], "does not divide layer blocks.0.attn.q.weight"),
    (["--method", "sparsegpt", "--ratio", "0.5", "--calibration", "CALIB", "--model-kwargs",
      '{"vocab_size": 50, "dim": 32, "layers": 1, "heads": 2, "max_len": 64}'], "does not accept the calibration"),
    (["--method", "sparsegpt", "--ratio", "0.5", "--calibration", "CALIB", "--blocks", "layers"],
     "no module 'layers'"),
])
def test_bad_input_is_one_error_line_and_exit_2(extra, needle, tmp_path, text, capsys):
    argv = ["prune", "--model", LM, "--seq-len", "32", "--calibration-samples", "2", "--out", tmp_path / "o"]
    if "--model-kwargs" not in extra:
        argv += ["--model-kwargs", SMALL]
    argv += [str(text) if a == "CALIB" else a for a in extra]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("prunekit: error:") and needle in err, err


def test_bytes_without_a_tokenizer():
    assert encode("é".encode()).tolist() == [0xC3, 0xA9]


def test_images_of_a_dataset_calibrate_a_cnn_without_blocks(tmp_path, capsys):
    out = tmp_path / "cnn"
    code, stdout, _ = _run(["prune", "--model", "lenet5", "--dataset", "digits", "--method", "sparsegpt",
                            "--ratio", "0.5", "--calibration", "dataset", "--calibration-samples", "16",
                            "--out", out], capsys)
    assert code == 0, stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["blocks"] == [""] and "16 training images of digits" in s["calibration"]
    layers = {r["name"]: r for r in s["report"]["layers"]}
    assert set(layers) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}  # one block: everything
    assert all(r["pruned"] == round(r["weights"] / 2) for r in layers.values())


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size_and_windows_do_not_overlap():
    import math

    import torch

    from prunekit.metrics.perplexity import perplexity

    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def forward(self, ids):
            self.seen.append(ids.clone())
            return torch.zeros(*ids.shape, 7) + self.w

    m = Uniform()
    res = perplexity(m, torch.arange(53) % 7, seq_len=10, batch_size=3)
    assert res.windows == 5 and res.tokens == 5 * 9 and math.isclose(res.perplexity, 7.0, rel_tol=1e-6)
    assert torch.equal(torch.cat(m.seen).flatten(), torch.arange(50) % 7)  # tail of 3 tokens dropped


def test_calibration_samples_are_seeded_windows_of_the_stream():
    import torch

    from prunekit.data.text import calibration_samples, split_stream

    tokens = torch.arange(1000)
    calib, held = split_stream(tokens, 0.1)
    assert calib.numel() == 900 and held[0] == 900
    a = calibration_samples(calib, 5, 16, seed=3)
    b = calibration_samples(calib, 5, 16, seed=3)
    c = calibration_samples(calib, 5, 16, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))
    for x in a:  # contiguous windows inside the calibration part
        assert x.shape == (1, 16) and int(x[0, -1]) < 900 and bool((x.diff() == 1).all())
