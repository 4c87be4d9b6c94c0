"""``prunekit scratch``: train a pruned architecture from scratch, Scratch-E or Scratch-B (REFERENCE §3).

``--epochs`` is the base budget E (default 160, CIFAR). Scratch-B trains ``int(E * FLOPs_dense / FLOPs_pruned)``
epochs, milestones at 50 %/75 %; the FLOPs are Rethinking-convention FLOPs of the dense and of the pruned model
(sparse-aware), both measured now by :func:`prunekit.retrain.plan_scratch`, the same rule as the library's;
``--imagenet-schedule`` uses step = E/3 and caps at 2E when the ratio is >= 2. Weight-level checkpoints are
re-initialised with the density-scaled He init and keep their masks; structured ones are rebuilt from their cfg.
``--plan-only`` prints the budget without training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunekitError
from ..options import CommonOptions, TrainingOptions, option, redefault
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (input_size, is_main_process, load_datasets, model_from_args, out_dir, resume_kwargs,
                     standard_fields, train_config)


@dataclass
class ScratchOptions(TrainingOptions, CommonOptions):
    """Options of ``prunekit scratch``."""

    COMMAND: ClassVar[str] = "scratch"
    epochs: int = redefault(TrainingOptions, "epochs", 160)
    budget: str = option("B", help="E: the base epochs; B: base epochs x FLOPs_dense / FLOPs_pruned",
                         choices=("E", "B"))
    imagenet_schedule: bool = option(False, bool, "ImageNet style: step LR every E/3 epochs, Scratch-B capped at 2E "
                                     "when the ratio >= 2")
    plan_only: bool = option(False, bool, "print and save the budget, do not train")


OPTIONS = ScratchOptions


def execute(opts: ScratchOptions) -> int:
    """Plan (and unless ``plan_only`` run) Scratch-E/B training of ``opts.checkpoint``'s architecture."""
    from ..retrain import plan_scratch, scratch_model, train_scratch

    if not opts.checkpoint:
        raise PrunekitError("scratch needs --checkpoint (a pruned model: the output of `prunekit prune`)")
    cfg = train_config(opts)
    train_ds, test_ds = load_datasets(opts, test=not opts.plan_only)
    ckpt = model_from_args(opts, train_ds)
    size = input_size(train_ds)
    name = ckpt.meta["model"]
    if opts.plan_only:
        model, _ = scratch_model(ckpt, seed=opts.seed)
        plan, _ = plan_scratch(ckpt, model, cfg, budget=opts.budget, input_size=size,
                               imagenet_style=opts.imagenet_schedule)
        result = None
    else:
        result, plan, model = train_scratch(ckpt, train_ds, test_ds, cfg, budget=opts.budget, input_size=size,
                                            imagenet_style=opts.imagenet_schedule, out_dir=out_dir(opts),
                                            extra_meta={"dataset": opts.dataset, "source_checkpoint": opts.checkpoint},
                                            **resume_kwargs(opts))
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    out = out_dir(opts)
    final = result.final if result else {}
    summary = {**standard_fields(model.to("cpu"), size, final.get("val_top1"), final.get("val_top5")),
               "command": "scratch", "model": name, "dataset": opts.dataset, "checkpoint_in": opts.checkpoint,
               "budget": plan.to_dict(), "masked": bool(ckpt.masks), "trained": result is not None,
               "best_top1": result.best_top1 if result else None, "config": cfg.to_dict(),
               "resumed_with_changes": getattr(result, "resumed_with_changes", None)}
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "regime", "base epochs", "epochs", "FLOPs dense", "FLOPs pruned", "ratio",
                          "top-1", "best top-1"],
                         [[name, f"Scratch-{opts.budget}", plan.base_epochs, plan.epochs, plan.flops_dense,
                           plan.flops_pruned, f"{plan.ratio:.3f}", summary["top1"], summary["best_top1"]]]))
    print(f"FLOPs: {plan.convention} convention, dense from {plan.dense_flops_source}; schedule {plan.schedule}"
          + (f" step {plan.step_size}" if plan.step_size else
             f" milestones {list(plan.milestones or ())}" if plan.schedule == "multistep" else ""))
    print(f"wrote {out / 'summary.json'}" + ("" if result is None else f" and the run in {out}"))
    return 0
