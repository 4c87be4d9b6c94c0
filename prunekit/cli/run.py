"""``prunekit run RECIPE.yaml``: a whole experiment, resumable, ending in a summary table and plots."""
from __future__ import annotations

import argparse

from .common import parse_floats


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file (see recipes/)")
    parser.add_argument("--out", default=None, help="output folder (default runs/<recipe name>)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the recipe's)")
    parser.add_argument("--force", action="store_true", help="re-run finished stages")
    parser.add_argument("--dry-run", action="store_true", help="print the stage commands and stop")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..experiments.recipe import load_recipe
    from ..experiments.runner import run_recipe

    recipe = load_recipe(args.recipe)
    seeds = [int(s) for s in parse_floats(args.seeds, "--seeds")] if args.seeds else None
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    run_recipe(recipe, out, seeds=seeds, force=args.force, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"wrote {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'results.csv'}")
    return 0
