"""Hugging Face ``transformers`` models in prunekit checkpoints: the builder a file may name, and nothing more.

A checkpoint of a pruned HF model records ``{"class": "LlamaForCausalLM", "config": {...}}`` (the dense model's
config) and, when a stock config can describe the pruned model, ``pruned_config``. Loading imports the class by
name from the ``transformers`` package only (it must be a ``PreTrainedModel``), builds it from the config, then
the plan slices it: no code named by the file runs. ``transformers`` is imported on use (an optional extra:
``pip install prunekit[transformers]``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

from ..errors import CheckpointError, PrunekitError

MAX_CONFIG_KEYS = 4096


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise PrunekitError("this model needs the transformers package: pip install prunekit[transformers]") from None
    return transformers


def hf_spec(model: nn.Module) -> dict[str, Any] | None:
    """What rebuilds ``model``'s dense architecture: ``model.prunekit_hf`` (set when it was pruned), or, for an
    unpruned HF model, its class and config; None for any other model."""
    spec = getattr(model, "prunekit_hf", None)
    if spec is not None:
        return dict(spec)
    cfg = getattr(model, "config", None)
    if type(model).__module__.startswith("transformers.") and hasattr(cfg, "to_dict"):
        return {"class": type(model).__name__, "config": cfg.to_dict()}
    return None


def check_hf_spec(spec: Any, source: str) -> dict[str, Any]:
    """Validate a checkpoint's ``hf`` entry (a class name and JSON configs); builds nothing."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class"), str) or \
            not spec["class"].isidentifier() or not isinstance(spec.get("config"), Mapping):
        raise CheckpointError(f"{source}: metadata field 'hf' must be an object with a 'class' name and a 'config' "
                              "object")
    for key in ("config", "pruned_config"):
        cfg = spec.get(key)
        if cfg is not None and (not isinstance(cfg, Mapping) or len(cfg) > MAX_CONFIG_KEYS):
            raise CheckpointError(f"{source}: metadata field 'hf.{key}' must be a config object")
    return dict(spec)


def _config(tf: Any, cls: type, data: Mapping[str, Any], source: str) -> Any:
    try:
        return cls.config_class.from_dict(dict(data))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{source}: the Hugging Face config in the metadata is not valid for {cls.__name__} "
                              f"({exc})") from None


def build_hf(spec: Mapping[str, Any], source: str) -> nn.Module:
    """The dense model a checkpoint's ``hf`` entry describes (random weights), with ``prunekit_hf`` set."""
    tf = _transformers()
    spec = check_hf_spec(spec, source)
    cls = getattr(tf, spec["class"], None)
    if not isinstance(cls, type) or not issubclass(cls, tf.PreTrainedModel):
        raise CheckpointError(f"{source}: {spec['class']!r} is not a transformers model class")
    model = cls(_config(tf, cls, spec["config"], source))
    model.prunekit_hf = {"class": spec["class"], "config": dict(spec["config"])}
    return model


def finish_hf(model: nn.Module, spec: Mapping[str, Any], source: str) -> None:
    """After the plan: the pruned model's own config, when the file has one."""
    pruned = spec.get("pruned_config")
    if pruned is not None:
        model.config = _config(_transformers(), type(model), pruned, source)


def is_hf_folder(path: Any) -> bool:
    """A local folder holding a Hugging Face ``config.json``."""
    import os

    return isinstance(path, str) and os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def load_hf_folder(path: str) -> nn.Module:
    """The model saved in a local Hugging Face folder (config + safetensors), loaded offline by the class its config
    names (``architectures``), in eval mode."""
    tf = _transformers()
    try:
        cfg = tf.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise PrunekitError(f"{path}: not a Hugging Face model folder prunekit can read ({exc})") from None
    names = list(getattr(cfg, "architectures", None) or [])
    cls = getattr(tf, names[0], None) if names else None
    if not isinstance(cls, type) or not issubclass(cls, tf.PreTrainedModel):
        raise PrunekitError(f"{path}: config.json names no transformers model class in 'architectures' ({names})")
    try:
        return cls.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise PrunekitError(f"{path}: cannot load the {cls.__name__} weights ({str(exc).splitlines()[0]})") from None
