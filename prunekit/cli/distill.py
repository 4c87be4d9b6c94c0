"""``prunekit distill``: ensemble distillation of frozen teachers into a (pruned) student checkpoint.

Seed defaults (Li et al. iterative pruning, kesi): SGD lr 0.01, weight decay 0, 40 epochs, LR ×0.2 at 50% and
75%, temperature 5, alpha 0 (KD term only). The student's masks, if its checkpoint has any, stay enforced.
"""
from __future__ import annotations

import argparse

from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (add_common_args, add_train_args, check_compatible, input_size, load_datasets, model_from_args,
                     is_main_process, out_dir, standard_fields, train_config)
from .ensemble import parse_checkpoint_list


def add_parser(parser: argparse.ArgumentParser) -> None:
    from ..experiments.distill import KD_MODES

    add_common_args(parser, epochs=40, lr=0.01, batch_size=64)
    add_train_args(parser)
    parser.set_defaults(weight_decay=0.0, gamma=0.2)  # the seed's distillation schedule
    g = parser.add_argument_group("distillation options")
    g.add_argument("--teachers", required=True,
                   help="comma-separated teacher checkpoints (model files or prunekit output folders)")
    g.add_argument("--temperature", type=float, default=5.0, help="softmax temperature T (default 5)")
    g.add_argument("--alpha", type=float, default=0.0,
                   help="weight of the cross-entropy term: alpha*CE + (1-alpha)*KD (default 0: KD only, the seed)")
    g.add_argument("--kd-mode", default="per_teacher", choices=KD_MODES,
                   help="per_teacher: mean of the KL to each teacher (seed); mean_teacher: KL to the mean "
                        "teacher distribution")


def run(args: argparse.Namespace) -> int:
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate
    from ..experiments.distill import check_kd_args, distill
    from ..experiments.ensemble import evaluate_ensemble, load_members
    from ..metrics import count_params

    teacher_paths = parse_checkpoint_list(args.teachers, "--teachers")
    check_kd_args(args.temperature, args.alpha, args.kd_mode)
    cfg = train_config(args)
    train_ds, test_ds = load_datasets(args)
    student = model_from_args(args, train_ds)
    teachers = load_members(teacher_paths, num_classes=train_ds.num_classes)
    for p, t in zip(teacher_paths, teachers):
        check_compatible(t.model, train_ds, p)
    device = resolve_device(args.device)
    before = evaluate(student.model.to(device), test_ds, cfg.eval_batch_size, device)
    ens = evaluate_ensemble([t.model for t in teachers], test_ds, "sum_logits", cfg.eval_batch_size, device,
                            names=teacher_paths)
    out = out_dir(args)
    result = distill(student.model, [t.model for t in teachers], train_ds, test_ds, cfg,
                     temperature=args.temperature, alpha=args.alpha, mode=args.kd_mode, masks=student.masks,
                     out_dir=out, resume=args.resume,
                     extra_meta={"dataset": args.dataset, "teachers": teacher_paths})
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    after = result.final.get("val_top1")
    teacher_rows = [{"checkpoint": p, "model": t.meta["model"], "params": count_params(t.model, trainable_only=False),
                     "top1": a}
                    for p, t, a in zip(teacher_paths, teachers, ens["members"])]
    summary = {**standard_fields(student.model.to("cpu"), input_size(train_ds), after, result.final.get("val_top5")),
               "command": "distill", "model": student.model.prunekit_name, "dataset": args.dataset,
               "checkpoint_in": args.checkpoint,
               "student_top1_before": before["top1"], "student_top1_after": after,
               "student_top5_after": result.final.get("val_top5"), "best_top1": result.best_top1,
               "best_epoch": result.best_epoch, "teacher_ensemble_top1": ens["top1"],
               "teacher_ensemble_mode": ens["mode"], "teacher_params": sum(r["params"] for r in teacher_rows),
               "teachers": teacher_rows, "temperature": args.temperature, "alpha": args.alpha,
               "kd_mode": args.kd_mode, "masked": bool(student.masks), "epochs": cfg.epochs,
               "config": cfg.to_dict()}
    write_json(out / "summary.json", summary)
    k = len(teacher_rows)
    rows = [[f"teacher {i + 1}", r["model"], r["params"], r["top1"]] for i, r in enumerate(teacher_rows)]
    rows.append([f"E-1-{k} (sum_logits)", "ensemble", summary["teacher_params"], ens["top1"]])
    rows.append(["student before", summary["model"], summary["params"], before["top1"]])
    rows.append(["student distilled", summary["model"], summary["params"], after])
    print(markdown_table(["", "model", "params", "top-1"], rows))
    print(f"wrote {out / 'model.safetensors'}, {out / 'log.csv'}, {out / 'summary.json'}")
    return 0
