"""prunekit: neural-network pruning for PyTorch.

Unstructured magnitude pruning (layer-wise, global, per-kind, GP, GPMT, N:M), structured pruning of any traceable
model with real channel removal, sparsity schedules for any training loop, retraining, and honest measurements
(accuracy, params, FLOPs, latency). The main entry points are attributes of this package::

    import prunekit
    model = prunekit.create_model("resnet20")
    res = prunekit.prune_unstructured(model, "global", 0.5)     # weight masks
    small = prunekit.prune_structured(prunekit.create_model("resnet20"), ratio=0.3).model   # channels removed
    print(prunekit.count_params(small), prunekit.count_flops(small, (1, 3, 32, 32)).macs)

They are imported on first use (``import prunekit`` itself loads neither torch nor any submodule); see
``docs/API.md`` for each one's signature and example. :data:`API` maps every public name to where it lives.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import PrunekitError

__version__ = "0.1.0"

#: Public name -> ``(module, attribute)``; imported lazily by :func:`__getattr__`.
API: dict[str, tuple[str, str]] = {
    # models and checkpoints
    "create_model": ("prunekit.models.registry", "create_model"),
    "list_models": ("prunekit.models.registry", "list_models"),
    "model_info": ("prunekit.models.registry", "model_info"),
    "build_model": ("prunekit.factory", "build_model"),
    "load_model": ("prunekit.checkpoint", "load_model"),
    "load_checkpoint": ("prunekit.checkpoint", "load_checkpoint"),
    "save_model": ("prunekit.checkpoint", "save_model"),
    # data
    "get_dataset": ("prunekit.data.datasets", "get_dataset"),
    # pruning
    "prune_unstructured": ("prunekit.pruning.unstructured", "prune_unstructured"),
    "prune_structured": ("prunekit.pruning.structured.pruner", "prune_structured"),
    "Sparsifier": ("prunekit.pruning.sparsifier", "Sparsifier"),
    "OneShot": ("prunekit.pruning.schedules", "OneShot"),
    "Linear": ("prunekit.pruning.schedules", "Linear"),
    "AGP": ("prunekit.pruning.schedules", "AGP"),
    "Cubic": ("prunekit.pruning.schedules", "Cubic"),
    "Rounds": ("prunekit.pruning.schedules", "Rounds"),
    "nm_masks": ("prunekit.pruning.nm", "nm_masks"),
    "to_semi_structured": ("prunekit.pruning.nm", "to_semi_structured"),
    # training
    "fit": ("prunekit.engine.trainer", "fit"),
    "TrainConfig": ("prunekit.engine.trainer", "TrainConfig"),
    # measuring and deploying
    "count_params": ("prunekit.metrics.params", "count_params"),
    "count_flops": ("prunekit.metrics.flops", "count_flops"),
    "measure_latency": ("prunekit.metrics.latency", "measure_latency"),
    "export": ("prunekit.deploy", "export"),
    # errors
    "PrunekitError": ("prunekit.errors", "PrunekitError"),
}

#: Subpackages and modules reachable as attributes (``prunekit.metrics``) without importing them first.
_SUBMODULES = ("checkpoint", "data", "deploy", "engine", "errors", "experiments", "factory", "metrics", "models",
               "pruning", "retrain", "utils")

__all__ = [*API, "API", "__version__"]

if TYPE_CHECKING:  # static checkers and IDEs see the real objects
    from .checkpoint import load_checkpoint, load_model, save_model
    from .data.datasets import get_dataset
    from .deploy import export
    from .engine.trainer import TrainConfig, fit
    from .factory import build_model
    from .metrics.flops import count_flops
    from .metrics.latency import measure_latency
    from .metrics.params import count_params
    from .models.registry import create_model, list_models, model_info
    from .pruning.nm import nm_masks, to_semi_structured
    from .pruning.schedules import AGP, Cubic, Linear, OneShot, Rounds
    from .pruning.sparsifier import Sparsifier
    from .pruning.structured.pruner import prune_structured
    from .pruning.unstructured import prune_unstructured


def __getattr__(name: str) -> Any:
    """Import a public entry point (or a submodule) on first access and cache it on the package."""
    if name in API:
        module, attr = API[name]
        if module.startswith("prunekit.models"):
            importlib.import_module("prunekit.models")  # the whole zoo registers itself
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES, "__doc__", "__name__", "__version__"})
