"""Run a recipe: every stage once, skip what is finished and unchanged, resume what was interrupted.

Each stage runs its command's ``execute`` with options built from the recipe (:func:`stage_options`) inside the
stage folder's lock (:func:`prunekit.commands.run_command`). The folder holds a ``.stage.json`` marker written
*before* the stage starts (``status: running``) and rewritten when it ends (``status: done``), both with the stage's
exact command line and ``inputs``: a digest of everything the stage consumed (its options and the model files of
every stage it reads or runs after). On a re-run:

- ``done`` with the same command line and the same inputs, and a complete folder: skipped;
- ``done`` with the same command line but other inputs (an upstream stage was re-run and wrote other weights), or a
  folder its run record says is half-finished: run again, and with it every stage that depends on it (their
  inputs change in turn);
- ``done`` or ``running`` with another command line: an error naming the stage (``--force`` re-runs it);
- ``running`` with the same command line (the run was killed): a training stage whose ``train_state.pt`` matches
  its ``model.safetensors`` continues with ``resume`` from its last finished epoch (bit-exact on CPU); any other
  stage, or a training stage killed between writing those two files, starts over.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import PrunekitError
from ..utils.io import write_json
from .recipe import RESUMABLE, Recipe, resolve_command, stage_options

MARKER = ".stage.json"
log = logging.getLogger(__name__)


def seed_dir(out: Path, seed: int) -> Path:
    """Folder of one seed's run."""
    return out / f"seed{seed}"


def plan_commands(recipe: Recipe, out: Path, seeds: Sequence[int]) -> list[tuple[int, str, list[str]]]:
    """``(seed, stage name, argv)`` for every stage of every seed, in run order."""
    plan: list[tuple[int, str, list[str]]] = []
    for seed in seeds:
        dirs = stage_dirs(recipe, out, seed)
        for s in recipe.stages:
            plan.append((seed, s.name, s.argv(dirs, dirs[s.name], seed)))
    return plan


def stage_dirs(recipe: Recipe, out: Path, seed: int) -> dict[str, Path]:
    """Stage name -> its folder for one seed."""
    sd = seed_dir(out, seed)
    return {s.name: sd / s.name for s in recipe.stages}


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
        _run_stage(recipe, out, seed, name, argv, force)
    from .results import write_results

    return write_results(recipe, out, seeds)


def _shown(argv: Sequence[str]) -> str:
    return "prunekit " + shlex.join(argv)


def folder_digest(folder: Path) -> str:
    """Digest of the model files a downstream stage can read from ``folder`` (every ``*.safetensors``, ``*.pth``
    and ``*.pt`` but the training state): ``"missing"`` for a folder that is not there."""
    if not folder.is_dir():
        return "missing"
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", ".pth", ".pt")
                   and p.name != "train_state.pt")
    for p in files:
        h.update(p.name.encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def stage_inputs(cmdline: str, depends: Sequence[str], dirs: Mapping[str, Path]) -> str:
    """Digest of what a stage consumes: its command line and the model files of every stage it depends on."""
    h = hashlib.sha256(cmdline.encode())
    for dep in sorted(depends):
        h.update(f"\0{dep}\0{folder_digest(dirs[dep])}".encode())
    return h.hexdigest()


def _run_stage(recipe: Recipe, out: Path, seed: int, name: str, argv: list[str], force: bool) -> None:
    from ..commands import run_command
    from ..utils.runlock import folder_status

    stage = recipe.stage(name)
    dirs = stage_dirs(recipe, out, seed)
    folder = dirs[name]
    marker = folder / MARKER
    cmdline = shlex.join(argv)
    inputs = stage_inputs(cmdline, stage.depends, dirs)
    previous = _read_marker(marker)
    log.debug("[seed %s] %s: inputs %s (recorded: %s)", seed, name, inputs[:12],
              (previous or {}).get("inputs", "none")[:12])
    resume = False
    if previous is not None and not force:
        if previous.get("argv") != cmdline:
            raise PrunekitError(f"stage {name!r} (seed {seed}) already ran with other options:\n  was: "
                                f"{previous.get('argv')}\n  now: {cmdline}\nre-run with --force or delete {folder}")
        state = folder_status(folder)
        if previous.get("status") == "done" and state in ("complete", "none"):
            if previous.get("inputs") in (None, inputs):  # None: a marker of an older prunekit
                log.info("[seed %s] %s: done, skipped", seed, name)
                return
            log.info("[seed %s] %s: an input changed since it ran (%s re-ran), running again", seed, name,
                     ", ".join(stage.depends) or "its options")
        elif stage.command in RESUMABLE and previous.get("inputs") in (None, inputs):
            resume = can_resume(folder)
            log.info("[seed %s] %s: %s", seed, name, "resuming from its last checkpoint" if resume else
                     "interrupted before a consistent checkpoint, starting over")
        else:
            log.info("[seed %s] %s: interrupted, starting over", seed, name)
    opts = stage_options(stage, dirs, folder, seed, recipe.name)
    if resume:
        opts.resume = True
    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"argv": cmdline, "status": "running", "inputs": inputs})
    log.info("[seed %s] %s: %s", seed, name, _shown(argv + (["--resume"] if resume else [])))
    command = resolve_command(stage.command)[0]
    try:
        run_command(command, opts)
    except PrunekitError as exc:
        raise PrunekitError(f"stage {name!r} (seed {seed}) failed: {exc}; fix it and run again (finished stages "
                            "are kept)") from exc
    write_json(marker, {"argv": cmdline, "status": "done", "inputs": inputs})


def _read_marker(marker: Path) -> dict[str, Any] | None:
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
