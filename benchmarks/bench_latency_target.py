"""Benchmark (not a test): latency-targeted structured pruning (:func:`prune_to_latency`) on this machine.

Cases (default): ``resnet50`` at 3x224x224 (1000 classes), batch 1; ``resnet56`` at 3x32x32, batch 1 and batch
32; all with ``--threads`` torch threads (default 1), ``--runtime`` (default eager) on ``--device``, L1 importance
and ``--target`` 0.6 of the dense model's measured latency. Every model is freshly initialised (seed 0): the
latency of a pruned architecture does not depend on the weights, only the choice of channels does.

For each case the pruned model is measured again twice by this script, after the prune (each measurement: dense
and pruned interleaved pass by pass, ``2 × --repeats`` passes each; measured/target is the median per-pass
pruned/dense ratio over the target fraction; the ms columns are each model's median),
and the table reports the target (ms and fraction of the
dense latency prune_to_latency measured), both measurements, measured/target, whether both are within 5% of the
target, MACs and params before/after, the candidates measured by the correction step and the prune time. A target
the prunable groups cannot reach (max_group_ratio 0.9) is reported with the best reachable latency.

Run: ``python benchmarks/bench_latency_target.py [--cases resnet50:224:1,resnet56:32:1,resnet56:32:32]
[--target 0.6] [--threads 1] [--repeats 10] [--runtime eager|compile|onnxruntime] [--device cpu|cuda]``
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.pruning.structured import prune_to_latency
from prunekit.pruning.structured.latency_target import measure_pair
from prunekit.utils.table import markdown_table

DEFAULT_CASES = "resnet50:224:1,resnet56:32:1,resnet56:32:32"


def _case(text: str) -> tuple[str, int, int]:
    name, side, batch = text.split(":")
    return name, int(side), int(batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=DEFAULT_CASES, help="model:side:batch,... (default %(default)s)")
    ap.add_argument("--target", default="0.6", help="fraction of the dense latency or e.g. 12ms (default 0.6)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10, help="timed passes per measurement (median)")
    ap.add_argument("--runtime", default="eager", help="eager (default), compile or onnxruntime")
    ap.add_argument("--device", default=None, help="device to time on (default: cpu)")
    args = ap.parse_args()
    target = float(args.target) if "s" not in args.target else args.target
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads available, measuring with {args.threads}")
    rows = []
    for text in args.cases.split(","):
        name, side, batch = _case(text)
        classes = 1000 if side >= 224 else 10
        model = create_model(name, num_classes=classes).eval()
        size = (3, side, side)
        t0 = time.perf_counter()
        try:
            res = prune_to_latency(model, input_size=size, target=target, batch_size=batch, threads=args.threads,
                                   repeats=args.repeats, runtime=args.runtime, device=args.device)
        except PrunekitError as e:
            print(f"{name} {side}px batch {batch}: {e}")
            rows.append([name, f"3x{side}x{side}", batch, "-", str(args.target), "not reachable", "-", "-", "no",
                         "-", "-", "-", round(time.perf_counter() - t0, 1)])
            continue
        seconds = time.perf_counter() - t0
        lt = res.info["latency_target"]
        meas, dense = [], []
        ratio = []
        for _ in range(2):
            # dense and pruned interleaved pass by pass (the machine is shared; its speed drifts); judged by the
            # median per-pass ratio against the target fraction
            d, m, r = measure_pair(model, res.model, (batch, *size), repeats=2 * args.repeats, warmup=3,
                                   threads=args.threads, runtime=args.runtime, device=args.device)
            dense.append(d)
            meas.append(m)
            ratio.append(r / lt["target_fraction"])
        ok = "yes" if max(ratio) <= 1.05 else ("one of two" if min(ratio) <= 1.05 else "no")
        rows.append([name, f"3x{side}x{side}", batch, f"{lt['dense_ms']:.2f}",
                     f"{lt['target_ms']:.2f} ({lt['target_fraction']:.2f})",
                     f"{lt['measured_ms'][0]:.2f}, {lt['measured_ms'][1]:.2f}",
                     f"{meas[0]:.2f} / {dense[0]:.2f}, {meas[1]:.2f} / {dense[1]:.2f}",
                     f"{ratio[0]:.3f}, {ratio[1]:.3f}", ok,
                     f"{lt['macs_before'] / 1e6:.1f} -> {lt['macs_after'] / 1e6:.1f}",
                     f"{lt['params_before'] / 1e6:.3f} -> {lt['params_after'] / 1e6:.3f}",
                     f"{len(lt['iterations'])} (LUT {lt['lut_timings']})", round(seconds, 1)])
        print(f"{name} {side}px batch {batch}: uncovered {lt['uncovered_ms']}; final checks {lt['final_checks']}")
        for it in lt["iterations"]:
            ratio_it = "" if it["dense_alongside_ms"] is None else f" ratio {it['measured_ms'] / lt['dense_ms']:.3f}"
            print(f"  k={it['k']:6d} predicted {it['predicted_ms']:9.3f} measured {it['measured_ms']:9.3f} ms"
                  f"{ratio_it} {'feasible' if it['feasible'] else 'infeasible'}")
    print()
    print(markdown_table(["model", "input", "batch", "dense ms", "target ms (fraction)",
                          "measured ms (prune_to_latency)", "again: pruned / dense ms (x2)", "measured/target (again)",
                          "within 5%", "MMACs", "Mparams", "candidates (layer timings)", "prune s"], rows))


if __name__ == "__main__":
    main()
