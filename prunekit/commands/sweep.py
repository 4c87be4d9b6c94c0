"""``prunekit sweep``: top-1 without finetune across pruning ratios, for one or several weight-level methods.

Writes ``sweep.csv``, ``sweep.md`` (the MCTS seed table: ratio | top-1 | conv threshold | fc threshold, baseline
first, per method), ``sweep.png`` (top-1 against realised sparsity, all methods on one plot) and ``summary.json``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunekitError, UnknownNameError
from ..options import CommonOptions, ScopeOptions, normalize_choice, option, redefault
from ..utils.io import write_json
from .common import load_datasets, model_from_args, out_dir

log = logging.getLogger(__name__)
DEFAULT_RATIOS = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9]


@dataclass
class SweepOptions(ScopeOptions, CommonOptions):
    """Options of ``prunekit sweep``."""

    COMMAND: ClassVar[str] = "sweep"
    batch_size: int = redefault(CommonOptions, "batch_size", 256)
    method: list[str] = option(["global"], help="one or more weight-level methods (gp, layerwise, global, random, "
                               "gpmt, ...)", many=True)
    ratios: list[float] = option(DEFAULT_RATIOS, float, "pruning ratios swept", many=True, low=0.0, high=1.0)
    no_plot: bool = option(False, bool, "do not write sweep.png")


OPTIONS = SweepOptions


def _methods(names: list[str]) -> list[str]:
    from ..pruning.unstructured import METHODS

    names = [normalize_choice(m, METHODS) or m for m in names]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise UnknownNameError(f"unknown sweep method(s) {', '.join(bad) or '(none)'}; valid: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def execute(opts: SweepOptions) -> int:
    """Sweep ``opts.method`` over ``opts.ratios`` on the test split; write the tables and plot into ``opts.out``."""
    from ..engine.distributed import resolve_device
    from ..pruning.masks import apply_masks
    from ..pruning.scope import make_scope
    from ..pruning.sweep import sensitivity_sweep, sweep_markdown, write_sweep
    from ..pruning.unstructured import DEFAULT_KINDS

    methods = _methods(opts.method)
    ratios = list(opts.ratios)
    if not ratios:
        raise PrunekitError("--ratios needs at least one value")
    if "gpmt" in methods and opts.min_threshold is None:
        raise PrunekitError("sweeping gpmt needs --min-threshold")
    scope = None
    if opts.scope or opts.include or opts.exclude or opts.skip_first or opts.skip_last:
        scope = make_scope(opts.scope, opts.include, opts.exclude, opts.skip_first, opts.skip_last,
                           default_kinds=DEFAULT_KINDS[methods[0]])
    _, test_ds = load_datasets(opts, train=False)
    ckpt = model_from_args(opts, test_ds)
    model = ckpt.model
    if ckpt.masks:
        apply_masks(model, ckpt.masks)
    name = model.prunekit_name
    if not opts.checkpoint:
        log.warning("no --checkpoint: sweeping a freshly initialised %s (seed %s); accuracies are those of an "
                    "untrained model", name, opts.seed)
    device = resolve_device(opts.device)
    model.to(device)
    rows = sensitivity_sweep(model, methods, ratios, test_ds, scope=scope, min_threshold=opts.min_threshold,
                             seed=opts.seed, batch_size=opts.batch_size, device=device)
    out = out_dir(opts)
    title = f"{name} on {opts.dataset}: top-1 without finetune"
    paths = write_sweep(rows, out, title=title, plot=not opts.no_plot)
    summary = {"command": "sweep", "model": name, "dataset": opts.dataset, "checkpoint": opts.checkpoint,
               "fresh_init": not opts.checkpoint, "methods": methods, "ratios": ratios,
               "scope": scope.to_dict() if scope else {m: list(DEFAULT_KINDS[m]) for m in methods},
               "min_threshold": opts.min_threshold, "rows": [r.csv_row() for r in rows],
               "files": [p.name for p in paths.values()] + ["summary.json"]}
    write_json(out / "summary.json", summary)
    print(sweep_markdown(rows, title))
    print(f"wrote {', '.join(p.name for p in paths.values())} and summary.json in {out}")
    return 0
