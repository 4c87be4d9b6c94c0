"""The structured half of ``prunekit prune``: outputs, metadata for finetune/scratch, flag errors."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from prunekit import load_checkpoint, save_model
from prunekit.errors import EmptyLayerError, PrunekitError
from prunekit.metrics import count_params
from prunekit.models import create_model
from prunekit.pruning.structured.verify import randomize_bn

FAST = ["--dataset", "digits", "--limit", "32", "--latency-batch-sizes", "1,4", "--latency-repeats", "1"]


def _run(argv: list[str]) -> int:
    """Run ``prunekit prune`` through the CLI (a user error raises instead of exiting 2)."""
    from prunekit.commands import run_command
    from prunekit.commands.prune import PruneOptions
    from prunekit.options import add_arguments, from_namespace

    p = argparse.ArgumentParser()
    add_arguments(p, PruneOptions)
    return run_command("prune", from_namespace(PruneOptions, p.parse_args(argv + FAST)))


def test_l1_filter_named_plan_writes_every_output_and_a_loadable_smaller_model(tmp_path, capsys):
    out = tmp_path / "o"
    assert _run(["--model", "resnet56", "--method", "l1-filter", "--plan", "resnet56-A", "--out", str(out),
                 "--eval"]) == 0
    for f in ("model.safetensors", "plan.json", "structured_report.csv", "structured_report.md", "channels.csv",
              "channels.png", "summary.json"):
        assert (out / f).is_file(), f
    ck = load_checkpoint(out)
    # digits: 1 input channel, so the stem conv has 16*1*9 weights instead of 16*3*9 → 773,336 - 288
    assert count_params(ck.model) == 773_336 - 288
    assert ck.meta["cfg"] == ck.model.prunekit_cfg and ck.meta["plan"]["method"] == "l1-filter"
    extra = ck.meta["extra"]
    assert extra["method"] == "l1-filter" and extra["dense_params"] == 853_018 - 288
    assert extra["dense_flops"] == 2 * extra["dense_macs"] > extra["flops"]
    assert extra["flops_input_size"] == [1, 8, 8]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fresh_init"] is True and summary["exactness_max_abs_diff"] <= 1e-3
    assert summary["after"]["params"] == 773_336 - 288
    assert set(summary["accuracy"]) == {"before", "masked (removed channels zeroed)", "after"}
    assert summary["accuracy"]["after"] == summary["accuracy"]["masked (removed channels zeroed)"]
    assert "latency_ms_b4" in summary["before"] and summary["ratios"]["params"] > 1.1
    assert "| params" in capsys.readouterr().out


def test_slimming_on_a_checkpoint_reports_masked_equal_to_rebuilt(tmp_path):
    m = randomize_bn(create_model("vgg11", num_classes=10, in_channels=1), seed=3)
    save_model(m, tmp_path / "ck")
    out = tmp_path / "o"
    _run(["--checkpoint", str(tmp_path / "ck"), "--method", "slimming", "--percent", "0.5", "--out", str(out),
          "--eval"])
    s = json.loads((out / "summary.json").read_text())
    assert s["fresh_init"] is False and s["info"]["percent"] == 0.5
    assert s["accuracy"]["after"] == s["accuracy"]["masked (removed channels zeroed)"]
    assert s["exactness_max_abs_diff"] is not None and s["info"]["rel_diff"] <= 1e-5  # relative to the output
    rows = (out / "channels.csv").read_text().splitlines()
    assert rows[0] == "layer,stage,total,kept,pruned,kept_ratio" and len(rows) == 1 + 8
    ck = load_checkpoint(out)
    assert ck.meta["cfg"] == s["cfg"] and count_params(ck.model) == s["after"]["params"]
    # what `prunekit finetune/scratch` do: rebuild the pruned architecture from the meta and train it
    fresh = create_model(ck.meta["model"], num_classes=10, cfg=ck.meta["cfg"], in_channels=1)
    assert count_params(fresh) == s["after"]["params"]


def test_slimming_mask_saves_full_model_with_bn_masks(tmp_path):
    m = randomize_bn(create_model("densenet40", num_classes=10, in_channels=1), seed=4)
    save_model(m, tmp_path / "ck")
    out = tmp_path / "o"
    _run(["--checkpoint", str(tmp_path / "ck"), "--method", "slimming-mask", "--percent", "0.4",
          "--out", str(out)])
    ck = load_checkpoint(out)
    assert count_params(ck.model) == count_params(m)
    assert ck.masks and all(k.endswith((".weight", ".bias")) for k in ck.masks)
    for k, mask in ck.masks.items():
        p = dict(ck.model.named_parameters())[k]
        assert torch.all(p[~mask] == 0), k
    s = json.loads((out / "summary.json").read_text())
    assert s["accuracy"] == {}  # no --eval: the dataset is not even loaded
    assert s["info"]["equivalent_removal"]["params"] < count_params(m)
    assert json.loads((out / "plan.json").read_text())["method"] == "slimming-mask"


def test_iterative_rounds_flag_and_strict_empty_and_flag_errors(tmp_path):
    out = tmp_path / "o"
    _run(["--model", "resnet56", "--method", "l1-filter", "--rounds", "2", "--out", str(out)])
    s = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in s["rounds"]] == [1, 2]
    assert s["cfg"][0] == 12 and s["cfg"][7] == 16  # 16→14→12, layer1.7 kept whole
    with pytest.raises(EmptyLayerError, match="features"):  # fresh VGG: every γ = 0.5, all tied at the threshold
        _run(["--model", "vgg11", "--method", "slimming", "--percent", "0.3", "--strict-empty",
              "--out", str(tmp_path / "e")])
    with pytest.raises(PrunekitError, match="--percent"):
        _run(["--model", "vgg11", "--method", "slimming", "--out", str(tmp_path / "x")])
    with pytest.raises(PrunekitError, match="only apply to --method l1-filter"):
        _run(["--model", "vgg11", "--method", "slimming", "--percent", "0.3", "--plan", "vgg16-A",
              "--out", str(tmp_path / "x")])
    with pytest.raises(PrunekitError, match="--plan NAME"):
        _run(["--model", "resnet20", "--method", "l1-filter", "--out", str(tmp_path / "x")])


def test_prunekit_prune_command_dispatches_to_the_structured_methods(tmp_path):
    from prunekit.cli import main

    out = tmp_path / "cmd"
    rc = main(["prune", "--model", "resnet20", "--method", "l1-filter", "--ratios", "0.5", "--skip", "layer3.2",
               "--out", str(out), "--latency-batch-sizes", "1", "--latency-repeats", "1"])
    assert rc == 0
    ck = load_checkpoint(out)
    assert ck.meta["cfg"] == [8] * 3 + [16] * 3 + [32, 32, 64]
    assert main(["prune", "--model", "lenet5", "--method", "slimming", "--percent", "0.3",
                 "--out", str(tmp_path / "bad")]) == 2  # lenet5 has no BatchNorm: one-line error


def test_slimming_round_to_on_the_command_line_rounds_every_bn_width(tmp_path):
    save_model(randomize_bn(create_model("vgg11", num_classes=10, in_channels=1), seed=3), tmp_path / "ck")
    out, plain = tmp_path / "o", tmp_path / "p"
    for o, extra in ((out, ["--round-to", "8"]), (plain, [])):
        assert _run(["--checkpoint", str(tmp_path / "ck"), "--method", "slimming", "--percent", "0.4", *extra,
                     "--out", str(o)]) == 0
    cfg = load_checkpoint(out).model.prunekit_cfg
    assert all(w % 8 == 0 for w in cfg if w != "M")
    assert any(w % 8 for w in load_checkpoint(plain).model.prunekit_cfg if w != "M")
    with pytest.raises(PrunekitError, match="only apply to structured methods"):
        _run(["--model", "vgg11", "--method", "layerwise", "--ratio", "0.5", "--round-to", "8",
              "--out", str(tmp_path / "w")])
