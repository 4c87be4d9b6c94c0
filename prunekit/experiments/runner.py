"""Run a recipe: every stage once, skip what is finished, resume what was interrupted.

Each stage folder holds a ``.stage.json`` marker written *before* the stage starts (``status: running``) and
rewritten when it ends (``status: done``), both with the stage's exact command line. On a re-run:

- ``done`` with the same command line: skipped;
- ``done`` or ``running`` with another command line: an error naming the stage (``--force`` re-runs it);
- ``running`` with the same command line (the run was killed): a training stage whose ``train_state.pt`` matches
  its ``model.safetensors`` continues with ``--resume`` from its last finished epoch (bit-exact on CPU); any other
  stage, or a training stage killed between writing those two files, starts over.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import PrunekitError
from ..utils.io import write_json
from .recipe import RESUMABLE, Recipe, command_flags

MARKER = ".stage.json"


def seed_dir(out: Path, seed: int) -> Path:
    """Folder of one seed's run."""
    return out / f"seed{seed}"


def plan_commands(recipe: Recipe, out: Path, seeds: Sequence[int]) -> list[tuple[int, str, list[str]]]:
    """``(seed, stage name, argv)`` for every stage of every seed, in run order."""
    plan: list[tuple[int, str, list[str]]] = []
    for seed in seeds:
        sd = seed_dir(out, seed)
        dirs = {s.name: sd / s.name for s in recipe.stages}
        for s in recipe.stages:
            plan.append((seed, s.name, s.argv(dirs, dirs[s.name], seed, command_flags(s.command))))
    return plan


def can_resume(folder: Path) -> bool:
    """True when ``folder`` holds a readable training state (it carries the weights, so resume is exact)."""
    state_file = folder / "train_state.pt"
    if not state_file.is_file():
        return False
    from ..checkpoint import load_train_state
    from ..errors import CheckpointError

    try:
        return "model" in load_train_state(state_file)
    except CheckpointError:
        return False


def run_recipe(recipe: Recipe, out: str | Path, *, seeds: Sequence[int] | None = None, force: bool = False,
               dry_run: bool = False) -> dict[str, Any]:
    """Run every stage of ``recipe`` for each seed into ``out/seed<k>/<stage>``; return the collected results.

    See the module docstring for how finished, changed and interrupted stages are handled. ``dry_run`` prints
    the command lines and returns an empty dict.
    """
    out = Path(out)
    seeds = list(seeds) if seeds is not None else recipe.seeds
    plan = plan_commands(recipe, out, seeds)
    if dry_run:
        for seed, name, argv in plan:
            print(f"[seed {seed}] {name}: {_shown(argv)}")
        return {}
    out.mkdir(parents=True, exist_ok=True)
    for seed, name, argv in plan:
        _run_stage(recipe, seed, name, argv, force)
    from .results import write_results

    return write_results(recipe, out, seeds)


def _shown(argv: Sequence[str]) -> str:
    from .stages import INTERNAL

    prefix = "(recipe) " if argv[0] in INTERNAL else "prunekit "
    return prefix + shlex.join(argv)


def _run_stage(recipe: Recipe, seed: int, name: str, argv: list[str], force: bool) -> None:
    from ..cli import main as cli_main
    from .stages import INTERNAL

    stage = recipe.stage(name)
    folder = Path(argv[argv.index("--out") + 1])
    marker = folder / MARKER
    cmdline = shlex.join(argv)
    previous = _read_marker(marker)
    if previous is not None and not force:
        if previous.get("argv") != cmdline:
            raise PrunekitError(f"stage {name!r} (seed {seed}) already ran with other options:\n  was: "
                                f"{previous.get('argv')}\n  now: {cmdline}\nre-run with --force or delete {folder}")
        if previous.get("status") == "done":
            _say(f"[seed {seed}] {name}: done, skipped")
            return
    run_argv = list(argv)
    if previous is not None and not force and stage.command in RESUMABLE:
        if can_resume(folder):
            run_argv.append("--resume")
            _say(f"[seed {seed}] {name}: resuming from its last checkpoint")
        else:
            _say(f"[seed {seed}] {name}: interrupted before a consistent checkpoint, starting over")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"argv": cmdline, "status": "running"})
    _say(f"[seed {seed}] {name}: {_shown(run_argv)}")
    if argv[0] in INTERNAL:
        code = _run_internal(INTERNAL[argv[0]][1], run_argv[1:])
    else:
        code = cli_main(run_argv)
    if code != 0:
        raise PrunekitError(f"stage {name!r} (seed {seed}) failed with exit code {code}; fix it and run again "
                            f"(finished stages are kept)")
    write_json(marker, {"argv": cmdline, "status": "done"})


def _run_internal(fn: Any, argv: list[str]) -> int:
    try:
        return int(fn(argv) or 0)
    except PrunekitError as exc:
        print(f"prunekit: error: {exc}", file=sys.stderr)
        return 2


def _read_marker(marker: Path) -> dict[str, Any] | None:
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
