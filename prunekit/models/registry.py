"""Model registry: ``create_model(name, num_classes, cfg, in_channels)`` builds any zoo model.

Every registered model carries a :class:`ModelInfo` record (timm-style per-model metadata): its natural input
size, family, default number of classes and, for the structured-pruning benchmarks, the named plans defined on it.
``model_info(name)`` returns it; CLI commands use it instead of hard-coding per-model knowledge.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch.nn as nn

from ..errors import UnknownNameError

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


def register_model(name: str, *, input_size: Sequence[int] = (3, 32, 32), family: str = "",
                   num_classes: int = 10, source: str = "", notes: str = "",
                   tags: Sequence[str] = ()) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register a builder ``fn(num_classes, cfg, in_channels) -> nn.Module`` under ``name`` with its
    metadata (see :class:`ModelInfo`)."""

    def deco(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
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


def create_model(name: str, num_classes: int = 10, cfg: Sequence[Any] | None = None,
                 in_channels: int = 3) -> nn.Module:
    """Build model ``name``; ``cfg`` rebuilds a pruned variant (see each family's docstring).

    The returned module has attributes ``prunekit_name``, ``prunekit_cfg`` (the cfg actually used, a plain list)
    and ``num_classes`` / ``in_channels`` so that it can be saved and rebuilt.
    """
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    model = _REGISTRY[name](num_classes=num_classes, cfg=list(cfg) if cfg is not None else None,
                            in_channels=in_channels)
    model.prunekit_name = name
    if not hasattr(model, "prunekit_cfg"):
        model.prunekit_cfg = list(cfg) if cfg is not None else None
    model.num_classes = num_classes
    model.in_channels = in_channels
    return model
