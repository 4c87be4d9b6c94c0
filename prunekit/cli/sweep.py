"""``prunekit sweep``: top-1 without finetune across pruning ratios, for one or several weight-level methods.

Writes ``sweep.csv``, ``sweep.md`` (the MCTS seed table: ratio | top-1 | conv threshold | fc threshold, baseline
first, per method), ``sweep.png`` (top-1 against realised sparsity, all methods on one plot) and ``summary.json``.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import PrunekitError, UnknownNameError, check_range
from ..pruning.unstructured import DEFAULT_KINDS, METHODS
from .common import add_common_args, parse_floats

DEFAULT_RATIOS = "0.05,0.1,0.15,0.2,0.3,0.4,0.5,0.6,0.7,0.75,0.8,0.9"


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, batch_size=256)
    parser.add_argument("--method", default="global",
                        help=f"one or more comma-separated methods: {', '.join(METHODS)} (default global)")
    parser.add_argument("--ratios", default=DEFAULT_RATIOS, help=f"pruning ratios (default {DEFAULT_RATIOS})")
    parser.add_argument("--min-threshold", type=float, default=None, help="gpmt: minimum percent kept per layer")
    parser.add_argument("--scope", default=None, help="conv, linear or conv,linear (default: per method)")
    parser.add_argument("--include", action="append", default=[], metavar="REGEX")
    parser.add_argument("--exclude", action="append", default=[], metavar="REGEX")
    parser.add_argument("--skip-first", action="store_true")
    parser.add_argument("--skip-last", action="store_true")
    parser.add_argument("--no-plot", action="store_true", help="do not write sweep.png")


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UnknownNameError(f"unknown sweep method(s) {', '.join(bad) or '(none)'}; valid: {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def run(args: argparse.Namespace) -> int:
    from ..engine.distributed import resolve_device
    from ..pruning.masks import apply_masks
    from ..pruning.scope import make_scope
    from ..pruning.sweep import sensitivity_sweep, sweep_markdown, write_sweep
    from ..utils.io import write_json
    from .common import load_datasets, model_from_args, out_dir

    methods = _methods(args.method)
    ratios = parse_floats(args.ratios, "--ratios")
    if not ratios:
        raise PrunekitError("--ratios needs at least one value")
    for r in ratios:
        check_range("--ratios value", r, 0.0, 1.0)
    if "gpmt" in methods and args.min_threshold is None:
        raise PrunekitError("sweeping gpmt needs --min-threshold")
    scope = None
    if args.scope or args.include or args.exclude or args.skip_first or args.skip_last:
        scope = make_scope(args.scope, args.include, args.exclude, args.skip_first, args.skip_last,
                           default_kinds=DEFAULT_KINDS[methods[0]])
    _, test_ds = load_datasets(args, train=False)
    ckpt = model_from_args(args, test_ds)
    model = ckpt.model
    if ckpt.masks:
        apply_masks(model, ckpt.masks)
    name = model.prunekit_name
    if not args.checkpoint:
        print(f"note: no --checkpoint: sweeping a freshly initialised {name} (seed {args.seed}); accuracies are "
              "those of an untrained model", file=sys.stderr)
    device = resolve_device(args.device)
    model.to(device)
    rows = sensitivity_sweep(model, methods, ratios, test_ds, scope=scope, min_threshold=args.min_threshold,
                             seed=args.seed, batch_size=args.batch_size, device=device)
    out = out_dir(args)
    title = f"{name} on {args.dataset}: top-1 without finetune"
    paths = write_sweep(rows, out, title=title, plot=not args.no_plot)
    summary = {"command": "sweep", "model": name, "dataset": args.dataset, "checkpoint": args.checkpoint,
               "fresh_init": not args.checkpoint, "methods": methods, "ratios": ratios,
               "scope": scope.to_dict() if scope else {m: list(DEFAULT_KINDS[m]) for m in methods},
               "min_threshold": args.min_threshold, "rows": [r.csv_row() for r in rows],
               "files": [p.name for p in paths.values()] + ["summary.json"]}
    write_json(out / "summary.json", summary)
    print(sweep_markdown(rows, title))
    print(f"wrote {', '.join(p.name for p in paths.values())} and summary.json in {out}")
    return 0
