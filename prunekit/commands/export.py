"""``prunekit export``: a deployable ONNX / TorchScript / torch.export file of any checkpoint, verified and timed.

Writes ``model.onnx`` / ``model.pt`` / ``model.pt2`` and ``summary.json`` into ``--out`` and prints one row per
format: file size, max |runtime - eager| on random input, latency at each ``--latency-batch-sizes`` in PyTorch
eager and in the runtime (ONNX Runtime, ``torch.jit.load``, ``torch.export.load(...).module()``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunekitError
from ..options import CommonOptions, LatencyOptions, normalize_choice, option, redefault
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import data_facts, latency_cell, model_from_args, out_dir, resolve_input_size, standard_fields
from .info import input_size_option

log = logging.getLogger(__name__)


@dataclass
class ExportOptions(CommonOptions):
    """Options of ``prunekit export``."""

    COMMAND: ClassVar[str] = "export"
    dataset: str | None = redefault(CommonOptions, "dataset", None)
    format: list[str] = option(["onnx"], help="onnx, torchscript, exported-program, several of them, or all",
                               many=True, group="export options")
    input_size: str | None = input_size_option("C,H,W of the exported input (default: --dataset's image size, else "
                                               "the model's natural input, e.g. 3,32,32 for the CIFAR zoo)")
    fold_bn: bool = option(False, bool, "fold every BatchNorm into the conv that feeds it (checked equal to 1e-5)",
                           group="export options")
    opset: int | None = option(None, int, "ONNX opset (default: the exporter's)", low=7, high=100,
                               group="export options")
    pad_to: int | None = option(None, int, "zero-pad pruned widths to multiples of N first (exact; default: 8 for "
                                "onnx of a structurally pruned model, ONNX Runtime's CPU conv block; 1: never)",
                                low=1, high=4096, group="export options")
    no_fold_selections: bool = option(False, bool, "keep channel selections as gathers (default: absorbed into "
                                      "the conv that reads them, or moved before their BatchNorm; exact)",
                                      group="export options")
    latency_batch_sizes: list[int] = option([1, 32], int, "batch sizes timed ('' = none)", many=True, low=1,
                                            high=65536, group="export options")
    latency_threads: int | None = option(None, int, "CPU threads for both PyTorch eager and the runtime while timing "
                                         "(default: torch's current)", low=1, high=4096, group="export options")
    latency_repeats: int = option(100, int, "timed passes per runtime and batch size at most", low=1,
                                  high=1_000_000, group="export options")
    latency_budget: float = redefault(LatencyOptions, "latency_budget", 3.0, group="export options")


OPTIONS = ExportOptions


def _formats(names: list[str]) -> list[str]:
    from ..deploy import FORMATS

    names = list(FORMATS) if names == ["all"] else [normalize_choice(n, FORMATS) or n for n in names]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise PrunekitError(f"--format must be {', '.join(FORMATS)}, a comma-separated list of them, or all; "
                            f"got {','.join(names)!r}")
    return list(dict.fromkeys(names))


def execute(opts: ExportOptions) -> int:
    """Export ``opts.checkpoint`` (or a fresh ``opts.model``) in every ``opts.format``; verify and time each."""
    from ..deploy import export, require_onnx
    from ..metrics.latency import Speedup

    formats = _formats(opts.format)
    batches = list(opts.latency_batch_sizes)
    if "onnx" in formats:
        require_onnx()  # before anything is loaded or written
    data = data_facts(opts.dataset)
    ckpt = model_from_args(opts, data)
    model = ckpt.model
    name = ckpt.meta.get("model") or getattr(model, "prunekit_name", None) or \
        (getattr(model, "prunekit_factory", None) or {}).get("target") or type(model).__name__
    if not opts.checkpoint:
        print(f"note: no --checkpoint: exporting a freshly initialised {name} (seed {opts.seed})")
    if opts.device not in ("auto", "cpu"):
        print(f"note: export runs on the CPU (--device {opts.device} ignored)")
    size = resolve_input_size(opts, data, model)
    out = out_dir(opts)
    results = [export(model, out, fmt, size, fold_bn=opts.fold_bn, latency_batch_sizes=batches,
                      latency_threads=opts.latency_threads, repeats=opts.latency_repeats,
                      latency_budget=opts.latency_budget, opset=opts.opset,
                      seed=opts.seed, fold_select=not opts.no_fold_selections, pad_to=opts.pad_to)
               for fmt in formats]
    headers = ["format", "file", "size MB", "max abs diff", "runtime"]
    for b in batches:
        headers += [f"b{b} eager ms (median)", f"b{b} runtime ms (median)"]
    rows = []
    for r in results:
        row = [r.format, r.path.rsplit("/", 1)[-1], f"{r.file_bytes / 1e6:.2f}", f"{r.max_abs_diff:.2e}", r.runtime]
        for b in batches:
            lat = r.latency[b]
            row += [latency_cell(lat["eager"]), latency_cell(lat["runtime"])]
        rows.append(row)
    summary = {"command": "export", "checkpoint": opts.checkpoint, "model": name, "cfg": ckpt.meta.get("cfg"),
               "input_size": list(size), "fold_bn": bool(opts.fold_bn), "formats": formats,
               "latency_batch_sizes": batches, "latency_threads": opts.latency_threads,
               "exports": [r.as_dict() for r in results], **standard_fields(model, size)}
    write_json(out / "summary.json", summary)
    print(markdown_table(headers, rows))
    print(f"input {list(size)}, {results[0].latency_threads} CPU thread(s) for eager and runtime; max abs diff: "
          "exported file vs PyTorch eager on random input")
    for r in results:
        for b in batches:
            lat = r.latency[b]
            if lat["skipped"]:
                print(f"latency {r.format}, batch {b}: {lat['skipped']} (--latency-budget)")
            elif lat["speedup"]:
                sp = Speedup(**lat["speedup"])
                print(f"latency {r.format}, batch {b}, eager and {r.runtime} timed in turn: "
                      f"{sp.describe(r.runtime)}")
    for note in dict.fromkeys(n for r in results for n in r.notes):
        print(f"note: {note}")
    print(f"wrote {', '.join(r.path for r in results)} and {out / 'summary.json'}")
    return 0
