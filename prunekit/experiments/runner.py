"""Run a recipe: every stage once, skip what is finished, resume what was interrupted."""
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


def run_recipe(recipe: Recipe, out: str | Path, *, seeds: Sequence[int] | None = None, force: bool = False,
               dry_run: bool = False) -> dict[str, Any]:
    """Run every stage of ``recipe`` for each seed into ``out/seed<k>/<stage>``; return the collected results.

    A stage whose folder has a completion marker with the same command line is skipped; one that was interrupted
    is re-run with ``--resume`` when its command trains (continuing from its last epoch checkpoint). A finished
    stage whose options changed since is an error (re-run with ``force``).
    """
    from ..cli import main as cli_main

    out = Path(out)
    seeds = list(seeds) if seeds is not None else recipe.seeds
    plan: list[tuple[int, str, list[str]]] = []
    for seed in seeds:
        sd = seed_dir(out, seed)
        dirs = {s.name: sd / s.name for s in recipe.stages}
        for s in recipe.stages:
            plan.append((seed, s.name, s.argv(dirs, dirs[s.name], seed, command_flags(s.command))))
    if dry_run:
        for seed, name, argv in plan:
            print(f"[seed {seed}] {name}: prunekit {shlex.join(argv)}")
        return {}
    out.mkdir(parents=True, exist_ok=True)
    for seed, name, argv in plan:
        stage = recipe.stage(name)
        folder = Path(argv[argv.index("--out") + 1])
        marker = folder / MARKER
        cmdline = shlex.join(argv)
        if marker.is_file() and not force:
            done = json.loads(marker.read_text())
            if done.get("argv") == cmdline:
                _say(f"[seed {seed}] {name}: done, skipped")
                continue
            raise PrunekitError(f"stage {name!r} (seed {seed}) already ran with other options:\n  was: "
                                f"{done.get('argv')}\n  now: {cmdline}\nre-run with --force or delete {folder}")
        run_argv = list(argv)
        if stage.command in RESUMABLE and (folder / "train_state.pt").is_file() and not force:
            run_argv.append("--resume")
            _say(f"[seed {seed}] {name}: resuming from its last checkpoint")
        _say(f"[seed {seed}] {name}: prunekit {shlex.join(run_argv)}")
        code = cli_main(run_argv)
        if code != 0:
            raise PrunekitError(f"stage {name!r} (seed {seed}) failed with exit code {code}; fix it and run again "
                                f"(finished stages are kept)")
        write_json(marker, {"argv": cmdline, "status": "done"})
    from .results import write_results

    return write_results(recipe, out, seeds)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
