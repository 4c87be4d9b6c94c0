"""``prunekit prune``: weight-level pruning here; ``l1-filter`` / ``slimming`` / ``slimming-mask`` are delegated to
:mod:`prunekit.commands.prune_structured`.

:class:`PruneOptions` declares every option (types, bounds, choices; the parser is generated from it) and
:func:`execute` runs them: the CLI (through :func:`prunekit.commands.run_command`) and recipe stages (``prune``, and
``random-filter`` = ``--method l1-filter --criterion random``) both build a ``PruneOptions`` and call it.

Weight-level outputs in ``--out``: ``model.safetensors`` (weights + masks, dense or sparse storage),
``prune_report.csv`` / ``prune_report.md`` (per-layer table), for gpmt also ``prune_log.csv``,
``layer_sparsities.csv``, ``prune_refined_log.csv``; ``summary.json``. The markdown report is printed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .train import seed_logs_option
from ..errors import PrunekitError, UnknownNameError, check_number
from ..options import CalibrationOptions, CommonOptions, LatencyOptions, ScopeOptions, option, redefault
from ..pruning.unstructured import DEFAULT_KINDS, METHODS
from ..models.hf import is_hf_folder
from . import prune_calibrated, prune_hf, prune_structured
from .prune_calibrated import CALIBRATED_METHODS
from .prune_structured import STRUCTURED_METHODS, StructuredOptions, _given

_W = "weight-level pruning (--method " + ", ".join(METHODS) + ")"

log = logging.getLogger(__name__)


@dataclass
class PruneOptions(StructuredOptions, CalibrationOptions, ScopeOptions, LatencyOptions, CommonOptions):
    """Options of ``prunekit prune`` (weight-level and structured methods); ``execute(opts)`` runs them.

    Example::

        opts = PruneOptions(method="l1-filter", criterion="random", stage_ratios=[0.3, 0.3, 0.5], rounds=2,
                            checkpoint="runs/base", out="runs/rnd").validate()
        execute(opts)
    """

    COMMAND: ClassVar[str] = "prune"
    batch_size: int = redefault(CommonOptions, "batch_size", 256)
    dataset: str | None = redefault(CommonOptions, "dataset", None, help=(
        "digits, fashion-mnist, mnist, cifar10, cifar100, imagenet, synthetic (default none: a fresh model takes "
        "its natural input and classes; a checkpoint, digits)"))
    latency_batch: int | None = redefault(LatencyOptions, "latency_batch", None,
                                          help="--target-latency: batch size of the latency measurements (default 1)")
    method: str | None = option(None, help=f"weight-level: {', '.join(METHODS)}; calibrated (--calibration): "
                                f"{', '.join(CALIBRATED_METHODS)}; structured: "
                                f"{', '.join(STRUCTURED_METHODS)}", required=True)
    ratio: float | None = option(None, float, "fraction of the in-scope weights to prune: exactly round(ratio*N) "
                                 "(per layer for layerwise); with --method l1-filter the fraction of every channel "
                                 "group's channels", low=0.0, high=1.0, group=_W)
    allow_empty_layers: bool = option(False, bool, "warn instead of failing when a layer would lose every weight",
                                      group=_W)
    storage: str = option("auto", help="checkpoint storage: auto (bitmask + non-zero values wherever that is "
                          "smaller, else dense), dense, or sparse", choices=("auto", "dense", "sparse"), group=_W)
    eval: bool = option(False, bool, "evaluate before and after on the dataset's test split", group=_W)
    seed_logs: bool = seed_logs_option()

    def validate(self, where: str | None = None) -> "PruneOptions":
        """Check every field, then which options go together (errors name ``where``: a recipe stage)."""
        super().validate(where)
        try:
            check_combination(self)
        except PrunekitError as exc:
            if where:
                raise type(exc)(f"{where}: {exc}") from None
            raise
        return self


OPTIONS = PruneOptions


def check_combination(opts: Any) -> None:
    """The cross-option rules of ``prunekit prune`` (method, its budget, flags of the other family)."""
    from .common import parse_input_size

    parse_input_size(opts.input_size)
    prune_calibrated.check_args(opts)
    if opts.method in STRUCTURED_METHODS:
        if opts.ratio is not None:
            check_number("--ratio", opts.ratio, low=0.0, high=1.0, high_open=True)
        prune_structured.check_args(opts)
        return
    if opts.method not in METHODS + CALIBRATED_METHODS:
        valid = ", ".join(METHODS + CALIBRATED_METHODS + STRUCTURED_METHODS)
        raise UnknownNameError(f"unknown pruning method {opts.method!r}; valid: {valid}")
    if opts.ratio is None and opts.method not in CALIBRATED_METHODS:
        raise PrunekitError(f"--method {opts.method} needs --ratio R (fraction of weights to prune, e.g. 0.8)")
    foreign = [f"--{k.replace('_', '-')}" for k in ("percent", "plan", "stage_ratios", "rounds", "skip", "target_macs",
                                                    "target_params", "target_latency", "criterion")
               if _given(getattr(opts, k, None))]
    foreign += [f for f, v in (("--global", opts.global_ranking), ("--ignore", opts.ignore),
                               ("--round-to", opts.round_to != 1), ("--strict-empty", opts.strict_empty)) if v]
    if foreign:
        raise PrunekitError(f"{', '.join(foreign)} only apply to structured methods; weight-level methods take "
                            "--ratio")


def _data_facts(opts: Any, need_data: bool):
    """The test split when it is needed (``--eval``), else static dataset facts (no loading)."""
    from .common import data_facts, load_datasets

    return load_datasets(opts, train=False)[1] if need_data else data_facts(opts.dataset)


def _check_revival(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    """A new prune of an already masked checkpoint must keep every weight that was pruned."""
    for name, m in new.items():
        if name in old:
            revived = int((~old[name].to(torch.bool) & m.cpu()).sum())
            if revived:
                raise PrunekitError(f"the checkpoint already prunes more of {name} than this prune would: {revived} "
                                    "pruned weights would come back; raise --ratio to at least the checkpoint's "
                                    "sparsity over the scope")


def execute(opts: PruneOptions) -> int:
    """Prune ``opts.checkpoint`` (or a fresh ``opts.model``) by ``opts.method``; write the outputs into ``opts.out``.

    The library-level entry of ``prunekit prune``: the CLI and recipe stages both build a :class:`PruneOptions` and
    call this (through :func:`prunekit.commands.run_command`, which holds the ``--out`` lock)."""
    from .common import DEFAULT_DATASET
    from ..factory import is_factory_name

    if opts.dataset is None and (opts.checkpoint or opts.method not in STRUCTURED_METHODS) and \
            not is_factory_name(opts.model) and not is_hf_folder(opts.model):
        # a checkpoint (and weight-level pruning) keeps the old default; a fresh structured prune of a zoo or user
        # model takes the model's natural input instead
        opts.dataset = DEFAULT_DATASET
    if opts.method in STRUCTURED_METHODS and is_hf_folder(opts.model):
        return prune_hf.run(opts)
    if opts.method in STRUCTURED_METHODS:
        if opts.seed_logs:
            log.warning("--seed-logs writes seed files for weight-level methods only")
        return prune_structured.run_structured(opts)
    if opts.method in CALIBRATED_METHODS:
        return prune_calibrated.run(opts)
    from ..checkpoint import save_model
    from ..pruning.masks import apply_masks
    from ..pruning.reports import markdown_report, write_prune_report
    from ..pruning.scope import make_scope
    from ..pruning.unstructured import prune_unstructured
    from ..utils.io import write_json
    from .common import model_from_args, model_metrics, out_dir, resolve_input_size, standard_fields

    check_combination(opts)
    if opts.seed_logs:  # the seed files hold the accuracy before and after
        opts.eval = True
    scope = make_scope(opts.scope, opts.include, opts.exclude, opts.skip_first, opts.skip_last,
                       default_kinds=DEFAULT_KINDS[opts.method])
    data = _data_facts(opts, need_data=opts.eval)
    ckpt = model_from_args(opts, data)
    model = ckpt.model.to("cpu").eval()
    fresh = not opts.checkpoint
    name = model.prunekit_name
    if fresh:
        log.info(f"note: no --checkpoint: pruning a freshly initialised {name} (seed {opts.seed}); use it to plan "
              "params/FLOPs/sparsity, its accuracy means nothing")
    size = resolve_input_size(opts, data, model)
    old = {k: v.to(torch.bool) for k, v in (ckpt.masks or {}).items()}
    if old:
        apply_masks(model, old)
    device = None
    acc_before = None
    if opts.eval:
        from ..engine.distributed import resolve_device
        from ..engine.evaluate import evaluate

        device = resolve_device(opts.device)
        acc_before = evaluate(model.to(device), data, batch_size=opts.batch_size, device=device)
        model.to("cpu")
    before = model_metrics(model, size, latency=False)
    res = prune_unstructured(model, opts.method, opts.ratio, scope=scope, min_threshold=opts.min_threshold,
                             seed=opts.seed, allow_empty_layers=opts.allow_empty_layers, apply=False)
    _check_revival(old, res.masks)
    gp_acc = None
    if opts.seed_logs and opts.method == "gpmt":  # GPMT's prune_log.csv holds the accuracy of its plain GP step
        from ..pruning.seed_logs import gp_step_accuracy

        gp_acc = gp_step_accuracy(model, opts.ratio, scope, lambda m: evaluate(
            m.to(device), data, batch_size=opts.batch_size, device=device), expected=res.report.gp_layers)
    apply_masks(model, res.masks)
    masks = dict(old)
    masks.update({k: v.cpu() for k, v in res.masks.items()})
    report = res.report
    if opts.eval:
        report.accuracy_before = acc_before
        report.accuracy_after = evaluate(model.to(device), data, batch_size=opts.batch_size, device=device)
        model.to("cpu")
    if fresh:
        report.notes.append(f"pruned a freshly initialised {name} (no --checkpoint)")
    if old:
        report.notes.append(f"the checkpoint's masks on {len(old)} tensors were kept (merged)")
    after = model_metrics(model, size, latency=False)
    out = out_dir(opts)
    extra = {"prune": report.summary(), "source_checkpoint": opts.checkpoint, "fresh_init": fresh,
             "dataset": opts.dataset}
    from ..pruning.sparse_format import storage_sizes

    file_b, dense_b = storage_sizes(save_model(model, out, masks=masks, extra=extra, storage=opts.storage))
    files = ["model.safetensors"] + [p.name for p in write_prune_report(report, out).values()]
    if opts.seed_logs:  # after prunekit's reports: the GPMT logs are rewritten in the seed's own form
        from ..pruning.seed_logs import write_prune_seed_logs

        seed_files = write_prune_seed_logs(out, report, masks, model=model, imagenet=opts.dataset == "imagenet",
                                           gp_post_accuracy=gp_acc)
        files += [p.name for p in seed_files if p.name not in files]
    files.append("summary.json")
    acc = report.accuracy_after or {}
    summary = {**standard_fields(model, size, acc.get("top1"), acc.get("top5")),
               "command": "prune", "method": opts.method, "model": name, "dataset": opts.dataset,
               "checkpoint": opts.checkpoint, "checkpoint_in": opts.checkpoint, "fresh_init": fresh,
               "ratio": opts.ratio, "sparsity": report.sparsity, "total_weights": report.total_weights,
               "total_pruned": report.total_pruned, "thresholds": report.thresholds, "scope": report.scope,
               "min_threshold": opts.min_threshold, "storage": opts.storage, "file_bytes": file_b,
               "dense_file_bytes": dense_b, "input_size": list(size),
               "accuracy_before": report.accuracy_before, "accuracy_after": report.accuracy_after,
               "before": before, "after": after, "report": report.to_dict(), "files": files}
    write_json(out / "summary.json", summary)
    print(markdown_report(report))
    print(f"params {before['params']:,} -> non-zero {after['nonzero_params']:,}; sparse FLOPs "
          f"{before['sparse_flops']:,} -> {after['sparse_flops']:,} ({after['flops_convention']} convention)")
    print(f"model file {file_b / 1e6:.2f} MB ({100 * file_b / dense_b:.1f}% of a plain dense file, "
          f"{dense_b / 1e6:.2f} MB)")
    print(f"wrote {out / 'model.safetensors'} and reports in {out}")
    return 0
