"""``prunekit prune --method l1-filter | slimming | slimming-mask``: structured pruning with real removal.

Called by :mod:`prunekit.cli.prune` (which owns the command and the common flags): :func:`add_structured_args`
adds this module's flags, :func:`run_structured` runs one of the methods on any model (zoo name, ``--model
module:callable``, or ``--checkpoint``). Two ways of choosing channels:

* the papers' rules: ``--plan NAME`` / ``--ratios r1,r2,r3`` / ``--rounds K`` (Li et al. / kesi, on each conv that can
  lose filters on its own) and ``--method slimming --percent P`` (one global |γ| threshold);
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

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import PrunekitError
from ..utils.io import write_csv, write_json, write_text
from ..utils.table import markdown_table

STRUCTURED_METHODS = ("l1-filter", "slimming", "slimming-mask")
CRITERIA = ("l1", "l2", "bn", "taylor", "random")


def add_structured_args(parser: argparse.ArgumentParser) -> None:
    """Flags of the structured methods (the common flags come from :mod:`prunekit.cli.common`)."""
    g = parser.add_argument_group("structured pruning (--method l1-filter, slimming, slimming-mask)")
    g.add_argument("--plan", default=None,
                   help="l1-filter named plan: vgg16-A, resnet56-A, resnet56-B, resnet110-A, resnet110-B")
    g.add_argument("--ratios", default=None,
                   help="l1-filter user plan: pruning ratio per stage 'r1,r2,r3' (or one for all stages)")
    g.add_argument("--skip", default=None,
                   help="l1-filter: layers/blocks kept whole, e.g. 'layer1.7,layer2.0' or 'conv1_1'")
    g.add_argument("--percent", type=float, default=None,
                   help="slimming: fraction of all BN channels to prune by one global |gamma| threshold")
    g.add_argument("--rounds", type=int, default=None,
                   help="l1-filter: K iterative rounds (kesi schedule unless --ratios), no finetune in between")
    g.add_argument("--strict-empty", action="store_true",
                   help="fail (instead of keeping the strongest channel) when a layer would lose every channel")
    g.add_argument("--global", dest="global_ranking", action="store_true",
                   help="with --ratio: one ranking of all channels across groups (scores normalised per group)")
    g.add_argument("--target-macs", type=float, default=None,
                   help="keep this fraction of the conv/linear MACs (global ranking), e.g. 0.5")
    g.add_argument("--target-params", type=float, default=None,
                   help="keep this fraction of the parameters (global ranking), e.g. 0.5")
    g.add_argument("--target-latency", default=None, metavar="F|Nms",
                   help="prune until the measured latency is this fraction of the dense model's (e.g. 0.6) or this "
                        "time (e.g. 12ms) on --latency-runtime / --latency-batch / --latency-threads (global ranking "
                        "by importance per latency saved)")
    g.add_argument("--latency-runtime", default=None,
                   help="--target-latency runtime: eager (default), compile (torch.compile; slow)")
    g.add_argument("--latency-batch", type=int, default=None,
                   help="--target-latency: batch size of the latency measurements (default 1)")
    g.add_argument("--criterion", default=None, help="importance: l1 (default), l2, bn, taylor, random")
    g.add_argument("--reduction", default="sum", help="how a coupled group combines its layers' scores: "
                                                      "sum (default), mean, max")
    g.add_argument("--round-to", type=int, default=1, help="kept channels per group a multiple of N (e.g. 8)")
    g.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                   help="modules (path regex) kept whole and not traced into, e.g. '^head' (repeatable)")
    g.add_argument("--max-group-ratio", type=float, default=0.9,
                   help="global ranking/targets: no group loses more than this fraction (default 0.9)")
    g.add_argument("--taylor-batches", type=int, default=4,
                   help="criterion taylor: training batches whose gradients are accumulated (default 4)")
    g.add_argument("--latency-batch-sizes", default="1,64", help="CPU latency batch sizes (default 1,64)")
    g.add_argument("--latency-repeats", type=int, default=10, help="timed passes per latency measurement")
    g.add_argument("--latency-threads", type=int, default=None,
                   help="torch CPU threads while timing (default: torch's current setting)")
    g.add_argument("--input-size", default=None,
                   help="C,H,W for tracing, FLOPs and latency (default: the dataset's image size, else the model's "
                        "natural input, e.g. 3,32,32 for the CIFAR zoo and 3,224,224 for ImageNet models)")


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise PrunekitError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise PrunekitError(f"{flag} must be positive integers, got {text!r}")
    return vals


def _generic(args: argparse.Namespace) -> bool:
    """True for the any-model path (--ratio / --target-*), False for the papers' rules."""
    return any(v is not None for v in (args.ratio, args.target_macs, args.target_params,
                                       getattr(args, "target_latency", None)))


def _check_args(args: argparse.Namespace) -> None:
    m = args.method
    if m not in STRUCTURED_METHODS:
        raise PrunekitError(f"structured method must be one of {', '.join(STRUCTURED_METHODS)}, got {m!r}")
    paper = [f for f, v in (("--plan", args.plan), ("--ratios", args.ratios), ("--skip", args.skip),
                            ("--rounds", args.rounds)) if v is not None]
    budgets = [f for f, v in (("--ratio", args.ratio), ("--target-macs", args.target_macs),
                              ("--target-params", args.target_params),
                              ("--target-latency", args.target_latency)) if v is not None]
    generic_only = [f for f, v in (("--global", args.global_ranking), ("--round-to", args.round_to != 1),
                                   ("--ignore", bool(args.ignore))) if v]
    if args.criterion is not None and args.criterion not in CRITERIA:
        raise PrunekitError(f"--criterion must be one of {', '.join(CRITERIA)}, got {args.criterion!r}")
    if len(budgets) > 1:
        raise PrunekitError(f"give one of {', '.join(budgets)}")
    _check_latency_args(args)
    if budgets:
        if m != "l1-filter":
            raise PrunekitError(f"{budgets[0]} applies to --method l1-filter (with --criterion bn for BN-γ "
                                f"importance); --method {m} takes --percent")
        if paper:
            raise PrunekitError(f"{', '.join(paper)} are the papers' rules; they do not combine with {budgets[0]}")
        if args.global_ranking and args.ratio is None:
            raise PrunekitError("--global goes with --ratio (budgets --target-* always rank globally)")
        return
    if generic_only or args.criterion not in (None, "l1"):
        extra = generic_only + ([f"--criterion {args.criterion}"] if args.criterion not in (None, "l1") else [])
        raise PrunekitError(f"{', '.join(extra)} need --ratio R, --target-macs F, --target-params F or "
                             "--target-latency F")
    if m == "l1-filter":
        if args.percent is not None:
            raise PrunekitError("--percent is a slimming option; l1-filter takes --ratio, --plan or --ratios")
        if args.plan and args.rounds:
            raise PrunekitError("--plan is one-shot; iterative --rounds uses the kesi schedule or --ratios")
        if not (args.plan or args.ratios or args.rounds):
            raise PrunekitError("l1-filter needs --ratio R (any model), --plan NAME, --ratios r1,r2,r3 or --rounds K")
    else:
        if paper:
            raise PrunekitError(f"{', '.join(paper)} only apply to --method l1-filter")
        if args.percent is None:
            raise PrunekitError(f"--method {m} needs --percent P (e.g. 0.4)")


def _check_latency_args(args: argparse.Namespace) -> None:
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
    if args.latency_batch is not None and args.latency_batch < 1:
        raise PrunekitError(f"--latency-batch must be a positive integer, got {args.latency_batch}")
    if args.criterion == "taylor":
        raise PrunekitError("--target-latency takes --criterion l1, l2, bn or random (not taylor)")


def _taylor_batches(args: argparse.Namespace, model: torch.nn.Module):
    from ..data import BatchLoader
    from .common import check_compatible, load_datasets

    if args.taylor_batches < 1:
        raise PrunekitError(f"--taylor-batches must be positive, got {args.taylor_batches}")
    if args.dataset is None:
        raise PrunekitError("--criterion taylor needs --dataset (its gradients come from training batches)")
    train = load_datasets(args, train=True, test=False)[0]
    check_compatible(model, train, args.checkpoint or args.model or "the model")
    loader = BatchLoader(train, batch_size=min(args.batch_size, len(train)), shuffle=True, seed=args.seed, train=False)
    out = []
    for i, batch in enumerate(loader):
        if i >= args.taylor_batches:
            break
        out.append((batch[0], batch[1]))
    return out


def _prune(args: argparse.Namespace, model: torch.nn.Module, size: tuple[int, ...]):
    """Run the method; return ``(result, masks, round_rows)``."""
    from ..pruning.structured import l1_filter, pruner, slimming
    from .common import parse_floats

    if getattr(args, "target_latency", None) is not None:
        from ..pruning.structured.latency_target import prune_to_latency

        res = prune_to_latency(
            model, input_size=size, target=args.target_latency, criterion=args.criterion or "l1",
            batch_size=args.latency_batch or 1, runtime=args.latency_runtime or "eager",
            threads=args.latency_threads, ignore=args.ignore, round_to=args.round_to,
            max_group_ratio=args.max_group_ratio, reduction=args.reduction, seed=args.seed)
        return res, None, None
    if _generic(args):
        data = _taylor_batches(args, model) if args.criterion == "taylor" else None
        res = pruner.prune_structured(
            model, input_size=size, criterion=args.criterion or "l1", ratio=args.ratio,
            global_ranking=args.global_ranking, target_macs=args.target_macs, target_params=args.target_params,
            round_to=args.round_to, ignore=args.ignore, reduction=args.reduction,
            max_group_ratio=args.max_group_ratio, data=data, seed=args.seed, strict_empty=args.strict_empty)
        return res, None, None
    ratios = parse_floats(args.ratios, "--ratios") if args.ratios else None
    skip = [s for s in args.skip.split(",") if s.strip()] if args.skip else None
    if args.method == "l1-filter":
        if args.rounds:
            results = l1_filter.prune_iterative(model, args.rounds, ratios=ratios, skip=skip,
                                                strict_empty=args.strict_empty, input_size=size)
            from ..metrics import count_params

            rounds = [{"round": i + 1, "params": count_params(r.model), "cfg": r.model.prunekit_cfg,
                       "max_abs_diff": r.info.get("max_abs_diff")} for i, r in enumerate(results)]
            res = results[-1]
            res.rows = _chain_rows(results)
            res.info["max_abs_diff"] = max(r.info.get("max_abs_diff", 0.0) for r in results)
            return res, None, rounds
        return l1_filter.prune_l1_filter(model, plan=args.plan, ratios=ratios, skip=skip or (),
                                         strict_empty=args.strict_empty, input_size=size), None, None
    if args.method == "slimming":
        return slimming.prune_slimming(model, args.percent, strict_empty=args.strict_empty,
                                       input_size=size), None, None
    _, masks, res = slimming.prune_slimming_mask(model, args.percent, input_size=size)
    return res, masks, None


def _chain_rows(results) -> list[dict[str, Any]]:
    """Per-layer rows over several rounds: total of round 1, kept after the last round."""
    first, last = results[0].rows, results[-1].rows
    out = []
    for a, b in zip(first, last):
        out.append({**a, "kept": b["kept"], "pruned": a["total"] - b["kept"],
                    "kept_ratio": round(b["kept"] / a["total"], 4) if a["total"] else 0.0})
    return out


def _label(model: torch.nn.Module) -> str:
    fac = getattr(model, "prunekit_factory", None)
    return getattr(model, "prunekit_name", None) or (fac or {}).get("target") or type(model).__name__


def run_structured(args: argparse.Namespace) -> int:
    """Prune ``--checkpoint`` (or a fresh ``--model``) with a structured method; write outputs; return 0."""
    from ..checkpoint import save_model
    from ..engine.evaluate import evaluate
    from ..pruning.structured.graph import group_table
    from ..pruning.structured.reports import (accuracy_rows, compare_rows, model_cost, plot_channels,
                                              report_markdown, write_channels_csv)
    from .common import data_facts, load_datasets, model_from_args, out_dir, resolve_input_size, standard_fields

    _check_args(args)
    batch_sizes = _ints(args.latency_batch_sizes, "--latency-batch-sizes")
    evaluate_acc = bool(getattr(args, "eval", False))
    if evaluate_acc and args.dataset is None:
        raise PrunekitError("--eval needs --dataset")
    test_ds = load_datasets(args, train=False)[1] if evaluate_acc else data_facts(args.dataset)
    ckpt = model_from_args(args, test_ds)
    fresh = not args.checkpoint
    if ckpt.masks and args.method != "slimming-mask":
        raise PrunekitError(f"{args.checkpoint} carries weight masks; {args.method} removes channels and cannot "
                            "keep them (finetune it first or prune the dense model)")
    model = ckpt.model.to("cpu").eval()
    name = _label(model)
    if fresh:
        print(f"note: no --checkpoint: planning on a freshly initialised {name} (seed {args.seed}); the kept "
              "channels are meaningless until the model is trained", file=sys.stderr)
    size = resolve_input_size(args, test_ds, model)
    res, masks, rounds = _prune(args, model, size)
    pruned = res.model.eval()
    if ckpt.masks and masks is not None:
        merged = {k: v.to(torch.bool) for k, v in ckpt.masks.items()}
        for k, v in masks.items():
            merged[k] = merged[k] & v if k in merged else v
        masks = merged
    exact = res.info.get("max_abs_diff")
    lat = {"repeats": args.latency_repeats, "threads": args.latency_threads}
    before = model_cost(model, size, batch_sizes, **lat)
    after = model_cost(pruned, size, batch_sizes, **lat)
    if args.method == "slimming-mask":
        res.info["equivalent_removal"] = _equivalent_removal(model, args.percent, res, size)
    dense = _dense_of(model)
    from ..metrics import count_flops, count_params

    dfl = count_flops(dense, (1, *size), convention="macs")
    acc: dict[str, float | None] = {}
    if evaluate_acc:
        from ..engine.distributed import resolve_device
        from ..pruning.structured.verify import zeroed_reference

        dev = resolve_device(args.device)
        ref = res.model if args.method == "slimming-mask" else zeroed_reference(model, res.step_plan)
        for label, m in (("before", model), ("masked (removed channels zeroed)", ref), ("after", pruned)):
            acc[label] = evaluate(m.to(dev), test_ds, device=dev)["top1"]
            m.to("cpu")

    out = out_dir(args)
    extra = {"method": args.method, "dense_params": count_params(dense), "dense_macs": dfl.macs,
             "dense_flops": dfl.flops, "flops_convention": "macs (flops = 2*macs)", "flops_input_size": list(size),
             "params": after["params"], "macs": after["macs"], "flops": after["flops"],
             "source_checkpoint": args.checkpoint, "plan_name": args.plan, "percent": args.percent,
             "rounds": args.rounds, "threshold": res.info.get("threshold"), "dataset": args.dataset}
    save_model(pruned, out, masks=masks, extra=extra)
    plan = res.plan if res.plan else _mask_plan(res)
    write_json(out / "plan.json", plan)
    graph = res.graph
    if graph is not None:
        write_csv(out / "groups.csv", group_table(graph.groups),
                  ["group", "units", "channels", "stage", "producers", "norms", "consumers", "simple"])
    rows = compare_rows(before, after)
    write_csv(out / "structured_report.csv", rows + accuracy_rows(acc), ["metric", "before", "after", "ratio"])
    write_channels_csv(res.rows, out / "channels.csv")
    plot_channels(res.rows, out / "channels.png", f"{name} {args.method}: kept vs total channels")
    notes = list(res.warnings)
    if fresh:
        notes.append(f"planned on a freshly initialised {name} (no --checkpoint)")
    if exact is not None:
        notes.append(f"exactness: max |pruned - reference| on random input = {exact:.3g} (reference: the unpruned "
                     "model whose consumers ignore the removed channels)")
    if "target_reached" in res.info:
        notes.append(f"target {res.info['target']}: reached {res.info['target_reached']} (conv/linear cost model)")
    latency_lines = _latency_lines(res.info.get("latency_target"))
    notes.extend(latency_lines)
    for k, v in acc.items():
        notes.append(f"top-1 {k}: {v:.2f}%")
    write_text(out / "structured_report.md", report_markdown(f"{name}: {args.method}", rows, res.rows, notes))
    info = {k: v for k, v in res.info.items() if k != "equivalent_removal" or v is not None}
    summary = {**standard_fields(pruned, size, acc.get("after")),
               "command": "prune", "method": args.method, "model": name, "checkpoint_in": args.checkpoint,
               "checkpoint": args.checkpoint, "fresh_init": fresh, "dataset": args.dataset, "input_size": list(size),
               "cfg": getattr(pruned, "prunekit_cfg", None), "before": before, "after": after,
               "ratios": {r["metric"]: r["ratio"] for r in rows}, "accuracy": acc, "exactness_max_abs_diff": exact,
               "warnings": res.warnings, "info": info, "rounds": rounds,
               "dense": {k: extra[k] for k in ("dense_params", "dense_macs", "dense_flops")},
               "files": ["model.safetensors", "plan.json", "groups.csv", "structured_report.csv",
                         "structured_report.md", "channels.csv", "channels.png", "summary.json"]}
    write_json(out / "summary.json", summary)
    print(markdown_table(["metric", "before", "after", "before/after"],
                         [[r["metric"], r["before"], r["after"], r["ratio"]] for r in rows], precision=3))
    if exact is not None:
        print(f"exact: max |pruned - reference| = {exact:.3g}")
    for line in latency_lines:
        print(line)
    for k, v in acc.items():
        print(f"top-1 {k}: {v:.2f}%")
    print(f"wrote {Path(out) / 'model.safetensors'} and reports in {out}")
    return 0


def _latency_lines(lt: dict[str, Any] | None) -> list[str]:
    """Report lines of a --target-latency prune: target, measured (twice), MACs and params before/after."""
    if not lt:
        return []
    m = lt["measured_ms"]
    met = "met" if lt["target_met"] else ("missed, within 5%" if lt["within_5pct"] else "MISSED by more than 5%")
    return [f"target latency: {lt['target_ms']:.4g} ms = {lt['target_fraction']:.3f} of the dense {lt['dense_ms']:.4g} "
            f"ms ({lt['runtime']}, batch {lt['batch_size']}, {lt['threads']} threads, {lt['device']})",
            f"measured latency: {m[0]:.4g} ms and {m[1]:.4g} ms (measured/target {lt['measured_over_target'][0]:.3f}, "
            f"{lt['measured_over_target'][1]:.3f}: {met}); predicted {lt['predicted_ms']:.4g} ms; "
            f"{len(lt['iterations'])} measured candidates",
            f"MACs {lt['macs_before']:.4g} -> {lt['macs_after']:.4g}; params {lt['params_before']:,} -> "
            f"{lt['params_after']:,}"]


def _dense_of(model: torch.nn.Module) -> torch.nn.Module:
    """The unpruned architecture of ``model`` (zoo name or factory), freshly built."""
    from ..models import create_model

    fac = getattr(model, "prunekit_factory", None)
    if fac is not None:
        from ..factory import build_model

        return build_model(fac["target"], fac.get("kwargs"), input_size=getattr(model, "prunekit_input_size", None))
    plan = getattr(model, "prunekit_plan", None) or {}
    return create_model(model.prunekit_name, num_classes=model.num_classes, in_channels=model.in_channels,
                        cfg=plan.get("base_cfg") if plan.get("format") == "prunekit-plan/2" else None,
                        **(getattr(model, "prunekit_options", None) or {}))


def _mask_plan(res) -> dict[str, Any]:
    """plan.json for slimming-mask: the channels each BN keeps (nothing is removed)."""
    from ..pruning.structured.pruner import build_plan, removed_units

    graph = res.graph
    by_name = {g.name: g for g in graph.groups}
    removed = {n: removed_units(graph, by_name[n], kept) for n, kept in res.keep.items()}
    plan = build_plan(graph, removed, "slimming-mask", res.keep)
    plan["note"] = "mask implementation: the saved model is full size; this plan is what slimming would remove"
    return plan


def _equivalent_removal(model, percent: float, res, size) -> dict[str, Any] | None:
    """Params/MACs of the physically pruned model the mask run is equivalent to (None if a layer is empty)."""
    from ..metrics import count_flops, count_params
    from ..pruning.structured.slimming import prune_slimming

    if res.info.get("empty_layers"):
        return None
    small = prune_slimming(model, percent, input_size=size).model
    fl = count_flops(small, (1, *size), convention="macs")
    return {"params": count_params(small), "macs": fl.macs, "flops": fl.flops,
            "cfg": getattr(small, "prunekit_cfg", None)}
