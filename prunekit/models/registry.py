"""Model registry: ``create_model(name, num_classes, cfg, in_channels)`` builds any zoo model."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch.nn as nn

from ..errors import UnknownNameError

ModelFn = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFn] = {}


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register a builder ``fn(num_classes, cfg, in_channels) -> nn.Module`` under ``name``."""

    def deco(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


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
