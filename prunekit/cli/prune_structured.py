"""``prunekit prune --method l1-filter | slimming | slimming-mask``: structured pruning with real removal.

Called by :mod:`prunekit.cli.prune` (which owns the command and the common flags): :func:`add_structured_args`
adds this module's flags, :func:`run_structured` runs one of the three methods. Writes into ``--out``:
``model.safetensors`` (via ``save_model``; a physically smaller zoo model rebuilt from meta ``cfg`` + ``plan``, or
for ``slimming-mask`` the full model with BN γ/β masks), ``plan.json``, ``structured_report.csv`` / ``.md``,
``channels.csv``, ``channels.png``, ``summary.json``; prints a markdown table. With ``--eval`` (a flag of
``prunekit prune``) the test split is loaded and top-1 is reported before, for the masked model (removed channels'
γ/β zeroed) and after (equal to the masked one: removal is exact); otherwise the dataset is not loaded.

``--rounds K`` applies K iterative L1-filter rounds back to back, *without* finetune in between; finetune between
rounds (seed 002) is the experiment runner's job (call :func:`prunekit.pruning.structured.iterative_round`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import PrunekitError
from ..utils.io import write_csv, write_json
from ..utils.table import markdown_table

STRUCTURED_METHODS = ("l1-filter", "slimming", "slimming-mask")


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
    g.add_argument("--latency-batch-sizes", default="1,64", help="CPU latency batch sizes (default 1,64)")
    g.add_argument("--latency-repeats", type=int, default=10, help="timed passes per latency measurement")
    g.add_argument("--latency-threads", type=int, default=None,
                   help="torch CPU threads while timing (default: torch's current setting)")
    g.add_argument("--input-size", default=None,
                   help="C,H,W for FLOPs/latency (default: the dataset's image size)")


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


def _check_args(args: argparse.Namespace) -> None:
    m = args.method
    if m not in STRUCTURED_METHODS:
        raise PrunekitError(f"structured method must be one of {', '.join(STRUCTURED_METHODS)}, got {m!r}")
    l1_only = [f for f, v in (("--plan", args.plan), ("--ratios", args.ratios), ("--skip", args.skip),
                              ("--rounds", args.rounds)) if v is not None]
    if m == "l1-filter":
        if args.percent is not None:
            raise PrunekitError("--percent is a slimming option; l1-filter takes --plan or --ratios")
        if args.plan and args.rounds:
            raise PrunekitError("--plan is one-shot; iterative --rounds uses the kesi schedule or --ratios")
        if not (args.plan or args.ratios or args.rounds):
            raise PrunekitError("l1-filter needs --plan NAME, --ratios r1,r2,r3 or --rounds K")
    else:
        if l1_only:
            raise PrunekitError(f"{', '.join(l1_only)} only apply to --method l1-filter")
        if args.percent is None:
            raise PrunekitError(f"--method {m} needs --percent P (e.g. 0.4)")


def _prune(args: argparse.Namespace, model: torch.nn.Module):
    """Run the method; return ``(result, masks, round_rows)``."""
    from ..pruning.structured import l1_filter, slimming
    from .common import parse_floats

    ratios = parse_floats(args.ratios, "--ratios") if args.ratios else None
    skip = [s for s in args.skip.split(",") if s.strip()] if args.skip else None
    if args.method == "l1-filter":
        if args.rounds:
            results = l1_filter.prune_iterative(model, args.rounds, ratios=ratios, skip=skip,
                                                strict_empty=args.strict_empty)
            from ..metrics import count_params

            rounds = [{"round": i + 1, "params": count_params(r.model), "cfg": r.model.prunekit_cfg}
                      for i, r in enumerate(results)]
            res = results[-1]
            res.rows = _chain_rows(results)
            return res, None, rounds
        return l1_filter.prune_l1_filter(model, plan=args.plan, ratios=ratios, skip=skip or (),
                                         strict_empty=args.strict_empty), None, None
    if args.method == "slimming":
        return slimming.prune_slimming(model, args.percent, strict_empty=args.strict_empty), None, None
    _, masks, res = slimming.prune_slimming_mask(model, args.percent)
    return res, masks, None


def _chain_rows(results) -> list[dict[str, Any]]:
    """Per-layer rows over several rounds: total of round 1, kept after the last round."""
    first, last = results[0].rows, results[-1].rows
    out = []
    for a, b in zip(first, last):
        out.append({**a, "kept": b["kept"], "pruned": a["total"] - b["kept"],
                    "kept_ratio": round(b["kept"] / a["total"], 4) if a["total"] else 0.0})
    return out


def _masked_reference(model, res, method: str):
    from ..pruning.structured.core import zeroed_reference
    from ..pruning.structured.groups import describe

    if method == "slimming-mask":
        return res.model
    return zeroed_reference(model, describe(model, "l1" if method == "l1-filter" else "bn"), res.keep)




def run_structured(args: argparse.Namespace) -> int:
    """Prune ``--checkpoint`` (or a fresh ``--model``) with a structured method; write outputs; return 0."""
    from ..checkpoint import save_model
    from ..engine.evaluate import evaluate
    from ..models import create_model
    from ..pruning.structured.reports import (accuracy_rows, compare_rows, model_cost, plot_channels,
                                              report_markdown, write_channels_csv)
    from .common import data_facts, load_datasets, model_from_args, out_dir, resolve_input_size, standard_fields

    _check_args(args)
    batch_sizes = _ints(args.latency_batch_sizes, "--latency-batch-sizes")
    evaluate_acc = bool(getattr(args, "eval", False))
    test_ds = load_datasets(args, train=False)[1] if evaluate_acc else data_facts(args.dataset)
    ckpt = model_from_args(args, test_ds)
    fresh = not args.checkpoint
    if ckpt.masks and args.method != "slimming-mask":
        raise PrunekitError(f"{args.checkpoint} carries weight masks; {args.method} removes channels and cannot "
                            "keep them (finetune it first or prune the dense model)")
    model = ckpt.model.to("cpu").eval()
    name = model.prunekit_name
    if fresh:
        print(f"note: no --checkpoint: planning on a freshly initialised {name} (seed {args.seed}); the kept "
              "channels are meaningless until the model is trained", file=sys.stderr)
    size = resolve_input_size(args, test_ds, model)
    res, masks, rounds = _prune(args, model)
    pruned = res.model.eval()
    if ckpt.masks and masks is not None:
        merged = {k: v.to(torch.bool) for k, v in ckpt.masks.items()}
        for k, v in masks.items():
            merged[k] = merged[k] & v if k in merged else v
        masks = merged

    ref = _masked_reference(model, res, args.method) if not rounds else None
    exact = None
    if ref is not None:
        with torch.no_grad():
            x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
            exact = float((ref.eval()(x) - pruned(x)).abs().max())
    lat = {"repeats": args.latency_repeats, "threads": args.latency_threads}
    before = model_cost(model, size, batch_sizes, **lat)
    after = model_cost(pruned, size, batch_sizes, **lat)
    if args.method == "slimming-mask":
        res.info["equivalent_removal"] = _equivalent_removal(model, args.percent, res, size)
    dense = create_model(name, num_classes=model.num_classes, in_channels=model.in_channels)
    from ..metrics import count_flops, count_params

    dfl = count_flops(dense, (1, *size), convention="macs")
    acc: dict[str, float | None] = {}
    if evaluate_acc:
        from ..engine.distributed import resolve_device

        dev = resolve_device(args.device)
        for label, m in (("before", model), ("masked (removed channels zeroed)", ref), ("after", pruned)):
            if m is not None:
                acc[label] = evaluate(m.to(dev), test_ds, device=dev)["top1"]
                m.to("cpu")

    out = out_dir(args)
    extra = {"method": args.method, "dense_params": count_params(dense), "dense_macs": dfl.macs,
             "dense_flops": dfl.flops, "flops_convention": "macs (flops = 2*macs)", "flops_input_size": list(size),
             "params": after["params"], "macs": after["macs"], "flops": after["flops"],
             "source_checkpoint": args.checkpoint, "plan_name": args.plan, "percent": args.percent,
             "rounds": args.rounds, "threshold": res.info.get("threshold")}
    save_model(pruned, out, masks=masks, extra=extra)
    plan = res.plan if res.plan else _mask_plan(model, res)
    write_json(out / "plan.json", plan)
    rows = compare_rows(before, after)
    write_csv(out / "structured_report.csv", rows + accuracy_rows(acc), ["metric", "before", "after", "ratio"])
    write_channels_csv(res.rows, out / "channels.csv")
    plot_channels(res.rows, out / "channels.png", f"{name} {args.method}: kept vs total channels")
    notes = list(res.warnings)
    if fresh:
        notes.append(f"planned on a freshly initialised {name} (no --checkpoint)")
    if exact is not None:
        notes.append(f"exactness: max |pruned - masked| on random input = {exact:.3g}")
    for k, v in acc.items():
        notes.append(f"top-1 {k}: {v:.2f}%")
    from ..utils.io import write_text

    write_text(out / "structured_report.md", report_markdown(f"{name}: {args.method}", rows, res.rows, notes))
    summary = {**standard_fields(pruned, size, acc.get("after")),
               "command": "prune", "method": args.method, "model": name, "checkpoint_in": args.checkpoint,
               "checkpoint": args.checkpoint, "fresh_init": fresh, "dataset": args.dataset, "input_size": list(size), "cfg": pruned.prunekit_cfg,
               "before": before, "after": after, "ratios": {r["metric"]: r["ratio"] for r in rows},
               "accuracy": acc, "exactness_max_abs_diff": exact, "warnings": res.warnings, "info": res.info,
               "rounds": rounds, "dense": {k: extra[k] for k in ("dense_params", "dense_macs", "dense_flops")},
               "files": ["model.safetensors", "plan.json", "structured_report.csv", "structured_report.md",
                         "channels.csv", "channels.png", "summary.json"]}
    write_json(out / "summary.json", summary)
    print(markdown_table(["metric", "before", "after", "before/after"],
                         [[r["metric"], r["before"], r["after"], r["ratio"]] for r in rows], precision=3))
    for k, v in acc.items():
        print(f"top-1 {k}: {v:.2f}%")
    print(f"wrote {Path(out) / 'model.safetensors'} and reports in {out}")
    return 0


def _mask_plan(model, res) -> dict[str, Any]:
    """plan.json for slimming-mask: the channels each BN keeps (nothing is removed)."""
    from ..pruning.structured.core import build_plan
    from ..pruning.structured.groups import describe

    plan = build_plan(model, describe(model, "bn"), res.keep, "slimming-mask")
    plan["note"] = "mask implementation: the saved model is full size; this plan is what slimming would remove"
    return plan


def _equivalent_removal(model, percent: float, res, size) -> dict[str, Any] | None:
    """Params/MACs of the physically pruned model the mask run is equivalent to (None if a layer is empty)."""
    from ..metrics import count_flops, count_params
    from ..pruning.structured.slimming import prune_slimming

    if res.info.get("empty_layers"):
        return None
    small = prune_slimming(model, percent).model
    fl = count_flops(small, (1, *size), convention="macs")
    return {"params": count_params(small), "macs": fl.macs, "flops": fl.flops, "cfg": small.prunekit_cfg}
