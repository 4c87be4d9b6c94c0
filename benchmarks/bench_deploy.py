"""Benchmark (not a test): measured speed-up of pruned models on the runtimes they are deployed on, against the MACs
they remove.

Cases: L1-filter resnet56-A / resnet56-B / vgg16-A (prunekit's named plans), network slimming at 40% of vgg19,
preresnet164 and densenet40, and resnet50 (the torchvision-style ImageNet model at 3x224x224) with 30% of the
channels of every prunable group removed (``prune_structured(ratio=0.3)``, L1). Weights are random (latency does
not depend on them); every BatchNorm gets γ, β and running statistics from a seeded generator (``randomize_bn``:
distinct |γ| stand in for a sparsity-trained network, so slimming has a spread to threshold).

For every case, runtime (``eager``, ``compile`` = ``torch.compile``, ``onnxruntime``) and batch size, the dense and
the pruned model are timed interleaved pass by pass (:func:`~prunekit.pruning.structured.latency_target.measure_pair`:
both see the same load) and the speed-up is the median per-pass ratio dense/pruned; the table shows it with its
ratio to the MACs ratio (``speed-up (÷MACs)``; 1.00 = the full MACs reduction realised). The pruned model is
deployed as :func:`prunekit.deploy.fold_selections` makes it: selections moved before their BatchNorm for eager
and compile (``absorb=False``), the export default (``absorb="auto"``) for ONNX Runtime. A runtime that does not
work here shows ``n/a (reason)``. ``ORT graph MACs ratio``: dense MACs over the MACs of the graph ONNX Runtime runs
(absorbed selections and padding put some back). Padding is the export's: ONNX Runtime gets the pruned widths
zero-padded to multiples of 8 (exact; ``prunekit.export``'s ONNX default), eager and compile the widths as pruned;
``--pad-to N`` pads every runtime to N (``1``: none). ``--round-to N``: the slimming and ratio cases prune with
``round_to=N`` (kept widths multiples of N; the L1 plans fix their widths).

Run: ``python benchmarks/bench_deploy.py [--cases resnet56-A,...] [--runtimes eager,compile,onnxruntime]
[--batch-sizes 1,32] [--threads 1] [--repeats 8] [--round-to N] [--pad-to N] [--json out.json]``; ``--quick``:
resnet56-A only, batch 1 and 2, eager and onnxruntime, 3 passes (a smoke run).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any, Callable

import torch
import torch.nn as nn

from prunekit.deploy import default_pad_to, fold_selections
from prunekit.pruning.structured.pad import pad_widths
from prunekit.errors import PrunekitError
from prunekit.metrics import count_flops
from prunekit.models import create_model, model_info
from prunekit.pruning.structured import prune_l1_filter, prune_structured
from prunekit.pruning.structured.latency_target import measure_pair
from prunekit.pruning.structured.slimming import prune_slimming
from prunekit.pruning.structured.verify import randomize_bn
from prunekit.utils.table import markdown_table

RUNTIMES = ("eager", "compile", "onnxruntime")


Prune = Callable[[nn.Module, tuple[int, ...], int], nn.Module]  # (dense, input size, round_to) -> pruned


def _l1(plan: str) -> Prune:
    return lambda m, size, round_to: prune_l1_filter(m, plan=plan).model  # the paper's plan fixes the widths


def _slim(m: nn.Module, size: tuple[int, ...], round_to: int) -> nn.Module:
    return prune_slimming(m, 0.4, round_to=round_to).model


def _ratio(m: nn.Module, size: tuple[int, ...], round_to: int) -> nn.Module:
    return prune_structured(m, input_size=size, ratio=0.3, round_to=round_to).model


# label -> (zoo model, classes, pruning)
CASES: dict[str, tuple[str, int, Prune]] = {
    "resnet56-A": ("resnet56", 10, _l1("resnet56-A")),
    "resnet56-B": ("resnet56", 10, _l1("resnet56-B")),
    "vgg16-A": ("vgg16_l1", 10, _l1("vgg16-A")),
    "vgg19 slim 40%": ("vgg19", 10, _slim),
    "preresnet164 slim 40%": ("preresnet164", 10, _slim),
    "densenet40 slim 40%": ("densenet40", 10, _slim),
    "resnet50 30% channels": ("resnet50", 1000, _ratio),
    "lenet5 30% channels": ("lenet5", 10, _ratio),  # a tiny case for smoke tests (not in the default set)
}
DEFAULT = [c for c in CASES if not c.startswith("lenet5")]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:80]


def build_case(label: str, round_to: int = 1) -> tuple[nn.Module, nn.Module, tuple[int, ...], torch.Generator]:
    """``(dense, pruned, input size, generator)`` of a case: seeded random weights and BN statistics."""
    name, classes, prune = CASES[label]
    size = tuple(model_info(name).input_size)
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # fresh weights from a fixed seed without touching the caller's RNG
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        dense = randomize_bn(create_model(name, num_classes=classes, in_channels=size[0]), seed=0).eval()
    return dense, prune(dense, size, round_to).eval(), size, g


def run_case(label: str, runtimes: list[str], sizes: list[int], repeats: int, warmup: int,
             threads: int, pad_to: int | None = None, round_to: int = 1) -> dict[str, Any]:
    """Prune one case and time it on every runtime and batch size; a JSON-able dict."""
    name = CASES[label][0]
    t0 = time.perf_counter()
    dense, pruned, size, g = build_case(label, round_to)
    prune_s = time.perf_counter() - t0
    macs_d = count_flops(dense, (1, *size)).macs
    macs_p = count_flops(pruned, (1, *size)).macs
    macs_ratio = macs_d / macs_p
    example = torch.randn((2, *size), generator=g)
    # padding as the export does: ONNX Runtime gets its default (8 for a pruned model), the torch runtimes none;
    # --pad-to N: every runtime gets N (exact)
    pads = {"torch": pad_to or 1, "onnxruntime": pad_to or default_pad_to(pruned, "onnx")}
    shaped = {k: pruned if v == 1 else pad_widths(pruned, v, size) for k, v in pads.items()}
    deployed = {"eager": fold_selections(shaped["torch"], example, absorb=False),
                "onnxruntime": fold_selections(shaped["onnxruntime"], example, absorb="auto")}
    deployed["compile"] = deployed["eager"]
    macs_ort = count_flops(deployed["onnxruntime"], (1, *size)).macs  # absorbed selections / padding add MACs back
    out: dict[str, Any] = {"case": label, "model": name, "input_size": list(size), "macs_dense": macs_d,
                           "macs_pruned": macs_p, "macs_ratio": macs_ratio, "prune_s": round(prune_s, 3),
                           "macs_deployed_onnxruntime": macs_ort, "round_to": round_to, "pad_to": pads,
                           "selections": [d["action"] for d in deployed["onnxruntime"].prunekit_folded],
                           "results": {}}
    for rt in runtimes:
        for bs in sizes:
            key = f"{rt}@{bs}"
            t1 = time.perf_counter()
            try:
                d_ms, p_ms, ratio = measure_pair(dense, deployed[rt], (bs, *size), repeats=repeats, warmup=warmup,
                                                 threads=threads, runtime=rt)
                speed = 1.0 / ratio
                out["results"][key] = {"dense_ms": d_ms, "pruned_ms": p_ms, "speedup": speed,
                                       "of_macs": speed / macs_ratio, "seconds": round(time.perf_counter() - t1, 1)}
            except PrunekitError as exc:
                out["results"][key] = {"error": _short(exc)}
            print(f"  {label} {key}: {out['results'][key]}", file=sys.stderr, flush=True)
    return out


def table(results: list[dict[str, Any]], runtimes: list[str], sizes: list[int]) -> str:
    """The markdown table: case, MACs ratio, speed-up (÷MACs ratio) per runtime and batch size."""
    headers = ["case", "MACs ratio", "ORT graph MACs ratio"] + [f"{rt} b{bs}" for rt in runtimes for bs in sizes]
    rows = []
    for r in results:
        row: list[Any] = [r["case"], f"{r['macs_ratio']:.2f}", f"{r['macs_dense'] / r['macs_deployed_onnxruntime']:.2f}"]
        for rt in runtimes:
            for bs in sizes:
                v = r["results"].get(f"{rt}@{bs}", {"error": "not run"})
                row.append(f"n/a ({v['error']})" if "error" in v else f"{v['speedup']:.2f} ({v['of_macs']:.2f})")
        rows.append(row)
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=None, help=f"comma list of {', '.join(CASES)} (default: all but lenet5)".replace("%", "%%"))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=8, help="timed passes of each model per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet56-A, batch 1 and 2, eager and "
                                                         "onnxruntime, 3 passes")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--round-to", type=int, default=1,
                    help="slimming and ratio cases: prune with round_to=N (kept widths multiples of N); the "
                         "L1 plans fix their widths")
    ap.add_argument("--pad-to", type=int, default=None,
                    help="zero-pad the pruned widths to multiples of N on every runtime (exact; export --pad-to; "
                         "default: as the export, 8 for onnxruntime, none for eager/compile; 1: never)")
    args = ap.parse_args(argv)
    cases = args.cases.split(",") if args.cases else (["resnet56-A"] if args.quick else DEFAULT)
    runtimes = args.runtimes.split(",") if not args.quick or "--runtimes" in (argv or sys.argv) \
        else ["eager", "onnxruntime"]
    sizes = [int(b) for b in args.batch_sizes.split(",")] if not args.quick or "--batch-sizes" in (argv or sys.argv) \
        else [1, 2]
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; valid: {', '.join(CASES)}")
    for rt in runtimes:
        if rt not in RUNTIMES:
            ap.error(f"unknown runtime {rt!r}; valid: {', '.join(RUNTIMES)}")
    torch.set_num_threads(args.threads)  # pruning too: on a shared machine extra threads only wait
    t0 = time.perf_counter()
    results = [run_case(c, runtimes, sizes, repeats, warmup, args.threads, args.pad_to, args.round_to)
               for c in cases]
    head = (f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
            f"{repeats} interleaved passes per model; cell: speed-up over dense (speed-up / MACs ratio)"
            + (f"; slimming/ratio cases pruned with round_to={args.round_to}" if args.round_to > 1 else "")
            + (f"; widths padded to multiples of {args.pad_to} on every runtime" if args.pad_to else
               "; onnxruntime widths padded to multiples of 8 (the export default), eager/compile not"))
    print(head)
    print(table(results, runtimes, sizes))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"header": head, "threads": args.threads, "repeats": repeats, "runtimes": runtimes,
                       "batch_sizes": sizes, "cases": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
