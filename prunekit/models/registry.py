"""Model registry: ``create_model(name, num_classes, cfg, in_channels, **options)`` builds any zoo model.

Every registered model carries one :class:`ModelInfo` record (timm-style per-model metadata), the one place for
per-model knowledge: its natural input size, the mean/std of the data it is trained on, family, default number of
classes and, for the structured-pruning benchmarks, the named L1-filter plans defined on it (``resnet56-A`` ...) and
its iterative (kesi) per-round defaults. ``model_info(name)`` returns it; :func:`named_plan` finds a plan by name and
:func:`natural_input_size` gives any model's (C, H, W). Library and CLI code read these instead of hard-coding them.

**Options.** A builder ``fn(num_classes=10, cfg=None, in_channels=3, *, opt=default, ...)`` declares the keyword
options it accepts simply by having them as extra keyword parameters with defaults (e.g. the WRNs' ``dropout``).
``create_model(name, ..., dropout=0.5)`` passes them on; an option the model does not declare is a
:class:`~prunekit.errors.PrunekitError` naming the accepted ones (:func:`model_options` lists them with their
defaults). The *effective* options (defaults overlaid with what was given) are stored on the model as
``model.prunekit_options``, a JSON-able dict, and saved in checkpoints, so ``create_model(name, num_classes, cfg,
in_channels, **model.prunekit_options)`` rebuilds the same network.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch.nn as nn

from ..data.disk import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD
from ..errors import PrunekitError, UnknownNameError, check_number
from .bounds import MAX_CLASSES, MAX_IN_CHANNELS, bounded_build, check_cfg_bounds

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class NamedPlan:
    """A published per-layer L1-filter recipe on zoo model ``model``: ``stage_ratios`` (one per stage), or
    ``ratio`` on ``layers`` only; the blocks ``skip`` (names) and the convs ``skip_ids`` (Li et al.'s 1-based conv
    ids) are kept whole. Also the per-round defaults of the iterative (kesi) schedule."""

    model: str
    stage_ratios: tuple[float, ...] = ()
    ratio: float = 0.0
    layers: tuple[str, ...] = ()
    skip_ids: tuple[int, ...] = ()
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one zoo model.

    ``input_size``: the natural (C, H, W) input (3×32×32 for the CIFAR families, 3×224×224 for the ImageNet
    ones). ``mean``/``std``: the per-channel normalisation of the data it is trained on (``dataset``: CIFAR-10,
    ImageNet or MNIST statistics by default, from the input size). ``family``: a short family name (``"vgg"``,
    ``"resnet_cifar"``, ``"imagenet"``, ...). ``num_classes``: the default head. ``source``: the seed or paper the
    architecture follows. ``notes``: free text. ``plans``: the named L1-filter plans on this model (name ->
    :class:`NamedPlan`); ``iterative``: the per-round defaults of iterative L1-filter pruning (None: none defined).

    >>> info = model_info("resnet56")
    >>> info.input_size, info.family, sorted(info.plans)
    ((3, 32, 32), 'resnet_cifar', ['resnet56-A', 'resnet56-B'])
    >>> info.iterative.stage_ratios
    (0.1, 0.2, 0.3)
    """

    name: str
    input_size: tuple[int, int, int] = (3, 32, 32)
    family: str = ""
    num_classes: int = 10
    source: str = ""
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    mean: tuple[float, ...] = CIFAR_MEAN
    std: tuple[float, ...] = CIFAR_STD
    dataset: str = "cifar10"
    plans: Mapping[str, NamedPlan] = field(default_factory=dict, hash=False)
    iterative: NamedPlan | None = None


_REGISTRY: dict[str, ModelFn] = {}
_INFO: dict[str, ModelInfo] = {}
_OPTIONS: dict[str, dict[str, Any]] = {}
_CORE_ARGS = ("num_classes", "cfg", "in_channels")


def _declared_options(name: str, fn: ModelFn) -> dict[str, Any]:
    """The keyword options (name -> default) a builder declares beyond ``num_classes, cfg, in_channels``."""
    opts: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in _CORE_ARGS:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            raise ValueError(f"model {name!r}: builder parameter {p.name!r} must be a keyword option with a "
                             "default (no *args/**kwargs)")
        opts[p.name] = p.default
    return opts


def _default_normalisation(input_size: Sequence[int]) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """(dataset, mean, std) a model of this input size is trained on by default."""
    if min(input_size[1:]) >= 128:
        return "imagenet", IMAGENET_MEAN, IMAGENET_STD
    if input_size[0] == 1:
        return "mnist", MNIST_MEAN, MNIST_STD
    return "cifar10", CIFAR_MEAN, CIFAR_STD


def register_model(name: str, *, input_size: Sequence[int] = (3, 32, 32), family: str = "",
                   num_classes: int = 10, source: str = "", notes: str = "",
                   tags: Sequence[str] = (), mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   dataset: str | None = None, plans: Mapping[str, NamedPlan] | None = None,
                   iterative: NamedPlan | None = None) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register a builder ``fn(num_classes, cfg, in_channels, **options) -> nn.Module`` under ``name``
    with its metadata (see :class:`ModelInfo`; ``mean``/``std``/``dataset`` default from the input size); extra
    keyword parameters of ``fn`` are its options."""
    size = tuple(int(v) for v in input_size)
    ds, dmean, dstd = _default_normalisation(size)
    if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):  # type: ignore[arg-type]
        raise ValueError(f"model {name!r}: give mean and std together, one value per channel")

    def deco(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        for plan_name, plan in (plans or {}).items():
            if plan.model != name:
                raise ValueError(f"plan {plan_name!r} is for {plan.model!r}, registered on {name!r}")
            if plan_name in named_plans():
                raise ValueError(f"plan {plan_name!r} registered twice")
        _OPTIONS[name] = _declared_options(name, fn)
        _REGISTRY[name] = fn
        _INFO[name] = ModelInfo(name=name, input_size=size, family=family,  # type: ignore[arg-type]
                                num_classes=int(num_classes), source=source, notes=notes, tags=tuple(tags),
                                mean=tuple(float(v) for v in (mean if mean is not None else dmean)),
                                std=tuple(float(v) for v in (std if std is not None else dstd)),
                                dataset=dataset or ds, plans=dict(plans or {}), iterative=iterative)
        return fn

    return deco


def list_models() -> list[str]:
    """Names of every registered model, sorted.

    >>> import prunekit
    >>> [m for m in prunekit.list_models() if m.startswith("resnet5")]
    ['resnet50', 'resnet56']
    """
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The metadata record of zoo model ``name`` (:class:`UnknownNameError` for an unknown name).

    >>> import prunekit
    >>> info = prunekit.model_info("resnet18")
    >>> info.input_size, info.num_classes, info.mean
    ((3, 224, 224), 1000, (0.485, 0.456, 0.406))
    """
    if name not in _INFO:
        raise UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return _INFO[name]


def named_plans() -> dict[str, NamedPlan]:
    """Every named L1-filter plan of the zoo (plan name -> :class:`NamedPlan`), in registration order.

    >>> sorted(named_plans())[:3]
    ['resnet110-A', 'resnet110-B', 'resnet56-A']
    """
    return {k: v for info in _INFO.values() for k, v in info.plans.items()}


def named_plan(name: str) -> NamedPlan:
    """The named L1-filter plan ``name`` (``vgg16-A``, ``resnet56-A`` ...; :class:`UnknownNameError` otherwise).

    >>> named_plan("resnet56-B").stage_ratios
    (0.6, 0.3, 0.1)
    """
    plans = named_plans()
    if name not in plans:
        raise UnknownNameError(f"unknown L1-filter plan {name!r}; valid plans: {', '.join(plans)}")
    return plans[name]


def natural_input_size(model: nn.Module) -> tuple[int, ...] | None:
    """The natural input of ``model`` without the batch dimension: a zoo model's (C, H, W) with the model's own
    ``in_channels``, else the ``prunekit_input_size`` a factory/user model recorded (as recorded), else None.

    >>> natural_input_size(create_model("lenet5", in_channels=1))
    (1, 28, 28)
    """
    name = getattr(model, "prunekit_name", None)
    if name in _INFO:
        c, h, w = _INFO[name].input_size
        return (int(getattr(model, "in_channels", c)), h, w)
    natural = getattr(model, "prunekit_input_size", None)
    return tuple(int(v) for v in natural) if natural is not None else None


def model_options(name: str) -> dict[str, Any]:
    """The keyword options zoo model ``name`` accepts, with their defaults (``{}`` for most models)."""
    if name not in _OPTIONS:
        raise UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return dict(_OPTIONS[name])


def create_model(name: str, num_classes: int = 10, cfg: Sequence[Any] | None = None,
                 in_channels: int = 3, **options: Any) -> nn.Module:
    """Build model ``name``; ``cfg`` rebuilds a pruned variant (see each family's docstring); ``options`` are the
    model's declared keyword options (see :func:`model_options`, e.g. ``dropout`` for the WRNs).

    The returned module has attributes ``prunekit_name``, ``prunekit_cfg`` (the cfg actually used, a plain list),
    ``prunekit_options`` (the effective options, a JSON-able dict) and ``num_classes`` / ``in_channels`` so that
    it can be saved and rebuilt.

    >>> import prunekit
    >>> model = prunekit.create_model("resnet20", num_classes=10)
    >>> model.prunekit_name, sum(p.numel() for p in model.parameters())
    ('resnet20', 269722)
    >>> prunekit.create_model("wrn_16_8", dropout=0.0).prunekit_options
    {'dropout': 0.0}
    """
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    accepted = _OPTIONS[name]
    bad = sorted(set(options) - set(accepted))
    if bad:
        ok = ", ".join(f"{k} (default {v!r})" for k, v in accepted.items()) or "none"
        raise PrunekitError(f"model {name!r} has no option {', '.join(bad)}; accepted options: {ok}")
    effective = {**accepted, **options}
    try:
        effective = json.loads(json.dumps(effective))
    except (TypeError, ValueError):
        raise PrunekitError(f"model {name!r}: option values must be plain numbers, strings, booleans or lists, "
                            f"got {options!r}") from None
    check_number("num_classes", num_classes, low=1, high=MAX_CLASSES, integer=True)
    check_number("in_channels", in_channels, low=1, high=MAX_IN_CHANNELS, integer=True)
    cfg_list = check_cfg_bounds(cfg, f"{name}: cfg")
    what = f"model {name!r} (num_classes {num_classes}, in_channels {in_channels}, cfg {_brief(cfg_list)})"
    model = bounded_build(lambda: _REGISTRY[name](num_classes=num_classes, cfg=cfg_list, in_channels=in_channels,
                                                  **options), what)
    model.prunekit_name = name
    if not hasattr(model, "prunekit_cfg"):
        model.prunekit_cfg = list(cfg) if cfg is not None else None
    if not hasattr(model, "prunekit_options"):  # a builder may store normalised values itself
        model.prunekit_options = effective
    model.num_classes = num_classes
    model.in_channels = in_channels
    return model


def _brief(cfg: Sequence[Any] | None) -> str:
    """A cfg for a message: short ones whole, long ones cut."""
    if cfg is None:
        return "default"
    text = json.dumps(list(cfg))
    return text if len(text) <= 80 else text[:77] + "..."
