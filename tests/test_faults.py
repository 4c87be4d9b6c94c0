"""Fault tests: ``kill -9`` at random (seeded) moments of train, prune, finetune and a recipe, then resume / re-run:
the final weights are bit-exact with an uninterrupted run, no temp file is left, the folder reads "complete";
and a second run on a busy ``--out`` is refused naming the holder's pid.

Each run is a separate process running the CLI's ``main`` (what ``python -m prunekit`` runs), killed with SIGKILL.
To stay within the time budget the processes are forked from this already-initialised interpreter instead of
starting Python + torch each time (one test starts the real ``python -m prunekit`` to check the entry point).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from prunekit.utils.runlock import RUN_FILE, folder_status

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--dataset", "digits", "--limit", "96", "--batch-size", "32"]
TRAIN = ["train", "--model", "lenet5", "--epochs", "3", "--lr", "0.05", "--seed", "1", "--no-progress", "-q"] + DATA
TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$|^\.tmp[A-Za-z0-9]{6}$")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                                reason="fork-based kill tests need Linux")


def _start(argv: list[str], log: Path) -> int:
    """Fork a process that runs ``prunekit.cli.main(argv)`` with stdout/stderr in ``log``; return its pid."""
    from prunekit.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() in a multi-threaded process
        pid = os.fork()
    if pid:
        return pid
    rc = 1
    try:  # the child: never returns into pytest
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - report anything, then leave without running pytest's exit code
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(rc)


def _done(pid: int) -> int | None:
    """The exit code of ``pid`` if it has finished (reaped), else None."""
    finished, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if finished else None


def _until_started(pid: int, out: Path, timeout: float = 120.0) -> int | None:
    """Wait until run ``pid`` holds ``out`` (its run record names it); its exit code if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = _done(pid)
        if rc is not None:
            return rc
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads((out / RUN_FILE).read_text()).get("pid") == pid:
                return None
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"run {pid} did not start in {timeout}s")


def _run(argv: list[str], out: Path, log: Path, timeout: float = 300.0) -> float:
    """Run to completion (exit code 0); return how long it held ``out`` (the window the kills are placed in)."""
    pid = _start(argv, log)
    rc = _until_started(pid, out)
    t0 = time.monotonic()
    while rc is None:
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"run {pid} did not finish in {timeout}s")
        time.sleep(0.005)
        rc = _done(pid)
    assert rc == 0, log.read_text()
    return time.monotonic() - t0


def _kill_at(argv: list[str], out: Path, log: Path, delay: float) -> bool:
    """Start ``argv`` and SIGKILL it ``delay`` s after it took ``out``; False if it finished before."""
    pid = _start(argv, log)
    if _until_started(pid, out) is not None:
        return False
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if _done(pid) is not None:
            return False
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _assert_same_log(a: Path, b: Path) -> None:
    """log.csv of both runs: the same rows, wall-clock time aside (a resumed run rebuilds it from its history)."""
    import csv

    def rows(folder: Path) -> list[dict[str, str]]:
        with open(folder / "log.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(f)]

    assert rows(a) == rows(b)


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP.match(p.name)]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Uninterrupted train -> prune -> finetune runs, and how long each took (to place the kills)."""
    import importlib

    from prunekit.data import get_dataset

    # warm what every child would import again (torch.optim pulls in torch._dynamo on first use: seconds)
    get_dataset("digits", train=True)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for name in ("safetensors.torch", "prunekit.commands.train", "prunekit.commands.finetune",
                 "prunekit.commands.run", "prunekit.experiments.runner", "prunekit.retrain"):
        importlib.import_module(name)
    base = tmp_path_factory.mktemp("refs")
    took = {"train": _run(TRAIN + ["--out", str(base / "train")], base / "train", base / "train.log")}
    took["prune"] = _run(_prune(base / "train", base / "prune"), base / "prune", base / "prune.log")
    took["finetune"] = _run(_finetune(base / "prune", base / "finetune"), base / "finetune", base / "finetune.log")
    return base, took


def _prune(src: Path, out: Path) -> list[str]:
    return ["prune", "--checkpoint", str(src), "--method", "global", "--ratio", "0.6", "--eval", "-q", "--out",
            str(out)] + DATA


def _finetune(src: Path, out: Path) -> list[str]:
    return ["finetune", "--checkpoint", str(src), "--epochs", "3", "--lr", "0.01", "--seed", "2", "--no-progress",
            "-q", "--out", str(out)] + DATA


def _kill_and_finish(argv: list[str], retry: list[str], out: Path, took: float, seed: int, kills: int = 2) -> int:
    """``kills`` SIGKILLs at seeded random moments of ``argv`` (then ``retry``) while it holds ``out``, then
    ``retry`` to completion; checks the folder's state after each kill and at the end. Returns the kills made."""
    rng = random.Random(seed)
    killed = 0
    for i in range(kills):
        killed += _kill_at(argv if i == 0 else retry, out, out.parent / f"{out.name}.k{i}.log",
                           rng.uniform(0.0, 1.0) * took)
        state = folder_status(out)
        assert state in ("interrupted", "complete")  # never "running": the holder is dead
        if os.environ.get("PRUNEKIT_FAULTS_VERBOSE"):
            print(f"{out.name} kill {i}: {state}, files {sorted(p.name for p in out.glob('*'))}", file=sys.__stderr__)
    _run(retry, out, out.parent / f"{out.name}.final.log")
    assert folder_status(out) == "complete"
    assert _temps(out) == []
    return killed


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_train_resumes_bit_exactly(refs, tmp_path, seed):
    base, took = refs
    out = tmp_path / "train"
    argv = TRAIN + ["--out", str(out)]
    _kill_and_finish(argv, argv + ["--resume"], out, took["train"], seed)
    _assert_same_weights(out, base / "train")
    _assert_same_log(out, base / "train")


def test_killed_prune_reruns_to_the_same_model(refs, tmp_path):
    base, took = refs
    out = tmp_path / "prune"
    argv = _prune(base / "train", out)
    _kill_and_finish(argv, argv, out, took["prune"], seed=2, kills=3)
    _assert_same_weights(out, base / "prune")


def test_killed_finetune_resumes_bit_exactly(refs, tmp_path):
    base, took = refs
    out = tmp_path / "finetune"
    argv = _finetune(base / "prune", out)
    _kill_and_finish(argv, argv + ["--resume"], out, took["finetune"], seed=3)
    _assert_same_weights(out, base / "finetune")
    _assert_same_log(out, base / "finetune")


RECIPE = """\
name: faults
dataset: digits
limit: 96
seeds: [0]
defaults: {batch_size: 32}
stages:
  - {name: base, command: train, args: {model: lenet5, epochs: 2, lr: 0.05}}
  - {name: pruned, command: prune, from: base, args: {method: global, ratio: 0.5}}
  - {name: tuned, command: finetune, from: pruned, args: {epochs: 2, lr: 0.01}}
"""


@pytest.mark.slow
def test_killed_recipe_reruns_to_the_same_stages(tmp_path):
    recipe = tmp_path / "faults.yaml"
    recipe.write_text(RECIPE)
    ref = tmp_path / "ref"
    took = _run(["run", str(recipe), "--out", str(ref), "-q"], ref, tmp_path / "ref.log")
    out = tmp_path / "killed"
    argv = ["run", str(recipe), "--out", str(out), "-q"]
    _kill_and_finish(argv, argv, out, took, seed=4, kills=3)
    for stage in ("base", "pruned", "tuned"):
        _assert_same_weights(out / "seed0" / stage, ref / "seed0" / stage)


def test_a_second_run_on_a_busy_out_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "busy"
    long_run = ["train", "--model", "lenet5", "--epochs", "500", "--lr", "0.01", "--no-progress", "-q",
                "--out", str(out)] + DATA
    holder = _start(long_run, tmp_path / "holder.log")
    try:
        deadline = time.monotonic() + 60
        while folder_status(out) != "running":
            assert time.monotonic() < deadline and not os.waitpid(holder, os.WNOHANG)[0], \
                (tmp_path / "holder.log").read_text()
            time.sleep(0.02)
        os.kill(holder, signal.SIGSTOP)  # a stopped process keeps its lock and burns no CPU meanwhile
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # the real entry point, once
        second = subprocess.run([sys.executable, "-m", "prunekit"] + TRAIN + ["--out", str(out)], env=env,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("prunekit: error: "), second.stderr
        assert f"pid {holder}" in lines[0] and "in use" in lines[0]
        assert folder_status(out) == "running"  # the holder's run is untouched
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    assert folder_status(out) == "interrupted"
