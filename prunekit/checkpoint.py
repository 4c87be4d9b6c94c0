"""Saving and loading models without pickle: ``(architecture, cfg/plan, state_dict)``.

A model file is a safetensors file whose metadata key ``prunekit`` holds JSON::

    {"format": "prunekit/1", "model": "resnet56", "num_classes": 10, "in_channels": 3,
     "cfg": [...] | null, "plan": {...} | null, "options": {...}, "storage": "dense" | "sparse",
     "dtype": "float32" | "float64" | "float16" | "bfloat16" | null, "checksum": "sha256:<hex>", "extra": {...},
     "state_versions": {"<module path>": <int>, ...}}

``state_versions`` are the state_dict versions of the modules that version their state (``state_dict()._metadata``,
what ``_load_from_state_dict`` reads as ``local_metadata["version"]``: BatchNorm, MNASNet, ...); they are given back
on load. A file without them loads with the versions of the freshly built modules.

Masks are stored as bool tensors under ``"__mask__/<param name>"`` (or packed, see
:mod:`prunekit.pruning.sparse_format`). A folder written by any prunekit command holds ``model.safetensors``;
every loader accepts the folder or the file.

**Untrusted files.** Loading never unpickles anything. The metadata is checked against a schema
(:func:`check_meta`) before anything is built: wrong types, missing keys, ``num_classes`` outside
``[1, MAX_CLASSES]``, ``in_channels`` outside ``[1, MAX_IN_CHANNELS]``, cfg widths above
:data:`prunekit.models.bounds.MAX_WIDTH` are a :class:`CheckpointError` naming the field; building the model may
allocate at most :data:`prunekit.models.bounds.MAX_ELEMENTS` tensor elements. ``checksum`` (SHA-256 of the tensor
payload, files written since it was added) is verified on load. Weights holding NaN/inf load with a warning.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .models.hf import build_hf, check_hf_spec, finish_hf, hf_spec
from .errors import CheckpointError, PrunekitError
from .models.bounds import MAX_CLASSES, MAX_IN_CHANNELS
from .utils.io import atomic_path, path_problem
from .utils.warn import NonFiniteWarning, warn_user

FORMAT = "prunekit/1"
# what torch.load(weights_only=True) raises on truncated, corrupt or code-carrying files
_TORCH_READ_ERRORS = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, IndexError, KeyError,
                      TypeError, AttributeError)
MODEL_FILE = "model.safetensors"
MASK_PREFIX = "__mask__/"  # = pruning.sparse_format.MASK_PREFIX (imported lazily: pruning imports this module)
STORAGES = ("dense", "sparse", "auto")
MAX_VERSIONED = 1_000_000  # state_versions entries a file may hold (one per module at most)
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model, its masks (or None) and the metadata."""

    model: nn.Module
    masks: dict[str, torch.Tensor] | None
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_model_file(path: str | os.PathLike) -> Path:
    """Return the model file for ``path`` (a model file, or a folder holding ``model.safetensors``)."""
    p = Path(path)
    problem = path_problem(p)
    if problem is not None:
        raise CheckpointError(f"checkpoint {problem}" if problem.startswith("not found") else
                              f"cannot open checkpoint {p}: {problem}")
    if p.is_dir():
        f = p / MODEL_FILE
        problem = path_problem(f)
        if problem is not None and problem.startswith("not found"):
            raise CheckpointError(f"no {MODEL_FILE} in folder {p}")
        if problem is not None:
            raise CheckpointError(f"cannot open checkpoint {f}: {problem}")
        p = f
    if not p.is_file():  # a pipe, socket or device would block or stream forever
        raise CheckpointError(f"checkpoint {p} is not a regular file")
    return p


def model_meta(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata that identifies ``model``'s architecture (name, classes, channels, cfg, plan)."""
    name = getattr(model, "prunekit_name", None)
    factory = getattr(model, "prunekit_factory", None)
    hf = hf_spec(model) if name is None and factory is None else None
    if name is None and factory is None and hf is None:
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
    if hf is not None:  # a Hugging Face model: its class (from transformers only) and configs
        meta["hf"] = dict(hf, pruned_config=model.config.to_dict() if meta["plan"] else None)
        meta["num_classes"] = meta["in_channels"] = None
    meta["dtype"] = model_dtype(model)
    return meta


def model_dtype(model: nn.Module) -> str | None:
    """The one floating-point dtype of ``model``'s parameters and buffers (``"float32"``, ...), None if mixed."""
    kinds = {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}
    names = [k for k, v in DTYPES.items() if {v} == kinds]
    return names[0] if names else None


def save_model(model: nn.Module, path: str | os.PathLike, masks: Mapping[str, torch.Tensor] | None = None,
               extra: Mapping[str, Any] | None = None, storage: str = "dense") -> Path:
    """Save ``model`` (and ``masks``) to ``path`` (a file, or a folder that gets ``model.safetensors``), atomically.

    ``storage="sparse"`` stores masked tensors as a bitmask plus non-zero values (requires ``masks``);
    ``"auto"`` does so for each masked tensor where that is smaller, and stores the rest dense (the metadata then
    says ``"sparse"`` if anything was packed, else ``"dense"``). See :func:`prunekit.pruning.sparse_format.
    storage_sizes` for the file size against a plain dense file.

    >>> import tempfile, prunekit
    >>> model = prunekit.create_model("resnet20")
    >>> res = prunekit.prune_unstructured(model, "global", 0.5)
    >>> path = prunekit.save_model(model, tempfile.mkdtemp(), masks=res.masks, storage="auto")
    >>> path.name
    'model.safetensors'
    """
    from .pruning.sparse_format import PREFIX, pack, payload_digest, write_safetensors

    if storage not in STORAGES:
        raise PrunekitError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / MODEL_FILE
    meta = model_meta(model, extra)
    sd = model.state_dict()
    meta["state_versions"] = state_versions(sd)
    state = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    masks = {k: v.detach().to("cpu", torch.bool).contiguous() for k, v in (masks or {}).items()}
    if storage == "dense":
        tensors = pack(state, None)  # checks the reserved prefixes
        for k, v in masks.items():
            if k not in state:
                raise PrunekitError(f"mask for {k!r} matches no tensor of the state dict")
            tensors[MASK_PREFIX + k] = v
    else:
        tensors = pack(state, masks, only_if_smaller=storage == "auto")
    packed = any(k.startswith(PREFIX) for k in tensors)
    meta["storage"] = "sparse" if storage == "sparse" or packed else "dense"
    meta["checksum"] = payload_digest(tensors)
    return write_safetensors(path, tensors, {"prunekit": json.dumps(meta)})


def read_checkpoint_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                                          dict[str, torch.Tensor]]:
    """Read ``(meta, state_dict, masks)`` from a model file or folder, without building the model.

    The metadata is validated (:func:`check_meta`) and the payload checksum verified before any tensor is read."""
    from safetensors import SafetensorError, safe_open

    from .pruning.sparse_format import file_payload_digest, unpack

    f = resolve_model_file(path)
    try:
        with safe_open(str(f), framework="pt") as fh:
            raw_meta = (fh.metadata() or {}).get("prunekit")
            if raw_meta is None:
                raise CheckpointError(f"{f} has no prunekit metadata: it was not written by prunekit.save_model")
            try:
                meta = json.loads(raw_meta)
            except (json.JSONDecodeError, RecursionError):
                raise CheckpointError(f"{f} has corrupt prunekit metadata (not JSON, or nested too deeply)") from None
            meta = check_meta(meta, str(f))
            if meta.get("checksum") is not None and file_payload_digest(f) != meta["checksum"]:
                raise CheckpointError(f"{f}: the tensor data does not match its checksum: the file is corrupt "
                                      "(damaged on disk or in transfer); restore it from a good copy")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {f}: permission denied ({exc.strerror})") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{f} is not a readable prunekit checkpoint ({exc})") from None
    state, masks = unpack(tensors)
    return meta, state, masks or {}


def _field_error(source: str, name: str, want: str, got: Any) -> CheckpointError:
    text = repr(got)
    text = text if len(text) <= 60 else text[:60] + "..."
    return CheckpointError(f"{source}: metadata field {name!r} must be {want}, got {text}")


def _check_int(meta: Mapping[str, Any], name: str, low: int, high: int, source: str) -> int:
    v = meta.get(name)
    if not isinstance(v, Integral) or isinstance(v, bool) or not low <= int(v) <= high:
        raise _field_error(source, name, f"an integer in [{low}, {high:,}]", v)
    return int(v)


def check_meta(meta: Any, source: str = "checkpoint") -> dict[str, Any]:
    """Validate checkpoint metadata (a dict read from a file) against the schema in the module docstring and
    return it; anything else is a :class:`CheckpointError` naming ``source`` and the field. Builds nothing."""
    from .models.bounds import check_cfg_bounds

    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{source}: prunekit metadata must be a JSON object, got a {type(meta).__name__}")
    meta = dict(meta)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    factory = meta.get("factory")
    if factory is not None:
        if not isinstance(factory, Mapping) or not isinstance(factory.get("target"), str) or \
                not isinstance(factory.get("kwargs", {}), Mapping):
            raise _field_error(source, "factory", "an object with a 'target' string and 'kwargs' object", factory)
        size = factory.get("input_size")
        if size is not None and (not isinstance(size, list) or not 1 <= len(size) <= 8 or not all(
                isinstance(v, Integral) and not isinstance(v, bool) and 1 <= v <= 1 << 16 for v in size)):
            raise _field_error(source, "factory.input_size", "a list of positive integers", size)
    elif meta.get("hf") is not None:
        meta["hf"] = check_hf_spec(meta["hf"], source)
    elif not isinstance(meta.get("model"), str) or not meta["model"]:
        raise _field_error(source, "model", "a model name (string)", meta.get("model", "<missing>"))
    for name, high in (("num_classes", MAX_CLASSES), ("in_channels", MAX_IN_CHANNELS)):
        if (factory is None and meta.get("hf") is None) or meta.get(name) is not None:
            meta[name] = _check_int(meta, name, 1, high, source)
    for name in ("options", "extra"):
        if meta.get(name) is not None and not isinstance(meta[name], Mapping):
            raise _field_error(source, name, "a JSON object", meta[name])
    plan = meta.get("plan")
    if plan is not None and not isinstance(plan, Mapping):
        raise _field_error(source, "plan", "a channel plan object or null", plan)
    try:
        check_cfg_bounds(meta.get("cfg"), f"{source}: metadata field 'cfg'")
        if plan is not None:
            for key in ("cfg", "base_cfg"):
                check_cfg_bounds(plan.get(key), f"{source}: metadata field 'plan.{key}'")
    except PrunekitError as exc:
        raise CheckpointError(str(exc)) from None
    if meta.get("storage", "dense") not in ("dense", "sparse"):
        raise _field_error(source, "storage", "'dense' or 'sparse'", meta["storage"])
    if meta.get("dtype") is not None and meta["dtype"] not in DTYPES:
        raise _field_error(source, "dtype", f"one of {', '.join(DTYPES)} or null", meta["dtype"])
    versions = meta.get("state_versions")
    if versions is not None and not (isinstance(versions, Mapping) and len(versions) <= MAX_VERSIONED and all(
            isinstance(k, str) and len(k) <= 4096 and isinstance(v, Integral) and not isinstance(v, bool)
            and 0 <= v <= 2**31 for k, v in versions.items())):
        raise _field_error(source, "state_versions", "an object of module paths to non-negative integers", versions)
    digest = meta.get("checksum")
    if digest is not None and not (isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71):
        raise _field_error(source, "checksum", "'sha256:' and 64 hex digits", digest)
    return meta


def build_from_meta(meta: Mapping[str, Any], factory: Any = None, source: str = "checkpoint") -> nn.Module:
    """Build the (possibly pruned) architecture that ``meta`` describes, with fresh weights: the dense model from
    its zoo name (or from a factory the caller allows, see :mod:`prunekit.factory`), then the channel plan.

    ``meta`` is validated first (:func:`check_meta`); the build may allocate at most
    :data:`prunekit.models.bounds.MAX_ELEMENTS` tensor elements (a :class:`CheckpointError` otherwise)."""
    from .models.bounds import bounded_build

    meta = check_meta(meta, source)
    plan = meta.get("plan")
    if meta.get("factory") is not None:
        from .factory import build_from_spec

        what = f"{source}: the factory {meta['factory']['target']!r} with the metadata's 'factory.kwargs'"
        build = lambda: build_from_spec(meta["factory"], factory, source)  # noqa: E731
    elif meta.get("hf") is not None:
        what = f"{source}: the {meta['hf']['class']} its metadata describes"
        build = lambda: build_hf(meta["hf"], source)  # noqa: E731
    else:
        from .models import create_model

        # the plan slices the dense base model; plans made before base_cfg existed used the pruned cfg
        use_base = isinstance(plan, Mapping) and "base_cfg" in plan and plan.get("format") != "prunekit-plan/1"
        cfg = plan.get("base_cfg") if use_base else meta.get("cfg")
        what = (f"{source}: the model its metadata describes (model {meta['model']!r}, num_classes "
                f"{meta['num_classes']}, in_channels {meta['in_channels']}, "
                f"{'plan.base_cfg' if use_base else 'cfg'} {'None' if cfg is None else f'of {len(cfg)} entries'})")
        build = lambda: create_model(meta["model"], num_classes=meta["num_classes"], cfg=cfg,  # noqa: E731
                                     in_channels=meta["in_channels"], **(meta.get("options") or {}))
    try:
        model = bounded_build(build, what)
    except CheckpointError:
        raise
    except PrunekitError as exc:
        raise CheckpointError(str(exc) if str(exc).startswith(source) else f"{source}: {exc}") from None
    if plan is not None:
        from .pruning.structured.plan import apply_plan

        model = apply_plan(model, plan)
        if meta.get("cfg") is not None:
            model.prunekit_cfg = meta["cfg"]
    if meta.get("hf") is not None:
        finish_hf(model, meta["hf"], source)
    return model


def state_versions(state: Mapping[str, Any]) -> dict[str, int]:
    """``{module path: version}`` from a state_dict's ``_metadata`` (the modules that version their state)."""
    out: dict[str, int] = {}
    for prefix, local in (getattr(state, "_metadata", None) or {}).items():
        v = local.get("version") if isinstance(local, Mapping) else None
        if isinstance(v, Integral) and not isinstance(v, bool):
            out[str(prefix)] = int(v)
    return out


def with_versions(model: nn.Module, state: Mapping[str, torch.Tensor],
                  versions: Mapping[str, int] | None = None) -> "OrderedDict[str, torch.Tensor]":
    """``state`` as a state_dict whose ``_metadata`` gives each module its version: ``versions`` (as saved), else
    those ``state`` carries, else the version of ``model``'s own module (a file written without them)."""
    own = getattr(model.state_dict(keep_vars=True), "_metadata", None) or {}
    meta: OrderedDict[str, dict[str, Any]] = OrderedDict((k, dict(v)) for k, v in own.items())
    given = state_versions(state) if versions is None else versions
    for prefix, v in given.items():
        meta.setdefault(prefix, {})["version"] = int(v)
    out: OrderedDict[str, torch.Tensor] = OrderedDict(state.items())
    out._metadata = meta  # type: ignore[attr-defined]
    return out


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                      versions: Mapping[str, int] | None = None) -> None:
    """Load ``state`` into ``model``; any missing/unexpected key or shape mismatch is a CheckpointError.
    ``versions``: the modules' state_dict versions (``{module path: version}``, see :func:`with_versions`)."""
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
    model.load_state_dict(with_versions(model, state, versions), strict=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    expect_model: str | None = None, factory: Any = None) -> Checkpoint:
    """Rebuild the model saved at ``path`` (file or folder). No code is unpickled.

    ``expect_model`` (a zoo name, or a ``module:callable`` factory) makes a checkpoint of another architecture a
    clear error. ``factory``: the factory targets (a string or a list) this call may import and call when the
    checkpoint was built by one, or a callable to build it with; without it such a checkpoint is refused.

    >>> import tempfile, prunekit
    >>> model = prunekit.create_model("resnet20")
    >>> res = prunekit.prune_unstructured(model, "global", 0.5)
    >>> folder = tempfile.mkdtemp()
    >>> _ = prunekit.save_model(model, folder, masks=res.masks)
    >>> ckpt = prunekit.load_checkpoint(folder, expect_model="resnet20")
    >>> ckpt.model.prunekit_name, sorted(ckpt.masks) == sorted(res.masks)
    ('resnet20', True)
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
    _restore_dtypes(model, meta.get("dtype"), state)
    load_state_strict(model, state, str(path), meta.get("state_versions"))
    _warn_non_finite(state, str(path))
    if masks:
        from .pruning.masks import check_masks

        check_masks(model, masks)
    model.to(map_location)
    return Checkpoint(model=model, masks=masks or None, meta=meta)


def _restore_dtypes(model: nn.Module, dtype: str | None, state: Mapping[str, torch.Tensor]) -> None:
    """Give ``model`` the dtype the metadata records, and each floating tensor the dtype it was saved in."""
    if dtype is not None:
        model.to(DTYPES[dtype])
    with torch.no_grad():
        for name, t in (*model.named_parameters(), *model.named_buffers()):
            saved = state.get(name)
            if saved is not None and t.is_floating_point() and saved.is_floating_point() and saved.dtype != t.dtype:
                t.data = t.data.to(saved.dtype)


def _warn_non_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        cause = f"{source}: {len(bad)} tensor(s) hold NaN or inf values ({', '.join(bad[:3])}" \
                f"{', ...' if len(bad) > 3 else ''})"
        warn_user(NonFiniteWarning(f"{cause}; the model's outputs will not be meaningful", cause))


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", factory: Any = None
               ) -> nn.Module:
    """Rebuild any prunekit-saved model from its folder or file (dense, masked or structurally pruned).

    A user architecture saved with a factory loads only with ``factory=`` naming it (see :func:`load_checkpoint`).

    >>> import tempfile, prunekit
    >>> small = prunekit.prune_structured(prunekit.create_model("resnet20"), ratio=0.5).model
    >>> folder = tempfile.mkdtemp()
    >>> _ = prunekit.save_model(small, folder)
    >>> prunekit.count_params(prunekit.load_model(folder)) == prunekit.count_params(small)
    True
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
        raise _torch_load_error(path, exc, "training state", "it was not written by prunekit; delete it (and "
                                "drop --resume) to start the run afresh") from None


def _torch_load_error(path: Any, exc: BaseException, what: str, remedy: str) -> CheckpointError:
    """A clear error for a failed ``torch.load(weights_only=True)``; never passes on torch's advice to retry with
    weights-only loading switched off (prunekit does not offer that: it would run code from the file)."""
    if isinstance(exc, PermissionError):
        return CheckpointError(f"cannot read {what} {path}: permission denied")
    text = str(exc)
    if "weights_only" not in text and "Weights only load failed" not in text:
        return CheckpointError(f"cannot read {what} {path}: {text.strip().splitlines()[0] if text.strip() else exc!r}")
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"WeightsUnpickler error: ([^\n]{1,120})", text)
    reason = f" (it refers to {found.group(1).rstrip('.')})" if found else ""
    return CheckpointError(f"{what} {path} holds Python objects other than tensors{reason}; prunekit never "
                           f"unpickles arbitrary objects, so it will not load it. {remedy[0].upper()}{remedy[1:]}")


# ---------------------------------------------------------------------------------------------------------------
# Importing weights saved by other tools (e.g. torchvision's .pth files): a state_dict for a zoo architecture.

_FOREIGN_SUFFIXES = (".pth", ".pt", ".bin", ".tar")


def _is_foreign_weights_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    try:
        if not p.is_file():
            return False
    except OSError:  # e.g. permission denied on a folder on the way: resolve_model_file says so
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
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {p} as a safetensors weights file: {exc}") from None
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except _TORCH_READ_ERRORS as exc:
            raise _torch_load_error(p, exc, "weights file", "re-save it as a plain state_dict of tensors "
                                    "(torch.save(model.state_dict(), path), where it was made) and import that, "
                                    "or save it with prunekit.save_model") from None
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
    _warn_non_finite(state, str(p))
    model.to(map_location)
    meta = model_meta(model, {"imported_from": str(p)})
    return Checkpoint(model=model, masks=None, meta=meta)
