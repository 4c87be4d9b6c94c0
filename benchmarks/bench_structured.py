"""Benchmark (not a test): does structured pruning deliver measured CPU speed-ups, and how do they compare with the
FLOPs reduction?

Cases: L1-filter resnet56-A, resnet56-B, vgg16-A (on vgg16_l1), and network slimming of preresnet164 at 40 %.
No trained model exists here, so every model gets random BN statistics first (``randomize_bn``: distinct random
|γ| play the role of a sparsity-trained network; the kept channels are arbitrary but the shapes are the point).
Latency = median wall-clock of one forward pass of a batch of 32x32 CIFAR-shaped inputs on CPU, for batch 1 and 64,
interleaving dense and pruned measurements; each number is the best (minimum) of ``--rounds`` medians, the most
robust estimate on a shared machine (other processes only ever add time). Default one thread, for the pruning
too. Prune time: the second of two calls (tracing, ranking, slicing and the exactness check); max |err|: the pruned
model against the dense one whose consumers ignore the removed channels (``removal_error``).

Run: ``python benchmarks/bench_structured.py [--repeats 20] [--threads N] [--batch-sizes 1,64]``
"""
from __future__ import annotations

import argparse
import time

import torch

from prunekit.metrics import count_flops, count_params, measure_latency
from prunekit.models import create_model
from prunekit.pruning.structured import prune_l1_filter
from prunekit.pruning.structured.slimming import prune_slimming
from prunekit.pruning.structured.verify import randomize_bn, removal_error
from prunekit.utils.table import markdown_table

SIZE = (3, 32, 32)
CASES = [
    ("resnet56-A", "resnet56", lambda m: prune_l1_filter(m, plan="resnet56-A")),
    ("resnet56-B", "resnet56", lambda m: prune_l1_filter(m, plan="resnet56-B")),
    ("vgg16-A", "vgg16_l1", lambda m: prune_l1_filter(m, plan="vgg16-A")),
    ("slimming 40%", "preresnet164", lambda m: prune_slimming(m, 0.4)),
]


def _latency(model: torch.nn.Module, bs: int, repeats: int, threads: int | None) -> float:
    """Median of ``repeats`` timed passes."""
    return measure_latency(model, SIZE, batch_size=bs, warmup=2, repeats=repeats, threads=threads).median_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating dense/pruned measurement rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--only", default=None, help="comma list of case names to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # pruning too: on a shared machine extra threads only wait
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for label, name, fn in CASES:
        if only and label not in only:
            continue
        torch.manual_seed(0)
        dense = randomize_bn(create_model(name), seed=0).eval()
        fn(dense)  # warm-up: lazy imports, allocator
        t0 = time.perf_counter()
        res = fn(dense)
        prune_s = time.perf_counter() - t0
        pruned = res.model.eval()
        err = removal_error(dense, res, SIZE)  # vs the dense model with the removed inputs zeroed
        fd = count_flops(dense, (1, *SIZE)).macs
        fp = count_flops(pruned, (1, *SIZE)).macs
        row = [label, count_params(dense), count_params(pruned), fd / fp]
        for bs in sizes:
            ld, lp = [], []
            for _ in range(args.rounds):  # interleave so that load changes hit both
                ld.append(_latency(dense, bs, args.repeats, args.threads))
                lp.append(_latency(pruned, bs, args.repeats, args.threads))
            d, p = min(ld), min(lp)
            row += [d, p, d / p]
        row += [prune_s, f"{err:.1e}"]
        rows.append(row)
        print(f"done {label}", flush=True)
    headers = ["case", "params dense", "params pruned", "MACs ratio"]
    for bs in sizes:
        headers += [f"ms b{bs} dense", f"ms b{bs} pruned", f"speed-up b{bs}"]
    headers += ["prune s", "max |err|"]
    print()
    print(f"CPU, torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, input {SIZE}, "
          f"best of {args.rounds} medians of {args.repeats} passes")
    print(markdown_table(headers, rows, precision=3))


if __name__ == "__main__":
    main()
