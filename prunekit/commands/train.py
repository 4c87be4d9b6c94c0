"""``prunekit train``: baseline training, network-slimming sparsity training with ``--sparsity-reg``, or gradual
weight pruning while training (``--gradual-ratio``: a :class:`~prunekit.pruning.sparsifier.Sparsifier` with an AGP,
linear or one-shot schedule over a span of the training steps)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import PrunekitError
from ..options import CommonOptions, TrainingOptions, option
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (input_size, is_main_process, load_datasets, model_from_args, model_metrics, out_dir, parse_cfg,
                     resume_kwargs, seeded, train_config)

log = logging.getLogger(__name__)
_G = "gradual pruning (a Sparsifier in the training loop)"
GRADUAL_METHODS = ("layerwise", "global", "per-kind", "gp", "random")


def seed_logs_option() -> Any:
    """``--seed-logs``: also write the seed systems' own output files (formats in docs/SEEDS.md)."""
    return option(False, bool, "also write the seeds' output files for scripts that read them (prune: prune.txt, "
                  "weight_mask.npy, GPMT prune logs, implies --eval; training: log.txt, record.txt, gpmt_log.csv); "
                  "see docs/SEEDS.md")


@dataclass
class TrainOptions(TrainingOptions, CommonOptions):
    """Options of ``prunekit train``."""

    COMMAND: ClassVar[str] = "train"
    cfg: Any = option(None, help="architecture cfg, e.g. 16,M,32,M,64 (or a JSON list) for a narrow vgg (default: "
                      "the model's own)", raw=True)
    dropout: float | None = option(None, float, "dropout rate of models that take one (the wrn_* models: default "
                                   "0.3, as the seeds); saved in the checkpoint", low=0.0, high=1.0, high_open=True,
                                   metavar="P")
    sparsity_reg: float = option(0.0, float, "network slimming: L1 penalty s on BN gammas (grad += s*sign(gamma)); "
                                 "1e-4 VGG, 1e-5 ResNet-164/DenseNet-40", low=0.0)
    gradual_ratio: float | None = option(None, float, "prune this fraction of the weights gradually while training "
                                         "(default: off)", low=0.0, high=1.0, low_open=True, high_open=True,
                                         group=_G)
    gradual_method: str = option("gp", help="criterion of --gradual-ratio: layerwise, global, per-kind, gp, random",
                                 choices=GRADUAL_METHODS, group=_G)
    gradual_schedule: str = option("agp", help="agp (Zhu & Gupta's cubic), linear, or oneshot (at --gradual-start)",
                                   choices=("agp", "linear", "oneshot"), group=_G)
    gradual_start: float = option(0.0, float, "first mask update, as a fraction of the training steps", low=0.0,
                                  high=1.0, high_open=True, group=_G)
    gradual_end: float = option(0.75, float, "final sparsity reached at this fraction of the training steps",
                                low=0.0, high=1.0, low_open=True, group=_G)
    gradual_updates: int = option(10, int, "mask updates between --gradual-start and --gradual-end", low=1,
                                  high=1_000_000, group=_G)
    seed_logs: bool = seed_logs_option()

    def validate(self, where: str | None = None) -> "TrainOptions":
        super().validate(where)
        if self.gradual_ratio is not None and self.gradual_start >= self.gradual_end:
            field = f"{where}, fields 'gradual_start'/'gradual_end'" if where else "--gradual-start/--gradual-end"
            raise PrunekitError(f"{field}: the start ({self.gradual_start}) must come before the end "
                                f"({self.gradual_end})")
        return self


OPTIONS = TrainOptions


def gradual_schedule(opts: TrainOptions, steps_per_epoch: int) -> Any:
    """The schedule of ``--gradual-*`` in optimizer steps: start/end are fractions of ``epochs * steps_per_epoch``."""
    from ..pruning.schedules import AGP, Linear, OneShot

    total = opts.epochs * steps_per_epoch
    start = int(round(opts.gradual_start * total))
    end = max(start + 1, int(round(opts.gradual_end * total)))
    if opts.gradual_schedule == "oneshot":
        return OneShot(opts.gradual_ratio, step=start)
    freq = max(1, (end - start) // opts.gradual_updates)
    cls = AGP if opts.gradual_schedule == "agp" else Linear
    return cls(start_step=start, end_step=end, frequency=freq, initial=0.0, final=opts.gradual_ratio)


def execute(opts: TrainOptions) -> int:
    """Train ``opts.model`` (or continue ``opts.checkpoint``) on ``opts.dataset``; write the run into ``opts.out``."""
    from ..engine.trainer import fit

    cfg = train_config(opts)
    options = _model_options(opts)
    train_ds, test_ds = load_datasets(opts)
    if opts.cfg is not None or options:
        if opts.checkpoint:
            raise PrunekitError("--cfg builds a new model; it cannot be combined with --checkpoint")
        from ..checkpoint import Checkpoint
        from ..models import create_model

        with seeded(opts.seed):
            model = create_model(opts.model or "resnet20", num_classes=train_ds.num_classes, cfg=parse_cfg(opts.cfg),
                                 in_channels=train_ds.in_channels, **options)
        ckpt = Checkpoint(model, None, {})
    else:
        ckpt = model_from_args(opts, train_ds)
    hooks = []
    if opts.sparsity_reg > 0:
        from ..pruning.structured.slimming import BNL1Hook

        hooks.append(BNL1Hook(opts.sparsity_reg))
    sparsifier = None
    if opts.gradual_ratio is not None:
        sparsifier = _gradual(opts, ckpt, train_ds, cfg)
        from ..pruning.sparsifier import SparsifierHook

        hooks.append(SparsifierHook(sparsifier))
    out = out_dir(opts)
    if opts.seed_logs:  # the seeds' per-epoch files: log.txt (Rethinking cifar.py), record.txt, gpmt_log.csv
        from ..pruning.seed_logs import SeedLogHook

        hooks.append(SeedLogHook(out))
    gradual = None if sparsifier is None else {
        "ratio": opts.gradual_ratio, "method": opts.gradual_method, "schedule": sparsifier.schedule.to_dict()}
    result = fit(ckpt.model, train_ds, test_ds, cfg, masks=None if sparsifier else ckpt.masks, hooks=hooks,
                 out_dir=out, extra_meta={"dataset": opts.dataset, "sparsity_reg": opts.sparsity_reg,
                                          **({"gradual": gradual} if gradual else {})}, **resume_kwargs(opts))
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    metrics = model_metrics(ckpt.model, input_size(train_ds), latency=False)
    summary = {"command": "train", "model": ckpt.model.prunekit_name, "dataset": opts.dataset,
               "checkpoint_in": opts.checkpoint, "top1": result.final.get("val_top1"),
               "top5": result.final.get("val_top5"), "best_top1": result.best_top1, "best_epoch": result.best_epoch,
               "epochs": cfg.epochs, **metrics, "config": cfg.to_dict(), "sparsity_reg": opts.sparsity_reg,
               "resumed_with_changes": getattr(result, "resumed_with_changes", None)}
    if sparsifier is not None:
        summary["gradual"] = {**gradual, **{k: v for k, v in sparsifier.sparsity().items() if k != "layers"}}
        summary["sparsity"] = summary["gradual"]["sparsity"]
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "dataset", "epochs", "top-1", "best top-1", "params"],
                         [[summary["model"], opts.dataset, cfg.epochs, summary["top1"], result.best_top1,
                           metrics["params"]]]))
    print(f"wrote {out / 'model.safetensors'}, {out / 'log.csv'}, {out / 'summary.json'}")
    return 0


def _gradual(opts: TrainOptions, ckpt: Any, train_ds: Any, cfg: Any) -> Any:
    """The Sparsifier of ``--gradual-ratio`` for ``ckpt.model`` (dense: masks of a pruned checkpoint are refused)."""
    import math

    from ..pruning.sparsifier import Sparsifier

    if ckpt.masks:
        raise PrunekitError("--gradual-ratio prunes a dense model while it trains; the checkpoint already carries "
                            "masks (finetune it instead)")
    steps = math.ceil(len(train_ds) / cfg.batch_size)
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    return Sparsifier(ckpt.model, method=opts.gradual_method, schedule=gradual_schedule(opts, steps))


def _model_options(opts: TrainOptions) -> dict:
    """Model options from the flags (``--dropout``), checked against the model before anything is loaded."""
    if opts.dropout is None:
        return {}
    if opts.checkpoint:
        raise PrunekitError("--dropout sets an option of a freshly built model; a --checkpoint keeps the options it "
                            "was saved with")
    from ..models import list_models, model_options

    name = opts.model or "resnet20"
    if "dropout" not in model_options(name):
        takers = [n for n in list_models() if "dropout" in model_options(n)]
        raise PrunekitError(f"--dropout: model {name!r} has no dropout option (models that take one: "
                            f"{', '.join(takers)})")
    return {"dropout": float(opts.dropout)}
