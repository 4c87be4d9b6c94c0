"""``prunekit train``: baseline training, or network-slimming sparsity training with ``--sparsity-reg``."""
from __future__ import annotations

import argparse

from ..errors import PrunekitError
from ..utils.io import write_json
from ..utils.table import markdown_table
from .common import (add_common_args, add_train_args, input_size, is_main_process, load_datasets, model_from_args,
                     model_metrics, out_dir, parse_cfg, train_config)


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=10, lr=0.1)
    add_train_args(parser)
    parser.add_argument("--cfg", default=None,
                        help="architecture cfg, e.g. 16,M,32,M,64 (or a JSON list) for a narrow vgg "
                             "(default: the model's own)")
    parser.add_argument("--dropout", type=float, default=None, metavar="P",
                        help="dropout rate of models that take one (the wrn_* models: default 0.3, as the seeds); "
                             "saved in the checkpoint")
    parser.add_argument("--sparsity-reg", type=float, default=0.0,
                        help="network slimming: L1 penalty s on BN gammas (grad += s*sign(gamma)); 1e-4 VGG, "
                             "1e-5 ResNet-164/DenseNet-40")
    from .common import add_seed_logs_arg

    add_seed_logs_arg(parser)


def run(args: argparse.Namespace) -> int:
    from ..engine.trainer import fit

    cfg = train_config(args)
    if args.sparsity_reg < 0:
        raise PrunekitError(f"--sparsity-reg must be >= 0, got {args.sparsity_reg}")
    options = _model_options(args)
    train_ds, test_ds = load_datasets(args)
    if args.cfg is not None or options:
        if args.checkpoint:
            raise PrunekitError("--cfg builds a new model; it cannot be combined with --checkpoint")
        import torch

        from ..checkpoint import Checkpoint
        from ..models import create_model

        torch.manual_seed(args.seed)
        ckpt = Checkpoint(create_model(args.model or "resnet20", num_classes=train_ds.num_classes,
                                       cfg=parse_cfg(args.cfg), in_channels=train_ds.in_channels, **options),
                          None, {})
    else:
        ckpt = model_from_args(args, train_ds)
    hooks = []
    if args.sparsity_reg > 0:
        from ..pruning.structured.slimming import BNL1Hook

        hooks.append(BNL1Hook(args.sparsity_reg))
    out = out_dir(args)
    if args.seed_logs:  # the seeds' per-epoch files: log.txt (Rethinking cifar.py), record.txt, gpmt_log.csv
        from ..pruning.seed_logs import SeedLogHook

        hooks.append(SeedLogHook(out))
    result = fit(ckpt.model, train_ds, test_ds, cfg, masks=ckpt.masks, hooks=hooks, out_dir=out, resume=args.resume,
                 extra_meta={"dataset": args.dataset, "sparsity_reg": args.sparsity_reg})
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    metrics = model_metrics(ckpt.model, input_size(train_ds), latency=False)
    summary = {"command": "train", "model": ckpt.model.prunekit_name, "dataset": args.dataset,
               "checkpoint_in": args.checkpoint, "top1": result.final.get("val_top1"),
               "top5": result.final.get("val_top5"), "best_top1": result.best_top1, "best_epoch": result.best_epoch,
               "epochs": cfg.epochs, **metrics, "config": cfg.to_dict(), "sparsity_reg": args.sparsity_reg}
    write_json(out / "summary.json", summary)
    print(markdown_table(["model", "dataset", "epochs", "top-1", "best top-1", "params"],
                         [[summary["model"], args.dataset, cfg.epochs, summary["top1"], result.best_top1,
                           metrics["params"]]]))
    print(f"wrote {out / 'model.safetensors'}, {out / 'log.csv'}, {out / 'summary.json'}")
    return 0


def _model_options(args: argparse.Namespace) -> dict:
    """Model options from the flags (``--dropout``), checked against the model before anything is loaded."""
    if args.dropout is None:
        return {}
    if args.checkpoint:
        raise PrunekitError("--dropout sets an option of a freshly built model; a --checkpoint keeps the options it "
                            "was saved with")
    from ..models import list_models, model_options

    name = args.model or "resnet20"
    if "dropout" not in model_options(name):
        takers = [n for n in list_models() if "dropout" in model_options(n)]
        raise PrunekitError(f"--dropout: model {name!r} has no dropout option (models that take one: "
                            f"{', '.join(takers)})")
    if not 0.0 <= args.dropout < 1.0:
        raise PrunekitError(f"--dropout must be in [0, 1), got {args.dropout}")
    return {"dropout": float(args.dropout)}
