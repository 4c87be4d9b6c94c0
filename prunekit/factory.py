"""User architectures built by a named factory (``torchvision.models:resnet50``, ``timm:create_model``,
``mypkg.nets:Net``), and the rule that keeps a checkpoint file from ever choosing code to run.

A factory is named ``"module.path:attr"`` (``attr`` may be dotted) and called with JSON keyword arguments. The
model it returns is marked with ``prunekit_factory = {"target": ..., "kwargs": ...}`` so that a checkpoint can
record how to build it. **Security:** loading such a checkpoint imports and calls the factory only if the caller
allows that exact target (``load_model(path, factory="mypkg.nets:Net")``, CLI ``--trust-factory``); a name found
only inside a file is never imported.
"""
from __future__ import annotations

import importlib
import json
import re
from typing import Any, Callable, Iterable, Mapping

import torch.nn as nn

from .errors import CheckpointError, PrunekitError

_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
                     r"(\.[A-Za-z_][A-Za-z0-9_]*)*$")
FactorySpec = dict[str, Any]
Allowed = str | Iterable[str] | Callable[..., nn.Module] | None


def is_factory_name(name: str | None) -> bool:
    """True for ``"module:callable"`` names (as opposed to zoo model names)."""
    return bool(name) and ":" in str(name)


def check_target(target: Any) -> str:
    """Validate a ``"module.path:attr"`` string (no code runs); raise PrunekitError otherwise."""
    if not isinstance(target, str) or not _TARGET.match(target):
        raise PrunekitError(f"a model factory must be named 'module.path:callable', got {target!r}")
    return target


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs``: a JSON object (``{}`` when not given)."""
    if text is None or not str(text).strip():
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PrunekitError(f"--model-kwargs is not valid JSON: {exc}") from None
    except RecursionError:
        raise PrunekitError("--model-kwargs is nested too deeply") from None
    if not isinstance(obj, dict):
        raise PrunekitError(f"--model-kwargs must be a JSON object, got {text!r}")
    return obj


def resolve_factory(target: str) -> Callable[..., nn.Module]:
    """Import ``module.path`` and return its attribute ``attr`` (the caller has decided to trust ``target``)."""
    target = check_target(target)
    mod_name, attr = target.split(":", 1)
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise PrunekitError(f"cannot import {mod_name!r} for model factory {target!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PrunekitError(f"model factory {target!r}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PrunekitError(f"model factory {target!r} is not callable")
    return obj


def infer_io(model: nn.Module) -> tuple[int | None, int | None]:
    """``(num_classes, in_channels)`` read from the model's last Linear and first conv (None if absent)."""
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return (lins[-1].out_features if lins else None), (convs[0].in_channels if convs else None)


def mark(model: nn.Module, target: str, kwargs: Mapping[str, Any], input_size: Any = None) -> nn.Module:
    """Record on ``model`` how it was built (``prunekit_factory``) and its natural input size."""
    try:
        json.dumps(dict(kwargs))
    except (TypeError, ValueError, RecursionError):
        raise PrunekitError(f"model factory {target!r}: keyword arguments must be JSON values") from None
    model.prunekit_factory = {"target": check_target(target), "kwargs": dict(kwargs)}
    classes, channels = infer_io(model)
    if classes is not None:
        model.num_classes = classes
    if channels is not None:
        model.in_channels = channels
    if input_size is not None:
        model.prunekit_input_size = [int(v) for v in input_size]
    if not hasattr(model, "prunekit_cfg"):
        model.prunekit_cfg = None
    return model


def build_model(target: str, kwargs: Mapping[str, Any] | None = None, *, input_size: Any = None) -> nn.Module:
    """Import and call the factory ``target`` with ``kwargs``; return the model, marked for saving.

    Example: ``build_model("mypkg.nets:Net", {"width": 32}, input_size=(3, 32, 32))``.

    >>> import prunekit
    >>> layer = prunekit.build_model("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    >>> prunekit.count_params(layer), layer.prunekit_factory["target"]
    (10, 'torch.nn:Linear')
    """
    fn = resolve_factory(target)
    kwargs = dict(kwargs or {})
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise PrunekitError(f"model factory {target!r} returned a {type(model).__name__}, not an nn.Module")
    return mark(model, target, kwargs, input_size)


def allowed(target: str, allow: Allowed) -> bool:
    """Whether the caller's ``allow`` (a target, a list of targets, or a callable) covers ``target``."""
    if allow is None:
        return False
    if callable(allow):
        return True
    if isinstance(allow, str):
        return allow == target
    return target in set(allow)


def build_from_spec(spec: Mapping[str, Any], allow: Allowed, source: str) -> nn.Module:
    """Build the model a checkpoint's ``factory`` entry describes, if ``allow`` permits it (else a clear error)."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("target"), str) or \
            not isinstance(spec.get("kwargs", {}), Mapping):
        raise CheckpointError(f"{source}: malformed factory entry in the metadata")
    target = spec["target"]
    if not allowed(target, allow):
        raise CheckpointError(
            f"{source} is built by the factory {target!r}; prunekit never imports or calls code named by a file. "
            f"If you trust it, pass factory={target!r} (CLI: --trust-factory {target})")
    kwargs = dict(spec.get("kwargs") or {})
    input_size = spec.get("input_size")
    if callable(allow) and not isinstance(allow, str):
        model = allow(**kwargs)
        if not isinstance(model, nn.Module):
            raise PrunekitError(f"the factory passed for {target!r} returned a {type(model).__name__}")
        return mark(model, target, kwargs, input_size)
    return build_model(target, kwargs, input_size=input_size)
