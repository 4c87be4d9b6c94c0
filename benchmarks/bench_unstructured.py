"""Benchmark: global magnitude pruning of ResNet-50 (25.5M conv+fc weights) with prunekit vs
``torch.nn.utils.prune.global_unstructured(L1Unstructured)``, same model, same sparsity; plus GPMT end to end.

    python benchmarks/bench_unstructured.py [--threads 2] [--sparsity 0.8] [--repeats 3]

Checks that both produce the same masks (differences allowed only at ties, i.e. at |w| == threshold) and prints
a markdown table of timings (median of ``--repeats``, and the first run; the
machine may be shared, so the median is the number to quote).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from prunekit.models import create_model
from prunekit.pruning.unstructured import prune_unstructured
from prunekit.utils.table import markdown_table


def _time(fn, repeats: int, setup=None):
    """(first, median) wall time of ``fn(setup())`` over ``repeats`` runs; returns the last result too."""
    times, out = [], None
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        t = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - t)
    return times[0], statistics.median(times), out


def _torch_global(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=sparsity)
    names = {m: n for n, m in model.named_modules()}
    return {f"{names[m]}.weight": m.weight_mask.bool() for m, _ in params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-threshold", type=float, default=0.05)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*removes every weight")  # random init: GP empties fc at 0.8
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=1000).eval()
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    print(f"resnet50: {n:,} conv+fc weights, sparsity {args.sparsity}, {torch.get_num_threads()} threads")

    def gp(m, apply):
        return prune_unstructured(m, "gp", args.sparsity, apply=apply, allow_empty_layers=True)

    ours_first, ours_best, res = _time(lambda _: gp(model, False), args.repeats)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh(_=None):
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        return m

    apply_first, apply_best, _ = _time(lambda m: gp(m, True), args.repeats, fresh)
    torch_first, torch_best, tmasks = _time(lambda m: _torch_global(m, args.sparsity), args.repeats, fresh)

    # same masks except at ties
    t = res.report.thresholds["global"]
    params = dict(model.named_parameters())
    diff = tie_diff = 0
    for name, m in res.masks.items():
        d = m != tmasks[name]
        diff += int(d.sum())
        tie_diff += int((d & (params[name].detach().abs() == t)).sum())
    ours_pruned = sum(int((~m).sum()) for m in res.masks.values())
    torch_pruned = sum(int((~m).sum()) for m in tmasks.values())

    gpmt_first, gpmt_best, g = _time(
        lambda m: prune_unstructured(m, "gpmt", args.sparsity, min_threshold=args.min_threshold),
        args.repeats, fresh)
    rep = g.report
    clamped = sum(1 for a, b in zip(rep.gp_layers, rep.layers) if a.pruned != b.pruned and b.kept == rep.min_weights)

    rows = [
        ["prunekit gp (masks only)", f"{ours_first:.3f}", f"{ours_best:.3f}", f"{torch_best / ours_best:.1f}x"],
        ["prunekit gp (masks + zero weights)", f"{apply_first:.3f}", f"{apply_best:.3f}",
         f"{torch_best / apply_best:.1f}x"],
        ["torch global_unstructured L1", f"{torch_first:.3f}", f"{torch_best:.3f}", "1.0x"],
        [f"prunekit gpmt (MT {args.min_threshold}%)", f"{gpmt_first:.3f}", f"{gpmt_best:.3f}", "-"],
    ]
    print(markdown_table(["method", "first run s", "median s", "speed-up vs torch"], rows))
    print(f"pruned: prunekit {ours_pruned:,} (target round(p*N) = {res.report.target_pruned:,}), torch "
          f"{torch_pruned:,}; masks differ at {diff} positions, {tie_diff} of them ties at |w| = {t:.6e}")
    print(f"gpmt: m = {rep.min_weights:,} weights kept per layer at least; {rep.total_pruned:,} pruned "
          f"(sparsity {rep.sparsity:.4f}); {clamped} layers raised to the minimum; smallest layer kept = "
          f"{min(lay.kept for lay in rep.layers):,}; GP alone left "
          f"{sum(1 for a in rep.gp_layers if a.kept < rep.min_weights)} layers below it")


if __name__ == "__main__":
    main()
