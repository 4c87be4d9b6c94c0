"""Typed command options: one numeric validator for every float/int flag, through the CLI and through recipes."""
from __future__ import annotations

import argparse
import dataclasses
import math

import pytest

from prunekit.cli import main
from prunekit.commands import options_for
from prunekit.errors import PrunekitError, check_number
from prunekit.options import add_arguments, flag_name, from_mapping, from_namespace, keys_of, spec_of

OWNED = ["train", "eval", "info", "sweep", "finetune", "scratch", "ensemble", "distill", "export", "quickstart",
         "run"]
# what each command needs besides the flag under test (validation happens before any of it is read)
REQUIRED = {"ensemble": ["--checkpoints", "a"], "distill": ["--teachers", "a"], "run": ["nonexistent.yaml"]}


# -- check_number: hand-derived table -----------------------------------------------------------------------------
@pytest.mark.parametrize("value, kw, expected", [
    ("3", dict(low=1, integer=True), 3), (2.0, dict(integer=True), 2), ("1e-3", {}, 1e-3),
    (0.0, dict(low=0.0), 0.0), (float("inf"), dict(high=float("inf")), float("inf")), (5, dict(high=5), 5),
])
def test_check_number_accepts(value, kw, expected):
    got = check_number("x", value, **kw)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, kw, needle", [
    (float("nan"), {}, "finite"), ("nan", {}, "finite"), (float("inf"), {}, "finite"), ("-inf", {}, "finite"),
    (1.5, dict(integer=True), "integer"), ("abc", {}, "a number"), (True, {}, "a number"), (None, {}, "a number"),
    (0, dict(low=1, integer=True), "positive integer"), (-1, dict(low=0, integer=True), "non-negative integer"),
    (0.0, dict(low=0.0, low_open=True), "(0.0, inf)"), (1.0, dict(low=0, high=1, high_open=True), "[0, 1)"),
    (7, dict(high=5), "(-inf, 5]"),
])
def test_check_number_rejects_naming_the_value(value, kw, needle):
    with pytest.raises(PrunekitError) as exc:
        check_number("--flag", value, **kw)
    assert str(exc.value).startswith("--flag must be") and needle in str(exc.value)


# -- every numeric flag of every command ----------------------------------------------------------------------------
def _bad_values(spec) -> list[tuple[str, str]]:
    """(value, why) a flag with this spec must refuse, derived from its declared bounds."""
    out = [("nan", "nan")]
    if spec.high != math.inf:
        out.append(("inf", "inf"))
    if spec.low != -math.inf:
        out.append(("-inf", "-inf"))
    if spec.low is not None:
        out.append((repr(spec.low if spec.low_open else spec.low - 1), "below"))
    if spec.high is not None:
        out.append((repr(spec.high if spec.high_open else spec.high + 1), "above"))
    if spec.kind is int:
        out.append(("1.5", "non-integer"))
    return out


def _cases():
    for command in OWNED:
        for f in dataclasses.fields(options_for(command)):
            spec = spec_of(f)
            if spec.kind in (int, float) and spec.cli and not spec.raw:
                for value, why in _bad_values(spec):
                    yield pytest.param(command, f.name, value, id=f"{command}-{f.name}-{why}")


CASES = list(_cases())


def test_the_table_covers_the_numeric_flags_of_every_command():
    commands = {c.values[0] for c in CASES}
    assert commands == set(OWNED)
    names = {(c.values[0], c.values[1]) for c in CASES}
    for must in [("train", "lr"), ("train", "weight_decay"), ("train", "momentum"), ("train", "warmup_epochs"),
                 ("train", "label_smoothing"), ("train", "sparsity_reg"), ("train", "limit"), ("sweep", "ratios"),
                 ("eval", "latency_batch"), ("export", "latency_repeats"), ("distill", "temperature"),
                 ("quickstart", "ratio"), ("run", "seeds")]:
        assert must in names, must
    assert len(CASES) >= 250


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    return tmp_path_factory.mktemp("numbers") / "out"


@pytest.mark.parametrize("command, name, value", CASES)
def test_bad_number_through_the_cli_is_one_line_exit_2(command, name, value, shared_out, capsys):
    f = next(f for f in dataclasses.fields(options_for(command)) if f.name == name)
    out = shared_out
    argv = [command, *REQUIRED.get(command, []), f"{flag_name(f)}={value}", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prunekit: error:") and flag_name(f) in err, err
    assert not out.exists()


@pytest.mark.parametrize("command, name, value", CASES)
def test_bad_number_through_a_recipe_mapping_names_the_field(command, name, value):
    with pytest.raises(PrunekitError) as exc:
        from_mapping(options_for(command), {name: value, "out": "o"}, "recipe 'r', stage 's'")
    assert str(exc.value).startswith(f"recipe 'r', stage 's', field {name!r}")


@pytest.mark.parametrize("flag", ["--lr", "--wd", "--momentum"])
def test_nan_hyperparameters_no_longer_train(flag, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--model", "lenet5", "--epochs", "1", "--limit", "32", flag, "nan", "--out", str(out)]) == 2
    assert "must be a finite number" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


# -- one vocabulary ------------------------------------------------------------------------------------------------
def _parse(command, argv):
    p = argparse.ArgumentParser()
    add_arguments(p, options_for(command))
    return from_namespace(options_for(command), p.parse_args(argv))


def test_lists_take_nargs_or_the_comma_form_and_the_first_use_replaces_the_default():
    a = _parse("train", ["--out", "o", "--milestones", "0.3", "0.6"])
    b = _parse("train", ["--out", "o", "--milestones", "0.3,0.6"])
    assert a.milestones == b.milestones == [0.3, 0.6]
    assert _parse("train", ["--out", "o"]).milestones == [0.5, 0.75]
    s = _parse("sweep", ["--out", "o", "--ratios", "0.1", "0.2,0.3", "--method", "gp", "--method", "global"])
    assert s.ratios == [0.1, 0.2, 0.3] and s.method == ["gp", "global"]


def test_choices_accept_hyphen_or_underscore_and_normalise():
    assert _parse("ensemble", ["--out", "o", "--checkpoints", "a", "--mode", "mean-softmax"]).mode == "mean_softmax"
    assert from_mapping(options_for("distill"), {"teachers": ["a"], "out": "o", "kd_mode": "mean-teacher"}).kd_mode \
        == "mean_teacher"
    from prunekit.commands.export import _formats
    from prunekit.commands.sweep import _methods

    assert _formats(["exported_program", "onnx"]) == ["exported-program", "onnx"]
    assert _methods(["per_kind"]) == ["per-kind"]


def test_aliases_and_flag_spellings_are_the_same_field():
    assert _parse("train", ["--out", "o", "--wd", "0.01"]).weight_decay == 0.01
    assert from_mapping(options_for("train"), {"wd": 0.01, "out": "o"}).weight_decay == 0.01
    assert from_mapping(options_for("train"), {"label-smoothing": 0.1, "out": "o"}).label_smoothing == 0.1
    assert keys_of(options_for("train"))["wd"] == "weight_decay"


def test_unknown_recipe_key_lists_the_valid_fields():
    with pytest.raises(PrunekitError) as exc:
        from_mapping(options_for("eval"), {"latency_batch_size": 2}, "recipe 'r', stage 'e'")
    msg = str(exc.value)
    assert "unknown option 'latency_batch_size' for command 'eval'" in msg and "latency_batch" in msg


def test_library_callers_get_the_same_checks():
    opts = options_for("train")(out="o", lr=float("nan"))
    with pytest.raises(PrunekitError, match="--lr must be a finite number"):
        opts.validate()


def test_device_is_checked_up_front(tmp_path, capsys):
    import torch

    assert main(["eval", "--checkpoint", "x", "--device", "bogus", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device must be auto, cpu, cuda, cuda:N or mps, got 'bogus'" in err
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(PrunekitError, match="recipe 'r', stage 's', field 'device'"):
        from_mapping(options_for("train"), {"device": "gpu0", "out": "o"}, "recipe 'r', stage 's'")
    assert not (tmp_path / "o").exists()


def test_resume_into_the_folder_of_another_command_is_refused(tmp_path, capsys):
    import json

    from prunekit.utils.runlock import RUN_FILE

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / RUN_FILE).write_text(json.dumps({"status": "complete", "command": "prune", "pid": 1}))
    assert main(["train", "--model", "lenet5", "--epochs", "1", "--limit", "16", "--resume", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the output of `prunekit prune`, not of a train run" in err
    assert sorted(p.name for p in folder.iterdir()) == [RUN_FILE]


def test_resume_anyway_reaches_the_trainer(tmp_path, capsys):
    import json

    out = tmp_path / "t"
    base = ["train", "--model", "lenet5", "--limit", "32", "--batch-size", "16", "--no-progress", "--out", str(out)]
    assert main([*base, "--epochs", "1", "--lr", "0.02"]) == 0
    assert main([*base, "--epochs", "2", "--lr", "0.05", "--resume"]) == 2  # changed lr: refused
    assert main([*base, "--epochs", "2", "--lr", "0.05", "--resume", "--resume-anyway"]) == 0
    changes = json.loads((out / "summary.json").read_text())["resumed_with_changes"]
    assert changes and "lr" in changes
