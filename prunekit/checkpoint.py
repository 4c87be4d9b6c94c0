"""Saving and loading models without pickle: ``(architecture, cfg/plan, state_dict)``.

A model file is a safetensors file whose metadata key ``prunekit`` holds JSON::

    {"format": "prunekit/1", "model": "resnet56", "num_classes": 10, "in_channels": 3,
     "cfg": [...] | null, "plan": {...} | null, "storage": "dense" | "sparse", "extra": {...}}

Masks are stored as bool tensors under ``"__mask__/<param name>"``. A folder written by any prunekit command
holds ``model.safetensors``; every loader accepts the folder or the file.
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .errors import CheckpointError, PrunekitError
from .utils.io import atomic_path

FORMAT = "prunekit/1"
# what torch.load(weights_only=True) raises on truncated, corrupt or code-carrying files
_TORCH_READ_ERRORS = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, IndexError, KeyError,
                      TypeError, AttributeError)
MODEL_FILE = "model.safetensors"
MASK_PREFIX = "__mask__/"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model, its masks (or None) and the metadata."""

    model: nn.Module
    masks: dict[str, torch.Tensor] | None
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_model_file(path: str | os.PathLike) -> Path:
    """Return the model file for ``path`` (a model file, or a folder holding ``model.safetensors``)."""
    p = Path(path)
    if p.is_dir():
        f = p / MODEL_FILE
        if not f.is_file():
            raise CheckpointError(f"no {MODEL_FILE} in folder {p}")
        return f
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def model_meta(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata that identifies ``model``'s architecture (name, classes, channels, cfg, plan)."""
    name = getattr(model, "prunekit_name", None)
    factory = getattr(model, "prunekit_factory", None)
    if name is None and factory is None:
        raise PrunekitError("only models built by prunekit.create_model or prunekit.build_model (or loaded by "
                            f"prunekit) can be saved; got a {type(model).__name__} that says nothing of how to "
                            "build it")
    meta = {
        "format": FORMAT,
        "model": name,
        "num_classes": int(getattr(model, "num_classes", 10)),
        "in_channels": int(getattr(model, "in_channels", 3)),
        "cfg": getattr(model, "prunekit_cfg", None),
        "plan": getattr(model, "prunekit_plan", None),
        "options": dict(getattr(model, "prunekit_options", None) or {}),
        "extra": dict(extra or {}),
    }
    if factory is not None:
        meta["factory"] = {**factory, "input_size": getattr(model, "prunekit_input_size", None)}
    return meta


def save_model(model: nn.Module, path: str | os.PathLike, masks: Mapping[str, torch.Tensor] | None = None,
               extra: Mapping[str, Any] | None = None, storage: str = "dense") -> Path:
    """Save ``model`` (and ``masks``) to ``path`` (a file, or a folder that gets ``model.safetensors``), atomically.

    ``storage="sparse"`` stores masked tensors as a bitmask plus non-zero values (requires ``masks``).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / MODEL_FILE
    meta = model_meta(model, extra)
    meta["storage"] = storage
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    masks = {k: v.detach().to("cpu", torch.bool).contiguous() for k, v in (masks or {}).items()}
    if storage == "sparse":
        from .pruning.sparse_format import pack

        tensors = pack(state, masks)
    elif storage == "dense":
        tensors = dict(state)
        tensors.update({MASK_PREFIX + k: v for k, v in masks.items()})
    else:
        raise PrunekitError(f"storage must be 'dense' or 'sparse', got {storage!r}")
    with atomic_path(path) as tmp:
        save_file(_dedupe_shared(tensors), str(tmp), metadata={"prunekit": json.dumps(meta)})
    return path


def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory: give each its own storage."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen:
            v = v.clone()
        seen.add(ptr)
        out[k] = v
    return out


def read_checkpoint_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                                          dict[str, torch.Tensor]]:
    """Read ``(meta, state_dict, masks)`` from a model file or folder, without building the model."""
    from safetensors import SafetensorError
    from safetensors import safe_open

    f = resolve_model_file(path)
    try:
        with safe_open(str(f), framework="pt") as fh:
            raw_meta = (fh.metadata() or {}).get("prunekit")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{f} is not a readable prunekit checkpoint ({exc})") from None
    if raw_meta is None:
        raise CheckpointError(f"{f} has no prunekit metadata: it was not written by prunekit.save_model")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise CheckpointError(f"{f} has corrupt prunekit metadata") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{f}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    if meta.get("storage") == "sparse":
        from .pruning.sparse_format import unpack

        state, masks = unpack(tensors)
    else:
        masks = {k[len(MASK_PREFIX):]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
        state = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
    return meta, state, masks


def build_from_meta(meta: Mapping[str, Any], factory: Any = None, source: str = "checkpoint") -> nn.Module:
    """Build the (possibly pruned) architecture that ``meta`` describes, with fresh weights: the dense model from
    its zoo name (or from a factory the caller allows, see :mod:`prunekit.factory`), then the channel plan."""
    plan = meta.get("plan")
    if meta.get("factory") is not None:
        from .factory import build_from_spec

        model = build_from_spec(meta["factory"], factory, source)
    else:
        from .models import create_model

        # the plan slices the dense base model; plans made before base_cfg existed used the pruned cfg
        cfg = plan.get("base_cfg") if isinstance(plan, Mapping) and "base_cfg" in plan and \
            plan.get("format") != "prunekit-plan/1" else meta.get("cfg")
        model = create_model(meta["model"], num_classes=meta["num_classes"], cfg=cfg,
                             in_channels=meta["in_channels"], **(meta.get("options") or {}))
    if plan is not None:
        from .pruning.structured.plan import apply_plan

        model = apply_plan(model, plan)
        if meta.get("cfg") is not None:
            model.prunekit_cfg = meta["cfg"]
    return model


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing/unexpected key or shape mismatch is a CheckpointError."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match model {getattr(model, 'prunekit_name', '?')}: "
                              f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                              f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{source}: tensor {k!r} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    expect_model: str | None = None, factory: Any = None) -> Checkpoint:
    """Rebuild the model saved at ``path`` (file or folder). No code is unpickled.

    ``expect_model`` (a zoo name, or a ``module:callable`` factory) makes a checkpoint of another architecture a
    clear error. ``factory``: the factory targets (a string or a list) this call may import and call when the
    checkpoint was built by one, or a callable to build it with; without it such a checkpoint is refused.
    """
    from .factory import is_factory_name

    if is_factory_name(expect_model) and factory is None:
        factory = expect_model  # the caller named the architecture: it is trusted
    if _is_foreign_weights_file(path):
        if expect_model is None:
            raise CheckpointError(f"{path} is a plain weights file without prunekit metadata: name its "
                                  "architecture (--model NAME or module:callable / expect_model=) to import it")
        return import_state_dict(path, expect_model, map_location)
    meta, state, masks = read_checkpoint_file(path)
    if expect_model is not None:
        held = (meta.get("factory") or {}).get("target") if meta.get("factory") else meta["model"]
        if held != expect_model:
            raise CheckpointError(f"checkpoint {path} holds a {held!r} model, not {expect_model!r}")
    model = build_from_meta(meta, factory, str(path))
    load_state_strict(model, state, str(path))
    if masks:
        from .pruning.masks import check_masks

        check_masks(model, masks)
    model.to(map_location)
    return Checkpoint(model=model, masks=masks or None, meta=meta)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", factory: Any = None
               ) -> nn.Module:
    """Rebuild any prunekit-saved model from its folder or file (dense, masked or structurally pruned).

    A user architecture saved with a factory loads only with ``factory=`` naming it (see :func:`load_checkpoint`).
    """
    return load_checkpoint(path, map_location, factory=factory).model


# ---------------------------------------------------------------------------------------------------------------
# Training state for --resume: tensors and primitives only, loaded with weights_only=True.

def save_train_state(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Atomically save a training-state dict (optimizer, scheduler, RNG, epoch) for exact resume."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training-state dict saved by :func:`save_train_state` (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_READ_ERRORS as exc:
        raise CheckpointError(f"cannot read training state {path}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# Importing weights saved by other tools (e.g. torchvision's .pth files): a state_dict for a zoo architecture.

_FOREIGN_SUFFIXES = (".pth", ".pt", ".bin", ".tar")


def _is_foreign_weights_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    if p.name.endswith(_FOREIGN_SUFFIXES):
        return True
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework="pt") as fh:
                return "prunekit" not in (fh.metadata() or {})
        except (SafetensorError, OSError, ValueError):
            return False
    return False


def import_state_dict(path: str | os.PathLike, model_name: str,
                      map_location: str | torch.device = "cpu", model_kwargs: Mapping[str, Any] | None = None
                      ) -> Checkpoint:
    """Load a plain state_dict (``torch.save`` with tensors only, or safetensors) into zoo model ``model_name``.

    The number of classes and input channels are read from the tensors (last 2-D weight, first 4-D weight), so a
    torchvision ImageNet weights file loads into prunekit's model of the same name. Never unpickles code: ``.pth``
    files are read with ``weights_only=True``; a ``{"state_dict": ...}`` wrapper is accepted.
    """
    from .models import create_model

    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except _TORCH_READ_ERRORS as exc:
            raise CheckpointError(f"cannot read {p} as a weights-only state_dict: {exc}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{p} does not hold a state_dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    mats = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    convs = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
    from .factory import build_model, is_factory_name

    if is_factory_name(model_name):
        model = build_model(model_name, model_kwargs)
    else:
        if not mats or not convs:
            raise CheckpointError(f"{p}: cannot infer classes/channels (no linear or conv weights)")
        model = create_model(model_name, num_classes=int(mats[-1].shape[0]), in_channels=int(convs[0].shape[1]))
    load_state_strict(model, state, str(p))
    model.to(map_location)
    meta = model_meta(model, {"imported_from": str(p)})
    return Checkpoint(model=model, masks=None, meta=meta)
