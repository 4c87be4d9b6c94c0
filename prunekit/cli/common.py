"""Flags and helpers shared by every CLI command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import PrunekitError

DEFAULT_MODEL = "resnet20"
DEFAULT_DATASET = "digits"


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int | None = None, lr: float | None = None,
                    batch_size: int = 64, out_required: bool = True, dataset_default: str | None = DEFAULT_DATASET
                    ) -> None:
    """Add ``--model --model-kwargs --trust-factory --checkpoint --dataset --data-dir --batch-size --seed --device
    --out --limit``, and ``--epochs --lr`` for commands that train (those that pass an ``epochs`` default).
    ``dataset_default=None``: without ``--dataset`` a fresh zoo model takes its natural input and classes."""
    g = parser.add_argument_group("common options")
    g.add_argument("--model", default=None,
                   help=f"zoo model name (default {DEFAULT_MODEL}; `prunekit info --list`) or a factory of your own "
                        "architecture, module.path:callable (e.g. mypkg.nets:Net, torchvision.models:resnet50)")
    g.add_argument("--model-kwargs", default=None, metavar="JSON",
                   help="keyword arguments of a --model module:callable factory, as a JSON object")
    g.add_argument("--trust-factory", action="append", default=[], metavar="MODULE:CALLABLE",
                   help="allow loading checkpoints built by this factory (prunekit never imports code named "
                        "only by a file); repeatable")
    g.add_argument("--checkpoint", default=None,
                   help="a model file or the output folder of any earlier prunekit command (with a module:callable "
                        "--model also a plain state_dict .pth/.safetensors of that architecture)")
    g.add_argument("--dataset", default=dataset_default,
                   help="digits, fashion-mnist, mnist, cifar10, cifar100, imagenet, synthetic (default " +
                        (f"{dataset_default})" if dataset_default else "none: a fresh model takes its natural "
                         "input and classes; a checkpoint, digits)"))
    g.add_argument("--data-dir", default=None, help="dataset root folder (default: the dataset's usual place)")
    if epochs is not None:  # only commands that train take --epochs / --lr
        g.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
        g.add_argument("--lr", type=float, default=lr, help=f"initial learning rate (default {lr})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"global batch size (default {batch_size})")
    g.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are bit-reproducible)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--out", required=out_required, default=None, help="output folder")
    g.add_argument("--limit", type=int, default=None,
                   help="use only the first N samples of each split (quick runs; a smaller split is used whole)")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """Optimizer / schedule flags of every command that trains."""
    g = parser.add_argument_group("training options")
    g.add_argument("--optimizer", default="sgd", help="sgd, adam or adamw")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-4)
    g.add_argument("--schedule", default="multistep", help="multistep, step, cosine, linear, onecycle, constant")
    g.add_argument("--milestones", default="0.5,0.75",
                   help="multistep milestones: fractions of --epochs (all < 1) or epoch numbers")
    g.add_argument("--gamma", type=float, default=0.1, help="LR decay factor for multistep/step")
    g.add_argument("--step-size", type=int, default=30, help="epochs between decays for --schedule step")
    g.add_argument("--warmup-epochs", type=float, default=0.0, help="linear LR warm-up (epochs)")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    g.add_argument("--workers", type=int, default=0, help="data-loading workers (folder datasets)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show progress bars (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")


def add_seed_logs_arg(parser: argparse.ArgumentParser) -> None:
    """``--seed-logs``: also write the seed systems' own output files (formats in docs/SEEDS.md)."""
    parser.add_argument("--seed-logs", action="store_true",
                        help="also write the seeds' output files for scripts that read them (prune: prune.txt, "
                             "weight_mask.npy, GPMT prune logs, implies --eval; training: log.txt, record.txt, "
                             "gpmt_log.csv); see docs/SEEDS.md")


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job: only rank 0 writes reports."""
    from ..engine.distributed import env_dist_info

    return env_dist_info().is_main


def parse_cfg(text: str | None) -> list[Any] | None:
    """``--cfg``: a JSON list (``[16,"M",32]``) or comma-separated entries with ``M`` for max-pool (``16,M,32``)."""
    import json

    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if text.startswith("["):
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError:
            raise PrunekitError(f"--cfg is not a valid JSON list: {text!r}") from None
        if not isinstance(cfg, list):
            raise PrunekitError(f"--cfg must be a list, got {text!r}")
        return cfg
    out: list[Any] = []
    for tok in (t.strip() for t in text.split(",")):
        if tok == "M":
            out.append("M")
            continue
        try:
            out.append(int(tok))
        except ValueError:
            raise PrunekitError(f"--cfg entries must be integers or 'M', got {tok!r} in {text!r}") from None
    return out


def parse_floats(text: str, name: str) -> list[float]:
    """Parse ``"0.1,0.2"`` into floats, or raise a PrunekitError naming the flag."""
    try:
        return [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise PrunekitError(f"{name} must be comma-separated numbers, got {text!r}") from None


def train_config(args: argparse.Namespace, **overrides: Any):
    """Build a :class:`TrainConfig` from parsed flags (``overrides`` win)."""
    from ..engine.trainer import TrainConfig

    progress = args.progress if getattr(args, "progress", None) is not None else sys.stderr.isatty()
    values = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                  momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                  schedule=args.schedule, milestones=tuple(parse_floats(args.milestones, "--milestones")),
                  gamma=args.gamma, step_size=args.step_size, warmup_epochs=args.warmup_epochs,
                  label_smoothing=args.label_smoothing, seed=args.seed, device=args.device, amp=args.amp,
                  sync_bn=args.sync_bn, progress=progress, num_workers=args.workers)
    values.update(overrides)
    return TrainConfig(**values).validate()


def load_datasets(args: argparse.Namespace, *, train: bool = True, test: bool = True):
    """``(train_split or None, test_split or None)`` of ``--dataset``, optionally cut to ``--limit`` samples."""
    from ..data import get_dataset, subset

    out = []
    for want, is_train in ((train, True), (test, False)):
        if not want:
            out.append(None)
            continue
        ds = get_dataset(args.dataset, root=args.data_dir, train=is_train)
        if getattr(args, "limit", None):
            if args.limit < 1:
                raise PrunekitError(f"--limit must be positive, got {args.limit}")
            ds = subset(ds, min(args.limit, len(ds)))  # a split smaller than --limit is used whole
        out.append(ds)
    return tuple(out)


def model_from_args(args: argparse.Namespace, data: Any | None):
    """Load ``--checkpoint`` (checked against ``--model`` if given) or build ``--model`` fresh for ``data``.

    ``--model module:callable [--model-kwargs JSON]`` builds a user architecture (the user named it: trusted), and
    with ``--checkpoint`` loads a plain state_dict file or a prunekit checkpoint of it. Returns a
    :class:`~prunekit.checkpoint.Checkpoint` (``masks``/``meta`` empty for a fresh model).
    """
    from ..checkpoint import Checkpoint, import_state_dict, load_checkpoint
    from ..factory import build_model, is_factory_name, parse_kwargs
    from ..models import create_model, list_models, model_info

    name = args.model
    kwargs = parse_kwargs(getattr(args, "model_kwargs", None))
    if kwargs and not is_factory_name(name):
        raise PrunekitError("--model-kwargs applies to a --model module:callable factory")
    size = parse_input_size(getattr(args, "input_size", None))
    trusted = list(getattr(args, "trust_factory", None) or []) + ([name] if is_factory_name(name) else [])
    if args.checkpoint:
        from ..checkpoint import _is_foreign_weights_file

        if is_factory_name(name) and _is_foreign_weights_file(args.checkpoint):
            ckpt = import_state_dict(args.checkpoint, name, model_kwargs=kwargs)
            if size is not None:
                ckpt.model.prunekit_input_size = list(size)
        else:
            ckpt = load_checkpoint(args.checkpoint, expect_model=name, factory=trusted or None)
        if data is not None:
            check_compatible(ckpt.model, data, args.checkpoint)
        return ckpt
    torch.manual_seed(args.seed)
    if is_factory_name(name):
        model = build_model(name, kwargs, input_size=size or (3, 224, 224))
        return Checkpoint(model=model, masks=None, meta={})
    name = name or DEFAULT_MODEL
    natural = model_info(name) if name in list_models() else None
    if data is not None:
        num_classes, in_channels = data.num_classes, data.in_channels
    elif natural is not None and getattr(args, "dataset", DEFAULT_DATASET) is None:
        num_classes, in_channels = natural.num_classes, natural.input_size[0]  # no dataset: the model's own input
    else:
        num_classes, in_channels = 10, 3
    if size is not None:  # planning on a fresh model for an explicit input size
        in_channels = size[0]
    return Checkpoint(model=create_model(name, num_classes=num_classes, in_channels=in_channels), masks=None,
                      meta={})


def check_compatible(model: nn.Module, data: Any, source: str) -> None:
    """A checkpoint trained for another number of classes or channels than ``data`` is a user error."""
    if getattr(model, "num_classes", data.num_classes) != data.num_classes or \
            getattr(model, "in_channels", data.in_channels) != data.in_channels:
        raise PrunekitError(f"{source} is a {model.num_classes}-class, {model.in_channels}-channel model; dataset "
                            f"{data.name!r} has {data.num_classes} classes and {data.in_channels} channels")


def data_facts(dataset: str | None) -> Any:
    """Name, classes, channels and image size of ``dataset`` without loading it (None for no dataset)."""
    from types import SimpleNamespace

    from ..data import dataset_info

    if dataset is None:
        return None

    info = dataset_info(dataset)
    return SimpleNamespace(name=info["name"], num_classes=info["num_classes"], in_channels=info["in_channels"],
                           image_size=tuple(info["image_size"]))


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    """Parse ``--input-size C,H,W`` (None when not given)."""
    if not text:
        return None
    try:
        vals = tuple(int(t) for t in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) < 1:
        raise PrunekitError(f"--input-size must be C,H,W with positive integers, got {text!r}")
    return vals  # type: ignore[return-value]


def resolve_input_size(args: argparse.Namespace, data: Any | None, model: nn.Module) -> tuple[int, int, int]:
    """``--input-size`` if given (its C must match the model), else the data's, else the model's default."""
    size = parse_input_size(getattr(args, "input_size", None))
    if size is None:
        return input_size(data, model)
    if size[0] != getattr(model, "in_channels", size[0]):
        raise PrunekitError(f"--input-size {args.input_size} has {size[0]} channels; the model takes "
                            f"{model.in_channels}")
    return size


def input_size(data: Any | None, model: nn.Module | None = None) -> tuple[int, int, int]:
    """Model input size (C, H, W) for ``data``, or a default for the model when there is no data."""
    if data is not None:
        return (data.in_channels, *data.image_size)
    from ..models import list_models, model_info

    c = getattr(model, "in_channels", 3)
    name = getattr(model, "prunekit_name", "")
    if name in list_models():
        _, h, w = model_info(name).input_size
        return (c, h, w)
    natural = getattr(model, "prunekit_input_size", None)  # user models: set by the CLI / factory loader
    if natural is not None:
        return (c, int(natural[-2]), int(natural[-1]))
    return (c, 32, 32)


def out_dir(args: argparse.Namespace) -> Path:
    """The ``--out`` folder, created; a path that exists as a file is a user error."""
    p = Path(args.out)
    if p.exists() and not p.is_dir():
        raise PrunekitError(f"--out {p} exists and is not a folder")
    p.mkdir(parents=True, exist_ok=True)
    return p


def standard_fields(model: nn.Module, size: tuple[int, int, int], top1: float | None = None,
                    top5: float | None = None) -> dict[str, Any]:
    """The keys every command's ``summary.json`` shares (recipes and tables read these): accuracy of the model
    the command produced (None when not evaluated), params, non-zero params, FLOPs dense and sparse-aware."""
    return {"top1": top1, "top5": top5, **model_metrics(model, size, latency=False)}


def model_metrics(model: nn.Module, size: tuple[int, int, int], *, latency: bool = True,
                  latency_batch: int = 1, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Params, non-zero params, FLOPs (dense and sparse-aware, 2·MACs) and measured latency of ``model``."""
    from ..metrics import measure_latency, summarize

    m = summarize(model, (1, *size))
    if latency:
        m["latency_ms"] = measure_latency(model, size, batch_size=latency_batch, device=device).median_ms
        m["latency_batch"] = latency_batch
    return m
