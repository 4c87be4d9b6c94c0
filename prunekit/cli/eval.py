"""``prunekit eval``: accuracy, parameters, FLOPs and measured latency of a checkpoint."""
from __future__ import annotations

import argparse

from ..errors import PrunekitError
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import add_common_args, input_size, load_datasets, model_from_args, model_metrics, out_dir


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, batch_size=256)
    parser.add_argument("--latency-batch", type=int, default=1, help="batch size for the latency measurement")


def run(args: argparse.Namespace) -> int:
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate

    if not args.checkpoint:
        raise PrunekitError("eval needs --checkpoint (a model file or a prunekit output folder)")
    _, test_ds = load_datasets(args, train=False)
    ckpt = model_from_args(args, test_ds)
    device = resolve_device(args.device)
    model = ckpt.model.to(device)
    acc = evaluate(model, test_ds, batch_size=args.batch_size, device=device)
    metrics = model_metrics(model, input_size(test_ds), latency_batch=args.latency_batch, device=device)
    out = out_dir(args)
    summary = {"command": "eval", "checkpoint": args.checkpoint, "model": ckpt.meta["model"], "cfg": ckpt.meta["cfg"],
               "dataset": args.dataset, "top1": acc["top1"], "top5": acc["top5"], "loss": acc["loss"],
               "samples": acc["n"], **metrics}
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "top-1", "top-5", "params", "non-zero", "FLOPs", "sparse FLOPs", "latency ms"],
                         [[summary["model"], acc["top1"], acc["top5"], metrics["params"], metrics["nonzero_params"],
                           metrics["flops"], metrics["sparse_flops"], metrics["latency_ms"]]]))
    return 0
