"""``prunekit prune --method l1-filter | slimming | slimming-mask``: structured pruning with real removal.

Called by :mod:`prunekit.commands.prune` (which owns the command and the common options): :class:`StructuredOptions`
declares this module's options, :func:`check_args` which go together, :func:`run_structured` turns them into a call
of :func:`prunekit.pruning.structured.api.prune_and_report` on any model (zoo name, ``--model module:callable``, or
``--checkpoint``) and its report into files. Two ways of choosing channels:

* the papers' rules: ``--plan NAME`` / ``--stage-ratios r1,r2,r3`` / ``--rounds K`` (Li et al. / kesi, on each conv that can
  lose filters on its own; ``--criterion random``: the same widths, kept filters drawn at random with ``--seed``, the
  control of claim (e)) and ``--method slimming --percent P`` (one global |γ| threshold; ``--round-to N``: every
  layer's kept count rounded to a multiple of N);
* any model, any coupled group (residual streams, concat, depthwise, SE ...): ``--ratio R`` (each group, or with
  ``--global`` one ranking), ``--target-macs F`` / ``--target-params F``, ``--criterion l1|l2|bn|taylor|random``,
  ``--round-to N``, ``--ignore REGEX``; ``--target-latency F|12ms``: prune until the *measured* latency on
  ``--latency-runtime`` at ``--latency-batch`` meets it (:mod:`prunekit.pruning.structured.latency_target`).

Writes into ``--out``: ``model.safetensors`` (how to build the dense model + the JSON channel plan + weights;
``slimming-mask``: the full model with BN γ/β masks), ``plan.json``, ``groups.csv`` (every channel group the graph
found), ``structured_report.csv`` / ``.md``, ``channels.csv``, ``channels.png``, ``summary.json``; prints a table.
Every prune is verified against the unpruned model whose consumers ignore the removed channels (max |diff| printed).
``--rounds K`` applies K iterative rounds back to back without finetune (the recipes finetune in between).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import PrunekitError
from ..options import Options, option
from ..pruning.structured.api import METHODS as STRUCTURED_METHODS
from ..pruning.structured.importance import CRITERIA, REDUCTIONS
from ..utils.io import write_csv, write_json, write_text
from ..utils.table import markdown_table
from .common import out_dir, standard_fields

_G = "structured pruning (--method l1-filter, slimming, slimming-mask)"

log = logging.getLogger(__name__)


@dataclass
class StructuredOptions(Options):
    """The structured methods' options of ``prunekit prune`` (the common ones come from the command)."""

    plan: str | None = option(None, help="l1-filter named plan: vgg16-A, resnet56-A, resnet56-B, resnet110-A, "
                              "resnet110-B", group=_G)
    stage_ratios: list[float] = option(None, float, "l1-filter user plan: pruning ratio per stage 'r1,r2,r3' or "
                                       "r1 r2 r3 (or one for all stages); --ratios is its old spelling", many=True,
                                       low=0.0, high=1.0, high_open=True, aliases=("--ratios",), group=_G)
    skip: list[str] = option(None, help="l1-filter: layers/blocks kept whole, e.g. 'layer1.7,layer2.0' or "
                             "'conv1_1'", many=True, group=_G)
    percent: float | None = option(None, float, "slimming: fraction of all BN channels to prune by one global "
                                   "|gamma| threshold", low=0.0, high=1.0, high_open=True, group=_G)
    rounds: int | None = option(None, int, "l1-filter: K iterative rounds (kesi schedule unless --stage-ratios), no "
                                "finetune in between", low=1, high=1000, group=_G)
    strict_empty: bool = option(False, bool, "fail (instead of keeping the strongest channel) when a layer would "
                                "lose every channel", group=_G)
    global_ranking: bool = option(False, bool, "with --ratio: one ranking of all channels across groups (scores "
                                  "normalised per group)", flag="--global", group=_G)
    target_macs: float | None = option(None, float, "keep this fraction of the conv/linear MACs (global ranking), "
                                       "e.g. 0.5", low=0.0, high=1.0, low_open=True, group=_G)
    target_params: float | None = option(None, float, "keep this fraction of the parameters (global ranking), "
                                         "e.g. 0.5", low=0.0, high=1.0, low_open=True, group=_G)
    target_latency: str | None = option(None, help="prune until the measured latency is this fraction of the "
                                        "dense model's (e.g. 0.6) or this time (e.g. 12ms) on --latency-runtime / "
                                        "--latency-batch / --latency-threads (global ranking by importance per "
                                        "latency saved)", metavar="F|Nms", group=_G)
    latency_runtime: str | None = option(None, help="--target-latency runtime: eager (default), compile "
                                         "(torch.compile; slow), onnxruntime",
                                         choices=("eager", "compile", "onnxruntime"), group=_G)
    criterion: str | None = option(None, help="importance (default l1; the L1-filter rules --plan/--stage-ratios/--rounds "
                                   "take l1 or random: same widths, kept filters drawn with --seed)",
                                   choices=CRITERIA, group=_G)
    reduction: str = option("sum", help="how a coupled group combines its layers' scores", choices=REDUCTIONS,
                            group=_G)
    round_to: int = option(1, int, "kept channels per group (slimming: per BN layer) a multiple of N (e.g. 8)", low=1,
                           high=65536, group=_G)
    ignore: list[str] = option(None, help="modules (path regex) kept whole and not traced into, e.g. '^head' "
                               "(repeatable)", many=True, split=False, metavar="REGEX", group=_G)
    max_group_ratio: float = option(0.9, float, "global ranking/targets: no group loses more than this fraction",
                                    low=0.0, high=1.0, high_open=True, group=_G)
    taylor_batches: int = option(4, int, "criterion taylor: training batches whose gradients are accumulated",
                                 low=1, high=100000, group=_G)
    latency_batch_sizes: list[int] = option([1, 64], int, "CPU latency batch sizes", many=True, low=1, high=65536,
                                            group=_G)
    latency_repeats: int | None = option(None, int, "timed passes per model and batch size at most (default: as many "
                                         "as --latency-budget allows, up to 100)", low=1, high=100000, group=_G)
    latency_threads: int | None = option(None, int, "torch CPU threads while timing (default: torch's current "
                                         "setting)", low=1, high=4096, group=_G)
    kinds: list[str] = option(None, help="what may be pruned: heads, hidden, channels (default all; heads and "
                              "hidden exist in transformers)", many=True, choices=("heads", "hidden", "channels"),
                              group=_G)
    depth: int = option(0, int, "remove this many whole blocks first (lowest block influence)", low=0, high=10000,
                        group=_G)
    head_dims: bool = option(False, bool, "transformers: heads lose dims instead of whole heads (not with rotary "
                             "embeddings)", group=_G)
    example_len: int = option(32, int, "Hugging Face text models: length of the random example token ids", low=1,
                          high=1 << 20, group=_G)
    example_text: str | None = option(None, help="Hugging Face text models: example text for the folder's "
                                      "tokenizer", group=_G)
    input_size: Any = option(None, help="C,H,W for tracing, FLOPs and latency (default: the dataset's image size, "
                             "else the model's natural input, e.g. 3,32,32 for the CIFAR zoo and 3,224,224 for "
                             "ImageNet models)", raw=True, group=_G)


def _given(v: Any) -> bool:
    return v is not None and v is not False and v != []


def _generic(args: Any) -> bool:
    """True for the any-model path (--ratio / --target-*), False for the papers' rules."""
    return any(v is not None for v in (args.ratio, args.target_macs, args.target_params, args.target_latency))


def check_args(args: Any) -> None:
    """Which structured options go together (a :class:`PrunekitError` naming the flags otherwise)."""
    m = args.method
    if m not in STRUCTURED_METHODS:
        raise PrunekitError(f"structured method must be one of {', '.join(STRUCTURED_METHODS)}, got {m!r}")
    paper = [f for f, v in (("--plan", args.plan), ("--stage-ratios", args.stage_ratios), ("--skip", args.skip),
                            ("--rounds", args.rounds)) if _given(v)]
    budgets = [f for f, v in (("--ratio", args.ratio), ("--target-macs", args.target_macs),
                              ("--target-params", args.target_params),
                              ("--target-latency", args.target_latency)) if v is not None]
    slimming = m in ("slimming", "slimming-mask")
    generic_only = [f for f, v in (("--global", args.global_ranking),
                                   ("--round-to", args.round_to != 1 and not slimming),
                                   ("--ignore", bool(args.ignore))) if v]
    if args.criterion is not None and args.criterion not in CRITERIA:
        raise PrunekitError(f"--criterion must be one of {', '.join(CRITERIA)}, got {args.criterion!r}")
    if len(budgets) > 1:
        raise PrunekitError(f"give one of {', '.join(budgets)}")
    _check_latency_args(args)
    if budgets:
        if m not in ("structured", "l1-filter"):
            raise PrunekitError(f"{budgets[0]} applies to --method structured (with --criterion bn for BN-γ "
                                f"importance); --method {m} takes --percent")
        if paper:
            raise PrunekitError(f"{', '.join(paper)} are the papers' rules; they do not combine with {budgets[0]}")
        if args.global_ranking and args.ratio is None:
            raise PrunekitError("--global goes with --ratio (budgets --target-* always rank globally)")
        return
    if m == "structured":
        raise PrunekitError("--method structured needs --ratio R, --target-macs F, --target-params F or "
                            "--target-latency F")
    paper_criteria = (None, "l1", "random") if m == "l1-filter" else (None,)
    if generic_only or args.criterion not in paper_criteria:
        extra = generic_only + ([f"--criterion {args.criterion}"] if args.criterion not in paper_criteria else [])
        raise PrunekitError(f"{', '.join(extra)} need --ratio R, --target-macs F, --target-params F or "
                            "--target-latency F" + (" (the L1-filter rules take --criterion l1 or random)"
                                                    if m == "l1-filter" else ""))
    if m == "l1-filter":
        if args.percent is not None:
            raise PrunekitError("--percent is a slimming option; l1-filter takes --ratio, --plan or --stage-ratios")
        if args.plan and args.rounds:
            raise PrunekitError("--plan is one-shot; iterative --rounds uses the kesi schedule or --stage-ratios")
        if not (args.plan or args.stage_ratios or args.rounds):
            raise PrunekitError("l1-filter needs --ratio R (any model), --plan NAME, --stage-ratios r1,r2,r3 or --rounds K")
    else:
        if paper:
            raise PrunekitError(f"{', '.join(paper)} only apply to --method l1-filter")
        if args.percent is None:
            raise PrunekitError(f"--method {m} needs --percent P (e.g. 0.4)")


def _check_latency_args(args: Any) -> None:
    from ..pruning.structured.latency_target import RUNTIMES, parse_latency_target

    if args.target_latency is None:
        extra = [f for f, v in (("--latency-runtime", args.latency_runtime), ("--latency-batch", args.latency_batch))
                 if v is not None]
        if extra:
            raise PrunekitError(f"{', '.join(extra)} go with --target-latency")
        return
    parse_latency_target(args.target_latency)
    if args.latency_runtime is not None and args.latency_runtime not in RUNTIMES:
        raise PrunekitError(f"--latency-runtime must be one of {', '.join(RUNTIMES)}, got {args.latency_runtime!r}")
    if args.criterion == "taylor":
        raise PrunekitError("--target-latency takes --criterion l1, l2, bn or random (not taylor)")


def _taylor_batches(args: Any, model: torch.nn.Module):
    from ..data import BatchLoader
    from .common import check_compatible, load_datasets

    if args.dataset is None:
        raise PrunekitError(f"--criterion {args.criterion} needs --dataset (its scores come from training batches)")
    train = load_datasets(args, train=True, test=False)[0]
    check_compatible(model, train, args.checkpoint or args.model or "the model")
    loader = BatchLoader(train, batch_size=min(args.batch_size, len(train)), shuffle=True, seed=args.seed, train=False)
    out = []
    for i, batch in enumerate(loader):
        if i >= args.taylor_batches:
            break
        out.append((batch[0], batch[1]))
    return out


def run_structured(args: Any) -> int:
    """Prune ``--checkpoint`` (or a fresh ``--model``) with a structured method; write outputs; return 0."""
    from ..checkpoint import save_model
    from ..pruning.structured.api import prune_and_report
    from .common import data_facts, load_datasets, model_from_args, resolve_input_size

    check_args(args)
    evaluate_acc = bool(getattr(args, "eval", False))
    if evaluate_acc and args.dataset is None:
        raise PrunekitError("--eval needs --dataset")
    test_ds = load_datasets(args, train=False)[1] if evaluate_acc else data_facts(args.dataset)
    ckpt = model_from_args(args, test_ds)
    fresh = not args.checkpoint
    model = ckpt.model.to("cpu").eval()
    name = _label(model)
    if fresh:
        log.info(f"note: no --checkpoint: planning on a freshly initialised {name} (seed {args.seed}); the kept "
              "channels are meaningless until the model is trained")
    size = resolve_input_size(args, test_ds, model)
    rep = prune_and_report(
        model, args.method, input_size=size, plan=args.plan, ratios=list(args.stage_ratios) or None,
        skip=list(args.skip) or None, rounds=args.rounds,
        percent=args.percent, ratio=args.ratio, global_ranking=args.global_ranking, target_macs=args.target_macs,
        target_params=args.target_params, target_latency=args.target_latency, criterion=args.criterion,
        reduction=args.reduction, round_to=args.round_to, ignore=args.ignore, max_group_ratio=args.max_group_ratio,
        data=_taylor_batches(args, model) if args.criterion in ("taylor", "activation") and _generic(args)
        else None,
        seed=args.seed, strict_empty=args.strict_empty, masks=ckpt.masks, latency_runtime=args.latency_runtime,
        latency_batch=args.latency_batch, latency_threads=args.latency_threads,
        latency_batch_sizes=(),  # timed below: before and after in turn, within --latency-budget
        device=_latency_device(args.device), evaluate=_evaluator(args, test_ds) if evaluate_acc else None,
        source=args.checkpoint or name, kinds=list(args.kinds) or None, depth=args.depth, head_dims=args.head_dims)
    if fresh:
        rep.notes.insert(len(rep.warnings), f"planned on a freshly initialised {name} (no --checkpoint)")
    timing, lat_lines = _time_before_after(model, rep, size, args)
    rep.notes.extend(lat_lines)
    out = out_dir(args)
    extra = {"method": args.method, **rep.dense, "flops_convention": "macs (flops = 2*macs)",
             "flops_input_size": list(size), "params": rep.after["params"], "macs": rep.after["macs"],
             "flops": rep.after["flops"], "source_checkpoint": args.checkpoint, "plan_name": args.plan,
             "percent": args.percent, "rounds": args.rounds, "threshold": rep.result.info.get("threshold"),
             "dataset": args.dataset}
    if args.criterion is not None:
        extra["criterion"] = args.criterion
    save_model(rep.model, out, masks=rep.masks, extra=extra)
    _write_reports(rep, out, name, args.method)
    acc = rep.accuracy
    summary = {**standard_fields(rep.model, size, acc.get("after")),
               "command": "prune", "method": args.method, "model": name, "checkpoint_in": args.checkpoint,
               "checkpoint": args.checkpoint, "fresh_init": fresh, "dataset": args.dataset, "input_size": list(size),
               "cfg": getattr(rep.model, "prunekit_cfg", None), "before": rep.before, "after": rep.after,
               "ratios": {r["metric"]: r["ratio"] for r in rep.compare_rows()}, "accuracy": acc,
               "exactness_max_abs_diff": rep.exactness, "warnings": rep.warnings, "info": rep.info(),
               "rounds": rep.rounds, "criterion": args.criterion or "l1", "seed": args.seed, "dense": rep.dense,
               "latency": timing,
               "files": ["model.safetensors", *OUTPUT_FILES]}
    write_json(out / "summary.json", summary)
    print(markdown_table(["metric", "before", "after", "before/after"],
                         [[r["metric"], r["before"], r["after"], r["ratio"]] for r in rep.compare_rows()],
                         precision=3))
    if rep.exactness is not None:
        print(f"exact: max |pruned - reference| = {rep.exactness:.3g}")
    for line in rep.latency_lines + lat_lines:
        print(line)
    for k, v in acc.items():
        print(f"top-1 {k}: {v:.2f}%")
    print(f"wrote {Path(out) / 'model.safetensors'} and reports in {out}")
    return 0


def _time_before_after(model: torch.nn.Module, rep: Any, size: Any, args: Any) -> tuple[list[dict[str, Any]],
                                                                                  list[str]]:
    """Time the unpruned and the pruned model pass by pass in turn at each ``--latency-batch-sizes`` within
    ``--latency-budget`` (at most ``--latency-repeats`` passes); put the medians in ``rep.before``/``rep.after``
    (``latency_ms_b<N>``). Returns the summary entries and one report line per batch size."""
    from ..metrics.latency import DEFAULT_MAX_PASSES, compare_latency

    comps = compare_latency({"before": model, "after": rep.model}, size, batch_sizes=args.latency_batch_sizes,
                            budget_s=args.latency_budget, threads=args.latency_threads,
                            max_passes=args.latency_repeats or DEFAULT_MAX_PASSES,
                            device=_latency_device(args.device))
    if not comps:
        return [], (["latency: not timed (--latency-budget 0)"] if args.latency_budget == 0 else [])
    entries, lines = [], []
    for c in comps:
        speed = c.speedup("before", "after")
        entries.append({**c.as_dict(), "speedup": None if speed is None else vars(speed)})
        if c.skipped:
            lines.append(f"latency {c.skipped}")
            continue
        b = c.batch_size
        rep.before[f"latency_ms_b{b}"] = c.median("before")
        rep.after[f"latency_ms_b{b}"] = c.median("after")
        lines.append(f"latency batch {b}: before {c.reports['before'].spread()}, after "
                     f"{c.reports['after'].spread()}; {speed.describe('pruned') if speed else ''}")
    return entries, lines


OUTPUT_FILES = ("plan.json", "groups.csv", "structured_report.csv", "structured_report.md", "channels.csv",
                "channels.png", "summary.json")


def _write_reports(rep, out: Path, name: str, method: str) -> None:
    """plan.json, groups.csv, structured_report.csv/.md, channels.csv/.png of a :class:`StructuredReport`."""
    from ..pruning.structured.graph import group_table
    from ..pruning.structured.reports import accuracy_rows, plot_channels, report_markdown, write_channels_csv

    write_json(out / "plan.json", rep.plan)
    if rep.result.graph is not None:
        write_csv(out / "groups.csv", group_table(rep.result.graph.groups),
                  ["group", "units", "channels", "stage", "producers", "norms", "consumers", "simple"])
    rows = rep.compare_rows()
    write_csv(out / "structured_report.csv", rows + accuracy_rows(rep.accuracy), ["metric", "before", "after", "ratio"])
    write_channels_csv(rep.channel_rows, out / "channels.csv")
    plot_channels(rep.channel_rows, out / "channels.png", f"{name} {method}: kept vs total channels")
    write_text(out / "structured_report.md", report_markdown(f"{name}: {method}", rows, rep.channel_rows, rep.notes))


def _evaluator(args: Any, test_ds):
    """``model -> top-1`` on the test split, on ``--device`` (the model goes back to the CPU)."""
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate

    dev = resolve_device(args.device)

    def top1(m: torch.nn.Module) -> float:
        try:
            return evaluate(m.to(dev), test_ds, device=dev)["top1"]
        finally:
            m.to("cpu")
    return top1


def _label(model: torch.nn.Module) -> str:
    fac = getattr(model, "prunekit_factory", None)
    return getattr(model, "prunekit_name", None) or (fac or {}).get("target") or type(model).__name__


def _latency_device(device: str) -> str:
    """``--device`` for latency: ``auto`` is CUDA when available (as for training), else the CPU."""
    from ..engine.distributed import resolve_device

    return str(resolve_device(device))
