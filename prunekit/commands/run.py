"""``prunekit run RECIPE.yaml``: a whole experiment, resumable, ending in a summary table and plots."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..options import CommonOptions, Options, option, redefault

log = logging.getLogger(__name__)


@dataclass
class RunOptions(Options):
    """Options of ``prunekit run``."""

    COMMAND: ClassVar[str] = "run"
    LOCKS_OUT: ClassVar[bool] = False  # execute locks the recipe's folder itself (its default depends on the recipe)
    recipe: str | None = option(None, help="recipe YAML file (see recipes/)", positional=True)
    out: str | None = option(None, help="output folder (default runs/<recipe name>)")
    seeds: list[int] = option(None, int, "seeds to run (default: the recipe's)", many=True, low=0,
                              high=2 ** 63 - 1)
    force: bool = option(False, bool, "re-run finished stages")
    dry_run: bool = option(False, bool, "print the stage commands and stop")
    debug: bool = redefault(CommonOptions, "debug", False)


OPTIONS = RunOptions


def execute(opts: RunOptions) -> int:
    """Load and run ``opts.recipe`` into ``opts.out`` (default ``runs/<recipe name>``)."""
    from ..experiments.recipe import load_recipe, recipe_out_dir
    from ..experiments.runner import run_recipe
    from ..utils.runlock import locked_output

    recipe = load_recipe(opts.recipe)
    out = Path(opts.out) if opts.out else recipe_out_dir(recipe, Path("runs"))
    if opts.dry_run:
        run_recipe(recipe, out, seeds=opts.seeds or None, force=opts.force, dry_run=True)
        return 0
    with locked_output(out, "run"):
        run_recipe(recipe, out, seeds=opts.seeds or None, force=opts.force)
    print(f"wrote {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'results.csv'}")
    return 0
