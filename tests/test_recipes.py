"""Recipes: validation before anything runs, dry runs, skipping/resuming stages, and the shipped recipes."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.experiments.recipe import load_recipe, parse_recipe
from prunekit.experiments.results import aggregate
from prunekit.experiments.runner import MARKER, can_resume, plan_commands, run_recipe

REPO = Path(__file__).resolve().parents[1]


def _recipe(**over):
    raw = {"name": "t", "dataset": "digits", "limit": 64, "seeds": [0],
           "stages": [{"name": "base", "command": "train", "args": {"model": "lenet5", "epochs": 1, "lr": 0.02}},
                      {"name": "p", "command": "prune", "from": "base", "args": {"method": "global", "ratio": 0.5}}]}
    raw.update(over)
    return raw


# -- validation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, needle", [
    (_recipe(colour="red"), "unknown top-level key 'colour'"),
    (_recipe(stages=[{"name": "a", "command": "train", "epochs": 3}]), "stage 'a': unknown key 'epochs'"),
    (_recipe(stages=[{"name": "a", "command": "train", "args": {"ratio": 0.5}}]),
     "stage 'a': unknown option 'ratio' for command 'train'"),
    (_recipe(stages=[{"name": "a", "command": "train", "args": {"out": "x"}}]), "unknown option 'out'"),
    (_recipe(stages=[{"name": "a", "command": "finetune", "from": "b"},
                     {"name": "b", "command": "train"}]), "stage 'a', key 'checkpoint': 'b' is a later stage"),
    (_recipe(stages=[{"name": "a", "command": "ensemble", "args": {"checkpoints": ["@nope"]}}]),
     "stage 'a', key 'checkpoints': 'nope' is no stage of this recipe"),
    (_recipe(stages=[{"name": "a", "command": "train"}, {"name": "a", "command": "train"}]),
     "stage name 'a' is used twice"),
    (_recipe(stages=[{"name": "a", "command": "bake"}]), "stage 'a': unknown command 'bake'"),
    (_recipe(stages=[{"name": "a", "command": "train", "args": {"epochs": "many"}}]), "stage 'a'"),
    (_recipe(report={"rows": ["zzz"]}), "key 'report.rows': 'zzz'"),
    (_recipe(stages=[{"name": "r", "command": "rounds", "rounds": 2, "prune": {"method": "global"}}]),
     "needs 'from'"),
])
def test_invalid_recipe_fails_naming_the_key(raw, needle):
    with pytest.raises(PrunekitError) as exc:
        parse_recipe(raw)
    assert needle in str(exc.value)


def test_invalid_recipe_runs_nothing(tmp_path, capsys):
    bad = _recipe()
    bad["stages"].append({"name": "ft", "command": "finetune", "from": "p", "args": {"epochz": 1}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "stage 'ft': unknown option 'epochz' for command 'finetune'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rounds_expand_into_chained_prune_and_finetune_stages():
    r = parse_recipe(_recipe(stages=[
        {"name": "base", "command": "train"},
        {"name": "it", "command": "rounds", "from": "base", "rounds": 3,
         "prune": {"method": "global", "ratio": 0.5}, "finetune": {"epochs": 1}}]))
    assert [s.name for s in r.stages] == ["base", "it.r1.prune", "it.r1", "it.r2.prune", "it.r2", "it.r3.prune",
                                          "it.r3"]
    assert [s.args["checkpoint"] for s in r.stages[1:]] == ["@base", "@it.r1.prune", "@it.r1", "@it.r2.prune",
                                                           "@it.r2", "@it.r3.prune"]
    assert r.stage("it.r2").args["limit"] == 64  # top-level options reach expanded stages


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(seeds=[3, 4]), sort_keys=False))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    o = tmp_path / "o"
    expected = []
    for seed in (3, 4):
        expected.append(f"[seed {seed}] base: prunekit train --model lenet5 --epochs 1 --lr 0.02 --dataset digits "
                        f"--limit 64 --seed {seed} --out {o}/seed{seed}/base")
        expected.append(f"[seed {seed}] p: prunekit prune --method global --ratio 0.5 --checkpoint {o}/seed{seed}/base "
                        f"--dataset digits --limit 64 --seed {seed} --out {o}/seed{seed}/p")
    assert lines == expected
    assert not o.exists()


# -- running, skipping, changed options ---------------------------------------------------------------------------
def test_rerun_skips_finished_stages_and_rejects_changed_options(tmp_path, caplog):
    out = tmp_path / "o"
    run_recipe(parse_recipe(_recipe()), out)
    model = out / "seed0" / "base" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    assert (out / "seed0" / "p" / MARKER).is_file() and (out / "summary.md").is_file()
    caplog.clear()
    with caplog.at_level("INFO", logger="prunekit"):
        run_recipe(parse_recipe(_recipe()), out)
    assert caplog.text.count("done, skipped") == 2
    assert model.stat().st_mtime_ns == stamp
    changed = _recipe()
    changed["stages"][0]["args"]["lr"] = 0.05
    with pytest.raises(PrunekitError) as exc:
        run_recipe(parse_recipe(changed), out)
    assert "stage 'base' (seed 0) already ran with other options" in str(exc.value)
    assert model.stat().st_mtime_ns == stamp


def test_train_stage_with_cfg_builds_a_narrow_model(tmp_path):
    raw = _recipe(stages=[
        {"name": "base", "command": "train",
         "args": {"model": "vgg11", "cfg": [4, "M", 8, "M", 8, 8, "M", 8, 8, "M", 8, 8], "epochs": 1, "lr": 0.02}}])
    result = run_recipe(parse_recipe(raw), tmp_path / "o")
    from prunekit import load_model

    m = load_model(tmp_path / "o" / "seed0" / "base")
    assert m.prunekit_cfg == [4, "M", 8, "M", 8, 8, "M", 8, 8, "M", 8, 8]
    assert [r["params"] for r in result["summary"]] == [sum(p.numel() for p in m.parameters())]


def test_resume_needs_only_a_readable_train_state(tmp_path):
    run_recipe(parse_recipe(_recipe(stages=[_recipe()["stages"][0]])), tmp_path / "o")
    folder = tmp_path / "o" / "seed0" / "base"
    assert can_resume(folder)
    (folder / "train_state.pt").write_bytes(b"truncated")
    assert not can_resume(folder)
    (folder / "train_state.pt").unlink()
    assert not can_resume(folder)


def test_random_filter_stage_matches_l1_widths_with_other_filters(tmp_path):
    prune = {"ratios": "0.3,0.3,0.5", "skip": "layer3.0", "rounds": 2}
    raw = _recipe(stages=[
        {"name": "arch", "command": "train", "args": {"model": "resnet20", "epochs": 1}},
        {"name": "l1", "command": "prune", "from": "arch", "args": {"method": "l1-filter", **prune}},
        {"name": "rnd", "command": "random-filter", "from": "arch", "args": prune}])
    run_recipe(parse_recipe(raw), tmp_path / "o")
    from prunekit import load_model

    l1, rnd = (load_model(tmp_path / "o" / "seed0" / n) for n in ("l1", "rnd"))
    assert rnd.prunekit_cfg == l1.prunekit_cfg == [7, 7, 7, 15, 15, 15, 64, 16, 16]
    assert not torch.equal(rnd.layer1[0].conv1.weight, l1.layer1[0].conv1.weight)


def test_summary_mean_and_std_over_seeds():
    rows = [{"seed": s, "stage": "ft", "command": "finetune", "model": "m", "top1": t, "top5": None}
            for s, t in ((0, 90.0), (1, 92.0), (2, 94.0))]
    (agg,) = aggregate(rows, ["ft"])
    assert (agg["top1"], agg["top1_std"], agg["seeds"], agg["top5"]) == (92.0, 2.0, 3, None)


# -- the shipped recipes --------------------------------------------------------------------------------------------
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def test_recipes_folder_has_full_and_lite_recipes():
    assert len([p for p in RECIPES if "lite" not in p.parts]) >= 10
    assert len([p for p in RECIPES if "lite" in p.parts]) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_shipped_recipe_validates(path, tmp_path):
    recipe = load_recipe(path)
    plan = plan_commands(recipe, tmp_path, recipe.seeds)
    assert len(plan) == len(recipe.stages) * len(recipe.seeds)
    if "lite" in path.parts:  # the seeds' lite twins run on real Fashion-MNIST; agp-lite (beyond the seeds) on digits
        dataset = "digits" if path.stem == "agp-lite" else "fashion-mnist"
        assert all(dataset in argv for _, _, argv in plan)


# -- THE resume test: SIGKILL mid-training, re-run, identical result -----------------------------------------------
KILL_RECIPE = {
    "name": "kill", "dataset": "digits", "limit": 300, "seeds": [0], "defaults": {"batch_size": 50},
    "stages": [
        {"name": "base", "command": "train", "args": {"model": "resnet20", "epochs": 8, "lr": 0.05}},
        {"name": "p", "command": "prune", "from": "base", "args": {"method": "global", "ratio": 0.6}},
        {"name": "ft", "command": "finetune", "from": "p", "args": {"epochs": 2, "lr": 0.01}}]}


def _start(recipe: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    code = "import torch, sys; torch.set_num_threads(1); from prunekit.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "run", str(recipe), "--out", str(out)],
                            env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs_logged(log: Path) -> int:
    try:
        with log.open() as f:
            return len(list(csv.DictReader(f)))
    except (OSError, csv.Error):
        return 0


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_killed_run_resumes_to_the_same_weights_and_numbers(tmp_path):
    recipe = tmp_path / "kill.yaml"
    recipe.write_text(yaml.safe_dump(KILL_RECIPE, sort_keys=False))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref_proc = _start(recipe, ref)
    assert ref_proc.wait(timeout=120) == 0, ref_proc.stderr.read()

    proc = _start(recipe, cut)
    log, state = cut / "seed0" / "base" / "log.csv", cut / "seed0" / "base" / "train_state.pt"
    deadline = time.monotonic() + 60
    while not (state.is_file() and _epochs_logged(log) >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before an epoch was logged"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = _epochs_logged(log)
    assert 1 <= done < 8, done
    assert not (cut / "seed0" / "ft").exists()
    # almost always the kill lands inside an epoch; a kill between the model and train-state writes of one epoch
    # makes the stage start over, which must give the same result too
    consistent = can_resume(cut / "seed0" / "base")

    again = _start(recipe, cut)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    expected = "resuming from its last checkpoint" if consistent else "starting over"
    assert f"base: {expected}" in err
    assert _epochs_logged(log) == 8
    for stage in ("base", "p", "ft"):
        a, b = _state(ref / "seed0" / stage / "model.safetensors"), _state(cut / "seed0" / stage / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k} differs"
    for name in ("summary.csv", "results.csv"):
        assert (ref / name).read_text() == (cut / name).read_text()
