"""``prunekit quickstart``: the one-command tour. Train on digits, prune 80% of weights, finetune, compare."""
from __future__ import annotations

import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import check_number
from ..options import CommonOptions, DeviceOption, LatencyOptions, option, redefault
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import latency_cell, seeded

log = logging.getLogger(__name__)
MODEL = "resnet20"


@dataclass
class QuickstartOptions(DeviceOption):
    """Options of ``prunekit quickstart``."""

    COMMAND: ClassVar[str] = "quickstart"
    out: str | None = redefault(CommonOptions, "out", None)
    ratio: float = option(0.8, float, "fraction of conv+linear weights to prune", low=0.0, high=1.0, high_open=True)
    epochs: int = option(15, int, "dense training epochs", low=1)
    finetune_epochs: int = option(8, int, "finetune epochs", low=1)
    seed: int = redefault(CommonOptions, "seed", 0)
    debug: bool = redefault(CommonOptions, "debug", False)
    latency_budget: float = redefault(LatencyOptions, "latency_budget", 3.0)


OPTIONS = QuickstartOptions


def execute(opts: QuickstartOptions) -> int:
    """Run :func:`quickstart` into ``opts.out`` and print its before/after table."""
    result = quickstart(Path(opts.out), ratio=opts.ratio, epochs=opts.epochs, finetune_epochs=opts.finetune_epochs,
                        seed=opts.seed, device=opts.device, latency_budget=opts.latency_budget)
    print(result["table"])
    print(result["latency_line"])
    print(f"wrote {Path(opts.out) / 'summary.json'} (dense/ and pruned/ hold the checkpoints and logs)")
    return 0


def quickstart(out: Path, *, ratio: float = 0.8, epochs: int = 15, finetune_epochs: int = 8, seed: int = 0,
               device: str = "auto", latency_budget: float = 3.0) -> dict[str, Any]:
    """Train ``resnet20`` on digits, prune ``ratio`` of conv+linear weights (GP), finetune with masks, measure.

    Latency (batch 1): the dense and the pruned model timed pass by pass in turn within ``latency_budget`` seconds
    each (0: not timed); ``latency_line`` says whether the difference is more than the noise."""
    from ..data import get_dataset
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate
    from ..engine.trainer import TrainConfig, fit
    from ..metrics import summarize
    from ..metrics.latency import compare_latency
    from ..models import create_model
    from ..pruning.unstructured import prune_unstructured

    check_number("ratio", ratio, low=0.0, high=1.0, high_open=True)
    check_number("epochs", epochs, low=1, integer=True)
    check_number("finetune_epochs", finetune_epochs, low=1, integer=True)
    train_ds, test_ds = get_dataset("digits", train=True), get_dataset("digits", train=False)
    size = (train_ds.in_channels, *train_ds.image_size)
    dev = resolve_device(device)
    with seeded(seed):
        model = create_model(MODEL, num_classes=train_ds.num_classes, in_channels=train_ds.in_channels)
    progress = sys.stderr.isatty()

    log.info(f"[1/3] training {MODEL} on digits for {epochs} epochs")
    fit(model, train_ds, test_ds, TrainConfig(epochs=epochs, batch_size=64, lr=0.1, schedule="cosine", seed=seed,
                                              device=str(dev), progress=progress), out_dir=out / "dense")

    def measure(m) -> dict[str, Any]:
        acc = evaluate(m, test_ds, device=dev)
        s = summarize(m, (1, *size))
        return {"top1": acc["top1"], "top5": acc["top5"], "params": s["params"],
                "nonzero_params": s["nonzero_params"], "flops": s["sparse_flops"], "dense_flops": s["flops"]}

    dense = measure(model)
    dense_model = copy.deepcopy(model)  # timed against the pruned one at the end, pass by pass
    log.info(f"[2/3] pruning {ratio:.0%} of conv+linear weights (one global magnitude threshold, GP)")
    pruned = prune_unstructured(model, "gp", ratio)
    after_prune = evaluate(model, test_ds, device=dev)["top1"]
    log.info(f"[3/3] finetuning {finetune_epochs} epochs with masks kept (pruned top-1 before finetune "
         f"{after_prune:.2f})")
    fit(model, train_ds, test_ds, TrainConfig(epochs=finetune_epochs, batch_size=64, lr=0.01, schedule="cosine",
                                              seed=seed, device=str(dev), progress=progress),
        masks=pruned.masks, out_dir=out / "pruned")
    sparse = measure(model)
    sparse["top1_before_finetune"] = after_prune
    comps = compare_latency({"dense": dense_model, "pruned": model}, size, batch_sizes=[1], budget_s=latency_budget,
                            device=dev)
    comp = comps[0] if comps else None
    for label, row in (("dense", dense), ("pruned", sparse)):
        rep = comp.reports.get(label) if comp is not None else None
        row["latency_ms"] = rep.median_ms if rep is not None else None
        row["latency"] = rep.as_dict() if rep is not None else None
    speed = comp.speedup("dense", "pruned") if comp is not None else None
    if speed is not None:
        latency_line = (f"latency, batch 1, dense and pruned timed in turn: {speed.describe('pruned')}; weight "
                        "masks keep dense shapes, so no speed-up is expected")
    else:
        latency_line = f"latency: not timed ({comp.skipped if comp is not None else '--latency-budget 0'})"
    rows = [["dense", dense["top1"], dense["params"], dense["nonzero_params"], dense["flops"],
             latency_cell(dense["latency"])],
            ["pruned", sparse["top1"], sparse["params"], sparse["nonzero_params"], sparse["flops"],
             latency_cell(sparse["latency"])]]
    table = markdown_table(["model", "top-1 %", "params", "non-zero params", "FLOPs (sparse-aware)",
                            "latency ms (batch 1, median)"], rows)
    summary = {"command": "quickstart", "model": MODEL, "dataset": "digits", "ratio": ratio,
               "flops_convention": "2*MACs; only non-zero weights count",
               "latency_note": "unstructured sparsity keeps dense shapes: latency is not expected to drop",
               "latency_budget_s": latency_budget, "latency_speedup": None if speed is None else vars(speed),
               "dense": dense, "pruned": sparse}
    write_json(out / "summary.json", summary)
    return {**summary, "table": table, "latency_line": latency_line}

