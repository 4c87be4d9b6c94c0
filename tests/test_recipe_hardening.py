"""Recipes against hostile and careless input: alias bombs, non-UTF-8 files, escaping names, stale stages; and the
CLI's global flags (-q/-v, --debug, one-line warnings)."""
from __future__ import annotations

import time
import warnings

import pytest
import torch
import yaml

from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.experiments.recipe import load_recipe, parse_recipe
from prunekit.experiments.runner import MARKER, folder_digest, run_recipe


def _one_error_line(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("prunekit: error:") and "Traceback" not in err, err


# -- hostile files ---------------------------------------------------------------------------------------------------
def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\nname: bomb\nstages: [{{name: s, command: train, args: {{model: *a{levels - 1}}}}}]\n"


def test_alias_bomb_is_refused_quickly(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())  # 10**9 strings once expanded
    t0 = time.monotonic()
    with pytest.raises(PrunekitError, match="aliases counted as expanded"):
        load_recipe(path)
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert time.monotonic() - t0 < 10
    _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_self_referencing_alias_and_deep_nesting_are_clean_errors(tmp_path, capsys):
    (tmp_path / "deep.yaml").write_text("name: d\nstages: " + "[" * 1500 + "]" * 1500 + "\n")
    assert main(["run", str(tmp_path / "deep.yaml"), "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys.readouterr().err)


def test_a_few_shared_anchors_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: ok\nx-ft: &ft {epochs: 1, lr: 0.01}\nstages:\n"
                    "  - {name: a, command: train, args: *ft}\n  - {name: b, command: finetune, from: a, args: *ft}\n")
    r = load_recipe(path)
    assert r.stage("b").args["epochs"] == 1 and r.stage("b").args["checkpoint"] == "@a"


def test_non_utf8_recipe_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\nstages: [{name: a, command: train}]\n".encode("latin-1"))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "is not UTF-8" in err


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a/b", "..", ".", "", "x" * 200])
def test_recipe_name_must_be_a_plain_folder_name(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path / "..")  # runs/<name> would land next to tmp_path for ../ names
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = work / "r.yaml"
    path.write_text(yaml.safe_dump({"name": name, "stages": [{"name": "a", "command": "eval"}]}))
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "must be a plain folder name" in err
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert sorted(p.name for p in work.iterdir()) == ["r.yaml"]


def test_device_in_a_recipe_is_checked_naming_the_field():
    raw = {"name": "d", "stages": [{"name": "a", "command": "train", "args": {"device": "bogus"}}]}
    with pytest.raises(PrunekitError, match="recipe 'd', stage 'a', field 'device'"):
        parse_recipe(raw)


def test_bad_number_in_a_recipe_names_the_stage_and_field():
    raw = {"name": "n", "stages": [{"name": "a", "command": "train", "args": {"lr": float("nan")}}]}
    with pytest.raises(PrunekitError, match="recipe 'n', stage 'a', field 'lr' must be a finite number"):
        parse_recipe(raw)


# -- stale stages ----------------------------------------------------------------------------------------------------
def _chain(**over):
    raw = {"name": "c", "dataset": "digits", "limit": 64, "seeds": [0], "defaults": {"batch_size": 32},
           "stages": [{"name": "base", "command": "train", "args": {"model": "lenet5", "epochs": 1, "lr": 0.02}},
                      {"name": "p", "command": "prune", "from": "base", "args": {"method": "global", "ratio": 0.5}},
                      {"name": "ft", "command": "finetune", "from": "p", "args": {"epochs": 1, "lr": 0.01}}]}
    raw.update(over)
    return raw


def test_rerun_upstream_stage_reruns_its_dependants(tmp_path, caplog):
    from prunekit import load_checkpoint, save_model
    from prunekit.models import create_model

    out = tmp_path / "o"
    run_recipe(parse_recipe(_chain()), out)
    sd = out / "seed0"
    old_p = folder_digest(sd / "p")
    # nothing changed: every stage is skipped
    caplog.clear()
    with caplog.at_level("INFO", logger="prunekit"):
        run_recipe(parse_recipe(_chain()), out)
    assert caplog.text.count("done, skipped") == 3
    # the upstream stage is re-run and writes other weights (here: replaced by another model of the same kind)
    g = torch.Generator().manual_seed(123)
    other = create_model("lenet5", num_classes=10, in_channels=1)
    with torch.no_grad():
        for prm in other.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g))
    save_model(other, sd / "base")
    caplog.clear()
    with caplog.at_level("INFO", logger="prunekit"):
        run_recipe(parse_recipe(_chain()), out)
    assert "base: done, skipped" in caplog.text
    assert "p: done, skipped" not in caplog.text and "ft: done, skipped" not in caplog.text
    assert "p: an input changed" in caplog.text and "ft: an input changed" in caplog.text
    assert folder_digest(sd / "p") != old_p
    # the re-pruned model derives from the new weights: every kept weight equals the new base's weight
    pruned = load_checkpoint(sd / "p")
    base = dict(other.named_parameters())
    for n, m in pruned.masks.items():
        kept = dict(pruned.model.named_parameters())[n][m]
        assert torch.equal(kept, base[n].detach()[m]), n
    # and the run is stable again
    caplog.clear()
    with caplog.at_level("INFO", logger="prunekit"):
        run_recipe(parse_recipe(_chain()), out)
    assert caplog.text.count("done, skipped") == 3


def test_half_finished_stage_folder_is_run_again(tmp_path, caplog):
    import json

    from prunekit.utils.runlock import RUN_FILE

    out = tmp_path / "o"
    raw = _chain(stages=_chain()["stages"][:2])
    run_recipe(parse_recipe(raw), out)
    p = out / "seed0" / "p"
    record = json.loads((p / RUN_FILE).read_text())
    record["status"] = "running"  # as a prune killed after its marker said done would leave it
    (p / RUN_FILE).write_text(json.dumps(record))
    caplog.clear()
    with caplog.at_level("INFO", logger="prunekit"):
        run_recipe(parse_recipe(raw), out)
    assert "p: done, skipped" not in caplog.text and "base: done, skipped" in caplog.text
    assert json.loads((p / RUN_FILE).read_text())["status"] == "complete"
    assert json.loads((p / MARKER).read_text())["status"] == "done"


# -- global CLI flags ------------------------------------------------------------------------------------------------
def test_quiet_and_verbose_set_the_console_level(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_chain(stages=_chain()["stages"][:1])))
    out = str(tmp_path / "o")
    assert main(["run", str(path), "--out", out]) == 0
    capsys.readouterr()
    assert main(["run", str(path), "--out", out]) == 0
    assert "base: done, skipped" in capsys.readouterr().err
    assert main(["-q", "run", str(path), "--out", out]) == 0
    assert "done, skipped" not in capsys.readouterr().err
    assert main(["-v", "run", str(path), "--out", out]) == 0
    err = capsys.readouterr().err
    assert "debug: [seed 0] base: inputs" in err and "done, skipped" in err


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys):
    argv = ["eval", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("prunekit: error:")
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err)


def test_warnings_print_as_one_line_only_inside_the_cli(monkeypatch, capsys):
    import prunekit.commands.info as info

    def noisy(opts):
        warnings.warn("first line\nsecond line", UserWarning)
        return 0

    monkeypatch.setattr(info, "execute", noisy)
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["info", "--list"]) == 0
    assert capsys.readouterr().err == "prunekit: warning: first line\n"
    assert warnings.showwarning is shown
