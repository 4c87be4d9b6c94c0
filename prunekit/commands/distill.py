"""``prunekit distill``: ensemble distillation of frozen teachers into a (pruned) student checkpoint.

Seed defaults (Li et al. iterative pruning, kesi): SGD lr 0.01, weight decay 0, 40 epochs, LR ×0.2 at 50% and
75%, temperature 5, alpha 0 (KD term only). The student's masks, if its checkpoint has any, stay enforced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..experiments.distill import KD_MODES
from ..options import CommonOptions, TrainingOptions, option, redefault
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (check_compatible, input_size, is_main_process, load_datasets, model_from_args, out_dir,
                     resume_kwargs, standard_fields, train_config)
from .ensemble import checkpoints_option, parse_checkpoint_list


@dataclass
class DistillOptions(TrainingOptions, CommonOptions):
    """Options of ``prunekit distill``."""

    COMMAND: ClassVar[str] = "distill"
    epochs: int = redefault(TrainingOptions, "epochs", 40)
    lr: float = redefault(TrainingOptions, "lr", 0.01)
    weight_decay: float = redefault(TrainingOptions, "weight_decay", 0.0)  # the seed's distillation schedule
    gamma: float = redefault(TrainingOptions, "gamma", 0.2)
    teachers: list[str] = checkpoints_option("teacher checkpoints (model files or prunekit output folders)")
    temperature: float = option(5.0, float, "softmax temperature T", low=0.0, low_open=True, high=1e6,
                                group="distillation options")
    alpha: float = option(0.0, float, "weight of the cross-entropy term: alpha*CE + (1-alpha)*KD (0: KD only, the "
                          "seed)", low=0.0, high=1.0, group="distillation options")
    kd_mode: str = option("per_teacher", help="per_teacher: mean of the KL to each teacher (seed); mean_teacher: KL "
                          "to the mean teacher distribution", choices=KD_MODES, group="distillation options")


OPTIONS = DistillOptions


def execute(opts: DistillOptions) -> int:
    """Distill the frozen ``opts.teachers`` into the student ``opts.checkpoint`` (or a fresh ``opts.model``)."""
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate
    from ..experiments.distill import check_kd_args, distill
    from ..experiments.ensemble import evaluate_ensemble, load_members
    from ..metrics import count_params

    teacher_paths = parse_checkpoint_list(opts.teachers, "--teachers")
    check_kd_args(opts.temperature, opts.alpha, opts.kd_mode)
    cfg = train_config(opts)
    train_ds, test_ds = load_datasets(opts)
    student = model_from_args(opts, train_ds)
    teachers = load_members(teacher_paths, num_classes=train_ds.num_classes)
    for p, t in zip(teacher_paths, teachers):
        check_compatible(t.model, train_ds, p)
    device = resolve_device(opts.device)
    before = evaluate(student.model.to(device), test_ds, cfg.eval_batch_size, device)
    ens = evaluate_ensemble([t.model for t in teachers], test_ds, "sum_logits", cfg.eval_batch_size, device,
                            names=teacher_paths)
    out = out_dir(opts)
    result = distill(student.model, [t.model for t in teachers], train_ds, test_ds, cfg,
                     temperature=opts.temperature, alpha=opts.alpha, mode=opts.kd_mode, masks=student.masks,
                     out_dir=out, extra_meta={"dataset": opts.dataset, "teachers": teacher_paths},
                     **resume_kwargs(opts))
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    after = result.final.get("val_top1")
    teacher_rows = [{"checkpoint": p, "model": t.meta["model"], "params": count_params(t.model, trainable_only=False),
                     "top1": a}
                    for p, t, a in zip(teacher_paths, teachers, ens["members"])]
    summary = {**standard_fields(student.model.to("cpu"), input_size(train_ds), after, result.final.get("val_top5")),
               "command": "distill", "model": student.model.prunekit_name, "dataset": opts.dataset,
               "checkpoint_in": opts.checkpoint,
               "student_top1_before": before["top1"], "student_top1_after": after,
               "student_top5_after": result.final.get("val_top5"), "best_top1": result.best_top1,
               "best_epoch": result.best_epoch, "teacher_ensemble_top1": ens["top1"],
               "teacher_ensemble_mode": ens["mode"], "teacher_params": sum(r["params"] for r in teacher_rows),
               "teachers": teacher_rows, "temperature": opts.temperature, "alpha": opts.alpha,
               "kd_mode": opts.kd_mode, "masked": bool(student.masks), "epochs": cfg.epochs,
               "config": cfg.to_dict(),
               "resumed_with_changes": getattr(result, "resumed_with_changes", None)}
    write_json(out / "summary.json", summary)
    k = len(teacher_rows)
    rows = [[f"teacher {i + 1}", r["model"], r["params"], r["top1"]] for i, r in enumerate(teacher_rows)]
    rows.append([f"E-1-{k} (sum_logits)", "ensemble", summary["teacher_params"], ens["top1"]])
    rows.append(["student before", summary["model"], summary["params"], before["top1"]])
    rows.append(["student distilled", summary["model"], summary["params"], after])
    print(markdown_table(["", "model", "params", "top-1"], rows))
    print(f"wrote {out / 'model.safetensors'}, {out / 'log.csv'}, {out / 'summary.json'}")
    return 0
