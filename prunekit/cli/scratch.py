"""``prunekit scratch``: train a pruned architecture from scratch, Scratch-E or Scratch-B (REFERENCE §3).

``--epochs`` is the base budget E (default 160, CIFAR). Scratch-B trains ``int(E * FLOPs_dense / FLOPs_pruned)``
epochs, milestones at 50 %/75 %; the FLOPs are Rethinking-convention FLOPs of the dense and of the pruned model
(sparse-aware), both measured now by :func:`prunekit.retrain.plan_scratch`, the same rule as the library's;
``--imagenet-schedule`` uses step = E/3 and caps at 2E when the ratio is >= 2. Weight-level checkpoints are
re-initialised with the density-scaled He init and keep their masks; structured ones are rebuilt from their cfg.
``--plan-only`` prints the budget without training.
"""
from __future__ import annotations

import argparse

from ..errors import PrunekitError
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (add_common_args, add_train_args, input_size, load_datasets, model_from_args, out_dir,
                     is_main_process, standard_fields, train_config)


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=160, lr=0.1)
    add_train_args(parser)
    parser.add_argument("--budget", default="B", choices=("E", "B"),
                        help="E: the base epochs; B: base epochs x FLOPs_dense / FLOPs_pruned (default B)")
    parser.add_argument("--imagenet-schedule", action="store_true",
                        help="ImageNet style: step LR every E/3 epochs, Scratch-B capped at 2E when the ratio >= 2")
    parser.add_argument("--plan-only", action="store_true", help="print and save the budget, do not train")


def run(args: argparse.Namespace) -> int:
    from ..retrain import plan_scratch, scratch_model, train_scratch

    if not args.checkpoint:
        raise PrunekitError("scratch needs --checkpoint (a pruned model: the output of `prunekit prune`)")
    cfg = train_config(args)
    train_ds, test_ds = load_datasets(args, test=not args.plan_only)
    ckpt = model_from_args(args, train_ds)
    size = input_size(train_ds)
    name = ckpt.meta["model"]
    if args.plan_only:
        model, _ = scratch_model(ckpt, seed=args.seed)
        plan, _ = plan_scratch(ckpt, model, cfg, budget=args.budget, input_size=size,
                               imagenet_style=args.imagenet_schedule)
        result = None
    else:
        result, plan, model = train_scratch(ckpt, train_ds, test_ds, cfg, budget=args.budget, input_size=size,
                                            imagenet_style=args.imagenet_schedule, out_dir=out_dir(args),
                                            resume=args.resume,
                                            extra_meta={"dataset": args.dataset, "source_checkpoint": args.checkpoint})
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    out = out_dir(args)
    final = result.final if result else {}
    summary = {**standard_fields(model.to("cpu"), size, final.get("val_top1"), final.get("val_top5")),
               "command": "scratch", "model": name, "dataset": args.dataset, "checkpoint_in": args.checkpoint,
               "budget": plan.to_dict(), "masked": bool(ckpt.masks), "trained": result is not None,
               "best_top1": result.best_top1 if result else None, "config": cfg.to_dict()}
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "regime", "base epochs", "epochs", "FLOPs dense", "FLOPs pruned", "ratio",
                          "top-1", "best top-1"],
                         [[name, f"Scratch-{args.budget}", plan.base_epochs, plan.epochs, plan.flops_dense,
                           plan.flops_pruned, f"{plan.ratio:.3f}", summary["top1"], summary["best_top1"]]]))
    print(f"FLOPs: {plan.convention} convention, dense from {plan.dense_flops_source}; schedule {plan.schedule}"
          + (f" step {plan.step_size}" if plan.step_size else
             f" milestones {list(plan.milestones or ())}" if plan.schedule == "multistep" else ""))
    print(f"wrote {out / 'summary.json'}" + ("" if result is None else f" and the run in {out}"))
    return 0
