"""Benchmark (not a test): does zero-padding pruned widths to multiples of N (``export --pad-to N``) pay off?

For each case of ``bench_deploy.py`` the pruned model is deployed twice, as it is and zero-padded to multiples of
``--pad-to`` (:func:`prunekit.pruning.structured.pad.pad_widths`: exact, the padded channels are zeros), both with
channel selections folded as the export does (``absorb="auto"``). The two are timed interleaved pass by pass
(:func:`~prunekit.pruning.structured.latency_lut.measure_pair`) on each runtime and batch size; a cell is the
median per-pass speed-up of the padded model over the unpadded one (> 1: padding is faster). ``MACs added``: the
padded graph's MACs over the unpadded graph's.

Run: ``python benchmarks/bench_pad.py [--cases ...] [--runtimes onnxruntime,eager] [--batch-sizes 1,32]
[--pad-to 8] [--round-to 1] [--repeats 8] [--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import torch

from bench_deploy import CASES, DEFAULT, build_case
from prunekit.deploy import fold_selections
from prunekit.errors import PrunekitError
from prunekit.metrics import count_flops
from prunekit.pruning.structured.latency_lut import measure_pair
from prunekit.pruning.structured.pad import pad_widths
from prunekit.utils.table import markdown_table


def run(label: str, runtimes: list[str], sizes: list[int], pad_to: int, round_to: int, repeats: int,
        warmup: int) -> dict[str, Any]:
    """Padded against unpadded for one case: a JSON-able dict."""
    _, pruned, size, g = build_case(label, round_to)
    example = torch.randn((2, *size), generator=g)
    padded = pad_widths(pruned, pad_to, size)
    plain_d, padded_d = (fold_selections(m, example, absorb="auto") for m in (pruned, padded))
    macs = [count_flops(m, (1, *size)).macs for m in (plain_d, padded_d)]
    out: dict[str, Any] = {"case": label, "groups_padded": len(padded.prunekit_padded),
                           "groups_skipped": len(padded.prunekit_pad_skipped), "macs_unpadded": macs[0],
                           "macs_padded": macs[1], "results": {}}
    for rt in runtimes:
        for bs in sizes:
            try:
                a_ms, b_ms, ratio = measure_pair(plain_d, padded_d, (bs, *size), repeats=repeats, warmup=warmup,
                                                 threads=1, runtime=rt)
                out["results"][f"{rt}@{bs}"] = {"unpadded_ms": a_ms, "padded_ms": b_ms, "speedup": 1.0 / ratio}
            except PrunekitError as exc:
                out["results"][f"{rt}@{bs}"] = {"error": str(exc).splitlines()[0][:80]}
            print(f"  {label} {rt}@{bs}: {out['results'][f'{rt}@{bs}']}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=None, help="comma list of bench_deploy cases (default: all but lenet5)")
    ap.add_argument("--runtimes", default="onnxruntime,eager")
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--pad-to", type=int, default=8)
    ap.add_argument("--round-to", type=int, default=1, help="prune the slimming/ratio cases with round_to=N")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cases = args.cases.split(",") if args.cases else DEFAULT
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; valid: {', '.join(CASES)}")
    runtimes, sizes = args.runtimes.split(","), [int(b) for b in args.batch_sizes.split(",")]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = [run(c, runtimes, sizes, args.pad_to, args.round_to, args.repeats, args.warmup) for c in cases]
    head = (f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, {args.repeats} "
            f"interleaved passes; cell: speed-up of the model padded to multiples of {args.pad_to} over the unpadded "
            f"one (both with selections folded as the export does)"
            + (f"; slimming/ratio cases pruned with round_to={args.round_to}" if args.round_to > 1 else ""))
    rows = [[r["case"], r["groups_padded"], f"{r['macs_padded'] / r['macs_unpadded']:.3f}"]
            + [f"{v['speedup']:.2f}" if "speedup" in v else f"n/a ({v['error']})"
               for v in (r["results"][f"{rt}@{bs}"] for rt in runtimes for bs in sizes)] for r in results]
    print(head)
    print(markdown_table(["case", "groups padded", "MACs added"] + [f"{rt} b{bs}" for rt in runtimes for bs in sizes],
                         rows))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"header": head, "cases": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
