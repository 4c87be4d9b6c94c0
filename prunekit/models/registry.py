"""Model registry: ``create_model(name, num_classes, cfg, in_channels, **options)`` builds any zoo model.

Every registered model carries a :class:`ModelInfo` record (timm-style per-model metadata): its natural input
size, family, default number of classes and, for the structured-pruning benchmarks, the named plans defined on it.
``model_info(name)`` returns it; CLI commands use it instead of hard-coding per-model knowledge.

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
from typing import Any, Callable, Sequence

import torch.nn as nn

from ..errors import PrunekitError, UnknownNameError

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one zoo model.

    ``input_size``: the natural (C, H, W) input (3×32×32 for the CIFAR families, 3×224×224 for the ImageNet
    ones). ``family``: a short family name (``"vgg"``, ``"resnet_cifar"``, ``"imagenet"``, ...). ``num_classes``:
    the default head. ``source``: the seed or paper the architecture follows. ``notes``: free text.
    """

    name: str
    input_size: tuple[int, int, int] = (3, 32, 32)
    family: str = ""
    num_classes: int = 10
    source: str = ""
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


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


def register_model(name: str, *, input_size: Sequence[int] = (3, 32, 32), family: str = "",
                   num_classes: int = 10, source: str = "", notes: str = "",
                   tags: Sequence[str] = ()) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register a builder ``fn(num_classes, cfg, in_channels, **options) -> nn.Module`` under ``name``
    with its metadata (see :class:`ModelInfo`); extra keyword parameters of ``fn`` are its options."""

    def deco(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _OPTIONS[name] = _declared_options(name, fn)
        _REGISTRY[name] = fn
        _INFO[name] = ModelInfo(name=name, input_size=tuple(int(v) for v in input_size), family=family,  # type: ignore[arg-type]
                                num_classes=int(num_classes), source=source, notes=notes, tags=tuple(tags))
        return fn

    return deco


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The metadata record of zoo model ``name`` (:class:`UnknownNameError` for an unknown name)."""
    if name not in _INFO:
        raise UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return _INFO[name]


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
    model = _REGISTRY[name](num_classes=num_classes, cfg=list(cfg) if cfg is not None else None,
                            in_channels=in_channels, **options)
    model.prunekit_name = name
    if not hasattr(model, "prunekit_cfg"):
        model.prunekit_cfg = list(cfg) if cfg is not None else None
    if not hasattr(model, "prunekit_options"):  # a builder may store normalised values itself
        model.prunekit_options = effective
    model.num_classes = num_classes
    model.in_channels = in_channels
    return model
