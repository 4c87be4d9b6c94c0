"""``prunekit export``: a deployable ONNX / TorchScript / torch.export file of any checkpoint, verified and timed.

Writes ``model.onnx`` / ``model.pt`` / ``model.pt2`` and ``summary.json`` into ``--out`` and prints one row per
format: file size, max |runtime - eager| on random input, latency at each ``--latency-batch-sizes`` in PyTorch
eager and in the runtime (ONNX Runtime, ``torch.jit.load``, ``torch.export.load(...).module()``).
"""
from __future__ import annotations

import argparse

from ..errors import PrunekitError
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import add_common_args, data_facts, model_from_args, out_dir, resolve_input_size, standard_fields


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, dataset_default=None)
    g = parser.add_argument_group("export options")
    g.add_argument("--format", default="onnx",
                   help="onnx, torchscript, exported-program, a comma-separated list of them, or all (default onnx)")
    g.add_argument("--input-size", default=None,
                   help="C,H,W of the exported input (default: --dataset's image size, else the model's natural "
                        "input, e.g. 3,32,32 for the CIFAR zoo)")
    g.add_argument("--fold-bn", action="store_true",
                   help="fold every BatchNorm into the conv that feeds it (checked equal to 1e-5)")
    g.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    g.add_argument("--latency-batch-sizes", default="1,32", help="batch sizes timed (default 1,32; '' = none)")
    g.add_argument("--latency-threads", type=int, default=None,
                   help="CPU threads for both PyTorch eager and the runtime while timing (default: torch's current)")
    g.add_argument("--latency-repeats", type=int, default=30, help="timed passes per measurement (default 30)")


def _formats(text: str) -> list[str]:
    from ..deploy import FORMATS

    names = list(FORMATS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise PrunekitError(f"--format must be {', '.join(FORMATS)}, a comma-separated list of them, or all; "
                            f"got {text!r}")
    return list(dict.fromkeys(names))


def _batches(text: str) -> list[int]:
    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        vals = [0]
    if any(v < 1 for v in vals):
        raise PrunekitError(f"--latency-batch-sizes must be positive integers, got {text!r}")
    return vals


def run(args: argparse.Namespace) -> int:
    from ..deploy import export, require_onnx

    formats = _formats(args.format)
    batches = _batches(args.latency_batch_sizes)
    if args.latency_repeats < 1:
        raise PrunekitError(f"--latency-repeats must be >= 1, got {args.latency_repeats}")
    if "onnx" in formats:
        require_onnx()  # before anything is loaded or written
    data = data_facts(args.dataset)
    ckpt = model_from_args(args, data)
    model = ckpt.model
    name = ckpt.meta.get("model") or getattr(model, "prunekit_name", None) or \
        (getattr(model, "prunekit_factory", None) or {}).get("target") or type(model).__name__
    if not args.checkpoint:
        print(f"note: no --checkpoint: exporting a freshly initialised {name} (seed {args.seed})")
    if args.device not in ("auto", "cpu"):
        print(f"note: export runs on the CPU (--device {args.device} ignored)")
    size = resolve_input_size(args, data, model)
    out = out_dir(args)
    results = [export(model, out, fmt, size, fold_bn=args.fold_bn, latency_batch_sizes=batches,
                      latency_threads=args.latency_threads, repeats=args.latency_repeats, opset=args.opset,
                      seed=args.seed) for fmt in formats]
    headers = ["format", "file", "size MB", "max abs diff", "runtime"]
    for b in batches:
        headers += [f"b{b} eager ms", f"b{b} runtime ms"]
    rows = []
    for r in results:
        row = [r.format, r.path.rsplit("/", 1)[-1], f"{r.file_bytes / 1e6:.2f}", f"{r.max_abs_diff:.2e}", r.runtime]
        for b in batches:
            lat = r.latency[b]
            row += [f"{lat['eager_ms']:.3f}", "-" if lat["runtime_ms"] is None else f"{lat['runtime_ms']:.3f}"]
        rows.append(row)
    summary = {"command": "export", "checkpoint": args.checkpoint, "model": name, "cfg": ckpt.meta.get("cfg"),
               "input_size": list(size), "fold_bn": bool(args.fold_bn), "formats": formats,
               "latency_batch_sizes": batches, "latency_threads": args.latency_threads,
               "exports": [r.as_dict() for r in results], **standard_fields(model, size)}
    write_json(out / "summary.json", summary)
    print(markdown_table(headers, rows))
    print(f"input {list(size)}, {results[0].latency_threads} CPU thread(s) for eager and runtime; max abs diff: "
          "exported file vs PyTorch eager on random input")
    for note in dict.fromkeys(n for r in results for n in r.notes):
        print(f"note: {note}")
    print(f"wrote {', '.join(r.path for r in results)} and {out / 'summary.json'}")
    return 0
