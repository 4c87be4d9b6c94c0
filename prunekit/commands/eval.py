"""``prunekit eval``: accuracy, parameters, FLOPs and measured latency of a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunekitError
from ..options import CommonOptions, LatencyOptions, redefault
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import input_size, latency_cell, load_datasets, model_from_args, model_metrics, out_dir


@dataclass
class EvalOptions(LatencyOptions, CommonOptions):
    """Options of ``prunekit eval``."""

    COMMAND: ClassVar[str] = "eval"
    batch_size: int = redefault(CommonOptions, "batch_size", 256)


OPTIONS = EvalOptions


def execute(opts: EvalOptions) -> int:
    """Evaluate ``opts.checkpoint`` on the test split; latency measured on ``opts.device``."""
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate

    if not opts.checkpoint:
        raise PrunekitError("eval needs --checkpoint (a model file or a prunekit output folder)")
    _, test_ds = load_datasets(opts, train=False)
    ckpt = model_from_args(opts, test_ds)
    device = resolve_device(opts.device)
    model = ckpt.model.to(device)
    acc = evaluate(model, test_ds, batch_size=opts.batch_size, device=device)
    metrics = model_metrics(model, input_size(test_ds), latency_batch=opts.latency_batch, device=device,
                            latency_budget=opts.latency_budget)
    out = out_dir(opts)
    summary = {"command": "eval", "checkpoint": opts.checkpoint, "model": ckpt.meta["model"], "cfg": ckpt.meta["cfg"],
               "dataset": opts.dataset, "top1": acc["top1"], "top5": acc["top5"], "loss": acc["loss"],
               "samples": acc["n"], **metrics}
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "top-1", "top-5", "params", "non-zero", "FLOPs", "sparse FLOPs",
                          f"latency ms (batch {opts.latency_batch})"],
                         [[summary["model"], acc["top1"], acc["top5"], metrics["params"], metrics["nonzero_params"],
                           metrics["flops"], metrics["sparse_flops"], latency_cell(metrics["latency"])]]))
    if metrics["latency"].get("skipped"):
        print(f"latency: {metrics['latency']['skipped']}")
    return 0
