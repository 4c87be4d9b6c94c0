"""``prunekit prune``: weight-level pruning here; ``l1-filter`` / ``slimming`` / ``slimming-mask`` are delegated to
:mod:`prunekit.cli.prune_structured`.

Weight-level outputs in ``--out``: ``model.safetensors`` (weights + masks, dense or sparse storage),
``prune_report.csv`` / ``prune_report.md`` (per-layer table), for gpmt also ``prune_log.csv``,
``layer_sparsities.csv``, ``prune_refined_log.csv``; ``summary.json``. The markdown report is printed.
"""
from __future__ import annotations

import argparse
import sys

import torch

from ..errors import PrunekitError, UnknownNameError
from ..pruning.unstructured import DEFAULT_KINDS, METHODS
from .common import add_common_args

STRUCTURED_METHODS = ("l1-filter", "slimming", "slimming-mask")


def _structured_module():
    """The structured-pruning CLI module, or None while it does not exist."""
    try:
        from . import prune_structured
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.prune_structured":
            raise
        return None
    return prune_structured


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, batch_size=256, dataset_default=None)
    parser.add_argument("--method", required=True,
                        help=f"weight-level: {', '.join(METHODS)}; structured: {', '.join(STRUCTURED_METHODS)}")
    g = parser.add_argument_group("weight-level pruning (--method " + ", ".join(METHODS) + ")")
    g.add_argument("--ratio", type=float, default=None,
                   help="fraction of the in-scope weights to prune: exactly round(ratio*N) (per layer for "
                        "layerwise); with --method l1-filter the fraction of every channel group's channels")
    g.add_argument("--min-threshold", type=float, default=None,
                   help="gpmt: every layer keeps at least this percent of all prunable weights (e.g. 0.05)")
    g.add_argument("--scope", default=None,
                   help="conv, linear or conv,linear (default: conv for global, conv,linear for the others)")
    g.add_argument("--include", action="append", default=[], metavar="REGEX",
                   help="only prune parameters whose name matches (repeatable)")
    g.add_argument("--exclude", action="append", default=[], metavar="REGEX",
                   help="never prune parameters whose name matches (repeatable)")
    g.add_argument("--skip-first", action="store_true", help="keep the network's first conv/linear layer dense")
    g.add_argument("--skip-last", action="store_true", help="keep the network's last conv/linear layer dense")
    g.add_argument("--allow-empty-layers", action="store_true",
                   help="warn instead of failing when a layer would lose every weight")
    g.add_argument("--storage", choices=("dense", "sparse"), default="dense",
                   help="checkpoint storage: dense, or sparse (bitmask + non-zero values)")
    g.add_argument("--eval", action="store_true", help="evaluate before and after on the dataset's test split")
    from .common import add_seed_logs_arg

    add_seed_logs_arg(g)
    mod = _structured_module()
    if mod is not None:
        mod.add_structured_args(parser)


def _check_args(args: argparse.Namespace) -> None:
    if args.method not in METHODS:
        valid = ", ".join(METHODS + STRUCTURED_METHODS)
        raise UnknownNameError(f"unknown pruning method {args.method!r}; valid: {valid}")
    if args.ratio is None:
        raise PrunekitError(f"--method {args.method} needs --ratio R (fraction of weights to prune, e.g. 0.8)")
    foreign = [f"--{k.replace('_', '-')}" for k in ("percent", "plan", "ratios", "rounds", "skip", "target_macs",
                                                    "target_params", "target_latency", "criterion")
               if getattr(args, k, None) is not None]
    foreign += [f for f, v in (("--global", getattr(args, "global_ranking", False)),
                               ("--ignore", getattr(args, "ignore", None)),
                               ("--round-to", getattr(args, "round_to", 1) != 1)) if v]
    if foreign:
        raise PrunekitError(f"{', '.join(foreign)} only apply to structured methods; weight-level methods take "
                            "--ratio")


def _data_facts(args: argparse.Namespace, need_data: bool):
    """The test split when it is needed (``--eval``), else static dataset facts (no loading)."""
    from .common import data_facts, load_datasets

    return load_datasets(args, train=False)[1] if need_data else data_facts(args.dataset)


def _check_revival(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    """A new prune of an already masked checkpoint must keep every weight that was pruned."""
    for name, m in new.items():
        if name in old:
            revived = int((~old[name].to(torch.bool) & m.cpu()).sum())
            if revived:
                raise PrunekitError(f"the checkpoint already prunes more of {name} than this prune would: {revived} "
                                    "pruned weights would come back; raise --ratio to at least the checkpoint's "
                                    "sparsity over the scope")


def run(args: argparse.Namespace) -> int:
    from .common import DEFAULT_DATASET
    from ..factory import is_factory_name

    if args.dataset is None and (args.checkpoint or args.method not in STRUCTURED_METHODS) and \
            not is_factory_name(args.model):
        # a checkpoint (and weight-level pruning) keeps the old default; a fresh structured prune of a zoo or user
        # model takes the model's natural input instead
        args.dataset = DEFAULT_DATASET
    if args.method in STRUCTURED_METHODS:
        mod = _structured_module()
        if mod is None:
            raise PrunekitError(f"--method {args.method} is not available in this build")
        if getattr(args, "seed_logs", False) and not getattr(mod, "SUPPORTS_SEED_LOGS", False):
            print("note: --seed-logs writes seed files for weight-level methods only", file=sys.stderr)
        return mod.run_structured(args)
    from ..checkpoint import save_model
    from ..pruning.masks import apply_masks
    from ..pruning.reports import markdown_report, write_prune_report
    from ..pruning.scope import make_scope
    from ..pruning.unstructured import prune_unstructured
    from ..utils.io import write_json
    from .common import model_from_args, model_metrics, out_dir, resolve_input_size, standard_fields

    _check_args(args)
    if args.seed_logs:  # the seed files hold the accuracy before and after
        args.eval = True
    scope = make_scope(args.scope, args.include, args.exclude, args.skip_first, args.skip_last,
                       default_kinds=DEFAULT_KINDS[args.method])
    data = _data_facts(args, need_data=args.eval)
    ckpt = model_from_args(args, data)
    model = ckpt.model.to("cpu").eval()
    fresh = not args.checkpoint
    name = model.prunekit_name
    if fresh:
        print(f"note: no --checkpoint: pruning a freshly initialised {name} (seed {args.seed}); use it to plan "
              "params/FLOPs/sparsity, its accuracy means nothing", file=sys.stderr)
    size = resolve_input_size(args, data, model)
    old = {k: v.to(torch.bool) for k, v in (ckpt.masks or {}).items()}
    if old:
        apply_masks(model, old)
    device = None
    acc_before = None
    if args.eval:
        from ..engine.distributed import resolve_device
        from ..engine.evaluate import evaluate

        device = resolve_device(args.device)
        acc_before = evaluate(model.to(device), data, batch_size=args.batch_size, device=device)
        model.to("cpu")
    before = model_metrics(model, size, latency=False)
    res = prune_unstructured(model, args.method, args.ratio, scope=scope, min_threshold=args.min_threshold,
                             seed=args.seed, allow_empty_layers=args.allow_empty_layers, apply=False)
    _check_revival(old, res.masks)
    gp_acc = None
    if args.seed_logs and args.method == "gpmt":  # GPMT's prune_log.csv holds the accuracy of its plain GP step
        from ..pruning.seed_logs import gp_step_accuracy

        gp_acc = gp_step_accuracy(model, args.ratio, scope, lambda m: evaluate(
            m.to(device), data, batch_size=args.batch_size, device=device), expected=res.report.gp_layers)
    apply_masks(model, res.masks)
    masks = dict(old)
    masks.update({k: v.cpu() for k, v in res.masks.items()})
    report = res.report
    if args.eval:
        report.accuracy_before = acc_before
        report.accuracy_after = evaluate(model.to(device), data, batch_size=args.batch_size, device=device)
        model.to("cpu")
    if fresh:
        report.notes.append(f"pruned a freshly initialised {name} (no --checkpoint)")
    if old:
        report.notes.append(f"the checkpoint's masks on {len(old)} tensors were kept (merged)")
    after = model_metrics(model, size, latency=False)
    out = out_dir(args)
    extra = {"prune": report.summary(), "source_checkpoint": args.checkpoint, "fresh_init": fresh,
             "dataset": args.dataset}
    save_model(model, out, masks=masks, extra=extra, storage=args.storage)
    files = ["model.safetensors"] + [p.name for p in write_prune_report(report, out).values()]
    if args.seed_logs:  # after prunekit's reports: the GPMT logs are rewritten in the seed's own form
        from ..pruning.seed_logs import write_prune_seed_logs

        seed_files = write_prune_seed_logs(out, report, masks, model=model, imagenet=args.dataset == "imagenet",
                                           gp_post_accuracy=gp_acc)
        files += [p.name for p in seed_files if p.name not in files]
    files.append("summary.json")
    acc = report.accuracy_after or {}
    summary = {**standard_fields(model, size, acc.get("top1"), acc.get("top5")),
               "command": "prune", "method": args.method, "model": name, "dataset": args.dataset,
               "checkpoint": args.checkpoint, "checkpoint_in": args.checkpoint, "fresh_init": fresh,
               "ratio": args.ratio, "sparsity": report.sparsity, "total_weights": report.total_weights,
               "total_pruned": report.total_pruned, "thresholds": report.thresholds, "scope": report.scope,
               "min_threshold": args.min_threshold, "storage": args.storage, "input_size": list(size),
               "accuracy_before": report.accuracy_before, "accuracy_after": report.accuracy_after,
               "before": before, "after": after, "report": report.to_dict(), "files": files}
    write_json(out / "summary.json", summary)
    print(markdown_report(report))
    print(f"params {before['params']:,} -> non-zero {after['nonzero_params']:,}; sparse FLOPs "
          f"{before['sparse_flops']:,} -> {after['sparse_flops']:,} ({after['flops_convention']} convention)")
    print(f"wrote {out / 'model.safetensors'} and reports in {out}")
    return 0
