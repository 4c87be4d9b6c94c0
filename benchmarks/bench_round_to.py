"""Benchmark (not a test): how ``--round-to`` shapes ONNX Runtime speed of a structured prune.

    python benchmarks/bench_round_to.py                      # resnet56, ratio 0.3, round_to 1/8/16, batch 32

A fresh model is pruned with ``prune_structured(ratio=..., round_to=R)`` for each R, exported with
``prunekit.export`` (channel selections folded), and timed in ONNX Runtime (1 thread) against the dense model's
export: median of ``--repeats`` runs each, dense and pruned timed one after the other. Needs ``prunekit[onnx]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

import prunekit
from prunekit.pruning.structured import prune_structured


def ort_ms(model: torch.nn.Module, size: tuple[int, int, int], batch: int, repeats: int) -> float:
    """Median ms of one ONNX Runtime run of ``model``'s export at ``batch`` (1 thread)."""
    import onnxruntime as ort

    path = prunekit.export(model, os.path.join(tempfile.mkdtemp(), "m.onnx"), format="onnx", input_size=size).path
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, *size)).astype(np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(2):
        sess.run(None, {name: x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--round-to", default="1,8,16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense = prunekit.create_model(args.model).eval()
    size = tuple(prunekit.model_info(args.model).input_size)
    dense_macs = prunekit.count_flops(dense, (1, *size)).macs
    print(f"{args.model} ratio {args.ratio}, ONNX Runtime batch {args.batch}, 1 thread, median of {args.repeats}")
    print("| round_to | MACs ratio | dense ms | pruned ms | speed-up | speed-up / MACs ratio |")
    print("|----------|------------|----------|-----------|----------|-----------------------|")
    for r in (int(v) for v in args.round_to.split(",")):
        pruned = prune_structured(dense, ratio=args.ratio, input_size=size, round_to=r).model.eval()
        ratio = dense_macs / prunekit.count_flops(pruned, (1, *size)).macs
        d, p = ort_ms(dense, size, args.batch, args.repeats), ort_ms(pruned, size, args.batch, args.repeats)
        print(f"| {r:<8} | {ratio:<10.2f} | {d:<8.1f} | {p:<9.1f} | {d / p:<8.2f} | {d / p / ratio:<21.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
