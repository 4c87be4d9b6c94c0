"""``prunekit finetune``: continue training a pruned checkpoint; its masks are enforced exactly.

Defaults follow Rethinking's weight-level finetune on CIFAR (40 epochs, lr 0.001, constant). Writes the trainer's
``model.safetensors`` (with masks), ``best.safetensors``, ``log.csv``, ``train_state.pt`` and ``summary.json``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunekitError
from ..options import CommonOptions, TrainingOptions, redefault
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (input_size, is_main_process, load_datasets, model_from_args, out_dir, resume_kwargs,
                     standard_fields, train_config)
from .train import seed_logs_option


@dataclass
class FinetuneOptions(TrainingOptions, CommonOptions):
    """Options of ``prunekit finetune``."""

    COMMAND: ClassVar[str] = "finetune"
    epochs: int = redefault(TrainingOptions, "epochs", 40)
    lr: float = redefault(TrainingOptions, "lr", 0.001)
    schedule: str = redefault(TrainingOptions, "schedule", "constant")
    seed_logs: bool = seed_logs_option()


OPTIONS = FinetuneOptions


def execute(opts: FinetuneOptions) -> int:
    """Finetune ``opts.checkpoint`` with its masks kept; write the run into ``opts.out``."""
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate
    from ..metrics import summarize
    from ..pruning.masks import sparsity as mask_sparsity
    from ..retrain import finetune

    if not opts.checkpoint:
        raise PrunekitError("finetune needs --checkpoint (the output of `prunekit prune` or a model file)")
    cfg = train_config(opts)
    train_ds, test_ds = load_datasets(opts)
    ckpt = model_from_args(opts, train_ds)
    model = ckpt.model
    device = resolve_device(opts.device)
    before = evaluate(model.to(device), test_ds, device=device)["top1"]  # the --checkpoint model, also on resume
    out = out_dir(opts)
    hooks = []
    if opts.seed_logs:  # log_finetune.txt (Rethinking cifar_finetune.py), record.txt, gpmt_log.csv
        from ..pruning.seed_logs import SeedLogHook

        dense = ((ckpt.meta.get("extra") or {}).get("prune") or {}).get("accuracy_before") or {}
        hooks.append(SeedLogHook(out, rethinking_log="log_finetune.txt", orig_accuracy=dense.get("top1")))
    result = finetune(model, ckpt.masks, train_ds, test_ds, cfg, out_dir=out, hooks=hooks,
                      extra_meta={"dataset": opts.dataset, "source_checkpoint": opts.checkpoint},
                      **resume_kwargs(opts))
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    size = input_size(train_ds)
    metrics = standard_fields(model.to("cpu"), size, result.final.get("val_top1"), result.final.get("val_top5"))
    metrics["flops_rethinking"] = summarize(model, (1, *size), convention="rethinking")["sparse_flops"]
    sparsity = mask_sparsity(ckpt.masks) if ckpt.masks else None
    summary = {"command": "finetune", "model": ckpt.meta["model"], "dataset": opts.dataset,
               "checkpoint_in": opts.checkpoint, "masked": bool(ckpt.masks), "mask_sparsity": sparsity,
               "top1_before": before,
               "best_top1": result.best_top1, "best_epoch": result.best_epoch, "epochs": cfg.epochs, **metrics,
               "config": cfg.to_dict(),
               "resumed_with_changes": getattr(result, "resumed_with_changes", None)}
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "masked sparsity", "top-1 before", "top-1 after", "best top-1", "non-zero params"],
                         [[summary["model"], "-" if sparsity is None else f"{100 * sparsity:.2f}%", before,
                           summary["top1"], result.best_top1, metrics["nonzero_params"]]]))
    print(f"wrote {out / 'model.safetensors'}, {out / 'log.csv'}, {out / 'summary.json'}")
    return 0
