"""Helpers shared by the commands: data, model and output-folder plumbing driven by a command's options.

Every helper takes the command's options object (any object with the same attribute names works).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import PrunekitError


DEFAULT_MODEL = "resnet20"
DEFAULT_DATASET = "digits"


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job: only rank 0 writes reports."""
    from ..engine.distributed import env_dist_info

    return env_dist_info().is_main


def parse_cfg(text: str | None) -> list[Any] | None:
    """``--cfg``: a JSON list (``[16,"M",32]``) or comma-separated entries with ``M`` for max-pool (``16,M,32``)."""
    import json

    if isinstance(text, (list, tuple)):  # a recipe's YAML list
        return _check_cfg(list(text))
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
        return _check_cfg(cfg)
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


def _check_cfg(cfg: list[Any]) -> list[Any]:
    """Entries are integers or ``"M"`` (widths are bounded where the model is built)."""
    for v in cfg:
        if v != "M" and (isinstance(v, bool) or not isinstance(v, int)):
            raise PrunekitError(f"--cfg entries must be integers or 'M', got {v!r}")
    return cfg


def parse_floats(text: str, name: str) -> list[float]:
    """Parse ``"0.1,0.2"`` into floats, or raise a PrunekitError naming the flag."""
    try:
        return [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise PrunekitError(f"{name} must be comma-separated numbers, got {text!r}") from None


def train_config(args: Any, **overrides: Any):
    """Build a :class:`TrainConfig` from a command's options (``overrides`` win)."""
    from ..engine.trainer import TrainConfig

    progress = args.progress if getattr(args, "progress", None) is not None else sys.stderr.isatty()
    milestones = args.milestones
    if isinstance(milestones, str):
        milestones = parse_floats(milestones, "--milestones")
    values = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                  momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                  schedule=args.schedule, milestones=tuple(float(m) for m in milestones),
                  gamma=args.gamma, step_size=args.step_size, warmup_epochs=args.warmup_epochs,
                  label_smoothing=args.label_smoothing, seed=args.seed, device=args.device, amp=args.amp,
                  sync_bn=args.sync_bn, progress=progress, num_workers=args.workers)
    values.update(overrides)
    return TrainConfig(**values).validate()


def resume_kwargs(args: Any) -> dict[str, Any]:
    """``resume`` / ``resume_anyway`` of a training command's options, as the training entry points take them."""
    return {"resume": bool(getattr(args, "resume", False)),
            "resume_anyway": bool(getattr(args, "resume_anyway", False))}


def load_datasets(args: Any, *, train: bool = True, test: bool = True):
    """``(train_split or None, test_split or None)`` of ``--dataset``, optionally cut to ``--limit`` samples."""
    from ..data import get_dataset, subset

    out = []
    for want, is_train in ((train, True), (test, False)):
        if not want:
            out.append(None)
            continue
        ds = get_dataset(args.dataset, root=args.data_dir, train=is_train)
        if getattr(args, "limit", None) is not None:
            from ..errors import check_number

            check_number("--limit", args.limit, low=1, integer=True)
            ds = subset(ds, min(args.limit, len(ds)))  # a split smaller than --limit is used whole
        out.append(ds)
    return tuple(out)


def model_from_args(args: Any, data: Any | None):
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
    if is_factory_name(name):
        with seeded(args.seed):
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
    with seeded(args.seed):
        model = create_model(name, num_classes=num_classes, in_channels=in_channels)
    return Checkpoint(model=model, masks=None, meta={})


def seeded(seed: int) -> Any:
    """A context in which torch's default RNG is seeded with ``seed``; the caller's RNG state is restored after
    (model initialisation is reproducible without reseeding the user's global RNG)."""
    import contextlib

    @contextlib.contextmanager
    def _ctx():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    return _ctx()


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


MAX_INPUT_ELEMENTS = 1 << 26  # C*H*W of one sample (64 Mi values: 8192x8192 RGB)


def parse_input_size(text: Any) -> tuple[int, int, int] | None:
    """Parse ``--input-size C,H,W`` (text or a recipe's list; None when not given), bounded so a typo cannot make
    prunekit allocate without limit."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    parts = list(text) if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        vals = tuple(int(str(t).strip()) for t in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) < 1:
        raise PrunekitError(f"--input-size must be C,H,W with positive integers, got {text!r}")
    if vals[0] * vals[1] * vals[2] > MAX_INPUT_ELEMENTS:
        raise PrunekitError(f"--input-size {','.join(map(str, vals))} is too large: C*H*W may be at most "
                            f"{MAX_INPUT_ELEMENTS:,}")
    return vals  # type: ignore[return-value]


def resolve_input_size(args: Any, data: Any | None, model: nn.Module) -> tuple[int, int, int]:
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
    from ..models import natural_input_size

    natural = natural_input_size(model) if model is not None else None  # zoo record, or what a factory recorded
    return natural if natural is not None else (getattr(model, "in_channels", 3), 32, 32)


def out_dir(args: Any) -> Path:
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
                  latency_batch: int = 1, device: str | torch.device = "cpu",
                  latency_budget: float | None = None) -> dict[str, Any]:
    """Params, non-zero params, FLOPs (dense and sparse-aware, 2·MACs) and measured latency of ``model``:
    ``latency_ms`` (the median, None when not timed), ``latency`` (median, quartiles, passes, or why it was not
    timed) within ``latency_budget`` seconds (default :data:`~prunekit.metrics.latency.DEFAULT_BUDGET_S`; 0: not
    timed)."""
    from ..metrics import summarize
    from ..metrics.latency import DEFAULT_BUDGET_S, compare_latency

    m = summarize(model, (1, *size))
    if latency:
        budget = DEFAULT_BUDGET_S if latency_budget is None else float(latency_budget)
        comps = compare_latency({"model": model}, size, batch_sizes=[latency_batch], budget_s=budget, device=device)
        rep = comps[0].reports.get("model") if comps else None
        m["latency_ms"] = rep.median_ms if rep is not None else None
        m["latency_batch"] = latency_batch
        m["latency"] = {"budget_s": budget, **(rep.as_dict() if rep is not None else {}),
                        "skipped": comps[0].skipped if comps else "not timed (--latency-budget 0)"}
    return m


def latency_cell(stats: Mapping[str, Any] | None) -> str:
    """A table cell for a latency: ``"1.53 (IQR 1.48-1.60, n=40)"``, or ``"-"`` when not timed."""
    if not stats or stats.get("median_ms") is None:
        return "-"
    return f"{stats['median_ms']:.4g} (IQR {stats['q1_ms']:.4g}-{stats['q3_ms']:.4g}, n={stats['repeats']})"
