"""``prunekit finetune``: continue training a pruned checkpoint; its masks are enforced exactly.

Defaults follow Rethinking's weight-level finetune on CIFAR (40 epochs, lr 0.001, constant). Writes the trainer's
``model.safetensors`` (with masks), ``best.safetensors``, ``log.csv``, ``train_state.pt`` and ``summary.json``.
"""
from __future__ import annotations

import argparse

from ..errors import PrunekitError
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (add_common_args, add_train_args, input_size, load_datasets, model_from_args, out_dir,
                     is_main_process, standard_fields, train_config)


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=40, lr=0.001)
    add_train_args(parser)
    parser.set_defaults(schedule="constant")
    from .common import add_seed_logs_arg

    add_seed_logs_arg(parser)


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate
    from ..engine.distributed import resolve_device
    from ..metrics import summarize
    from ..retrain import finetune

    if not args.checkpoint:
        raise PrunekitError("finetune needs --checkpoint (the output of `prunekit prune` or a model file)")
    cfg = train_config(args)
    train_ds, test_ds = load_datasets(args)
    ckpt = model_from_args(args, train_ds)
    model = ckpt.model
    device = resolve_device(args.device)
    before = evaluate(model.to(device), test_ds, device=device)["top1"]  # the --checkpoint model, also on resume
    out = out_dir(args)
    hooks = []
    if args.seed_logs:  # log_finetune.txt (Rethinking cifar_finetune.py), record.txt, gpmt_log.csv
        from ..pruning.seed_logs import SeedLogHook

        dense = ((ckpt.meta.get("extra") or {}).get("prune") or {}).get("accuracy_before") or {}
        hooks.append(SeedLogHook(out, rethinking_log="log_finetune.txt", orig_accuracy=dense.get("top1")))
    result = finetune(model, ckpt.masks, train_ds, test_ds, cfg, out_dir=out, resume=args.resume, hooks=hooks,
                      extra_meta={"dataset": args.dataset, "source_checkpoint": args.checkpoint})
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    size = input_size(train_ds)
    metrics = standard_fields(model.to("cpu"), size, result.final.get("val_top1"), result.final.get("val_top5"))
    metrics["flops_rethinking"] = summarize(model, (1, *size), convention="rethinking")["sparse_flops"]
    sparsity = None
    if ckpt.masks:
        total = sum(m.numel() for m in ckpt.masks.values())
        sparsity = 1.0 - sum(int(m.sum()) for m in ckpt.masks.values()) / total
    summary = {"command": "finetune", "model": ckpt.meta["model"], "dataset": args.dataset,
               "checkpoint_in": args.checkpoint, "masked": bool(ckpt.masks), "mask_sparsity": sparsity,
               "top1_before": before,
               "best_top1": result.best_top1, "best_epoch": result.best_epoch, "epochs": cfg.epochs, **metrics,
               "config": cfg.to_dict()}
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "masked sparsity", "top-1 before", "top-1 after", "best top-1", "non-zero params"],
                         [[summary["model"], "-" if sparsity is None else f"{100 * sparsity:.2f}%", before,
                           summary["top1"], result.best_top1, metrics["nonzero_params"]]]))
    print(f"wrote {out / 'model.safetensors'}, {out / 'log.csv'}, {out / 'summary.json'}")
    return 0
