"""What a resume must match: the run's configuration and inputs, recorded in ``train_state.pt`` by the trainer.

A resume with a changed :data:`RESULT_FIELDS` value, other initial weights or masks (another input checkpoint or
init), or other data (another dataset or ``--limit``) is refused with the differing fields listed, unless the
caller resumes anyway; then the changes are returned (and reported by the run).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError

log = logging.getLogger(__name__)

#: TrainConfig fields that change what a run computes: a resume with any of them changed is refused (unless
#: ``resume_anyway``). Left out: device, eval batch size, progress, workers, log interval, tensorboard.
RESULT_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "nesterov", "weight_decay", "schedule",
                 "milestones", "gamma", "step_size", "warmup_epochs", "per_step_schedule", "label_smoothing", "seed",
                 "amp", "sync_bn", "max_steps_per_epoch")


def tensor_digest(tensors: Mapping[str, torch.Tensor] | None) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (independent of the mapping's order).

    >>> tensor_digest({"w": torch.zeros(2)}) == tensor_digest({"w": torch.zeros(2)})
    True
    """
    h = hashlib.sha256()
    for name in sorted(tensors or {}):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def describe_data(data: Any) -> Any:
    """What identifies a dataset split for a resume check (name, size, augmentation...; not where it lives)."""
    if data is None:
        return None
    if hasattr(data, "describe"):
        d = dict(data.describe())
        d.pop("root", None)
        return d
    return {"type": type(data).__name__, "size": len(data) if hasattr(data, "__len__") else None}


def run_inputs(model: nn.Module, masks: Mapping[str, torch.Tensor] | None, train_data: Any,
               val_data: Any) -> dict[str, Any]:
    """What, besides the config, determines a run: the weights and masks it starts from, and its data."""
    return {"initial_weights": tensor_digest(model.state_dict()),
            "initial_masks": tensor_digest(masks) if masks else None,
            "train_data": describe_data(train_data), "val_data": describe_data(val_data)}


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for the fields present in both that differ (nested mappings as ``a.b``).

    >>> config_changes({"lr": 0.1, "data": {"size": 9}}, {"lr": 0.2, "data": {"size": 9}})
    {'lr': [0.1, 0.2]}
    """
    changes: dict[str, list[Any]] = {}
    for key in new:
        if key not in old:
            continue
        a, b = old[key], new[key]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes.update(config_changes(a, b, f"{prefix}{key}."))
        elif _norm(a) != _norm(b):
            changes[prefix + key] = [a, b]
    return changes


def _norm(v: Any) -> Any:
    """Compare 1 and 1.0, (1, 2) and [1, 2] as equal (JSON round trips change them)."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return v


def _short(v: Any) -> str:
    """A value for an error message (digests shortened)."""
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    return repr(v)


def check_resume(state: Mapping[str, Any], config: Mapping[str, Any], inputs: Mapping[str, Any],
                 out_dir: Path | None, resume_anyway: bool) -> dict[str, list[Any]] | None:
    """Compare a saved training ``state`` with this run's ``config`` (``TrainConfig.to_dict()``) and ``inputs``
    (:func:`run_inputs`). Raise a :class:`CheckpointError` listing the differences, or with ``resume_anyway``
    return every change since the run began (``{field: [first value, value now]}``, earlier resumes included);
    None when nothing changed now or before."""
    old_cfg = state.get("config") or {}
    changes = config_changes({k: old_cfg[k] for k in RESULT_FIELDS if k in old_cfg},
                             {k: config[k] for k in RESULT_FIELDS if k in config})
    changes.update(config_changes(state.get("inputs") or {}, inputs))
    before = {k: list(v) for k, v in (state.get("resumed_with_changes") or {}).items()}
    if not changes:
        return before or None
    listed = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changes.items())
    if not resume_anyway:
        raise CheckpointError(f"cannot resume {out_dir}: the run was started with a different configuration "
                              f"({listed}); rerun with the original options, use a new output folder, or resume "
                              f"anyway (--resume-anyway / resume_anyway=True)")
    log.warning("resuming %s with a changed configuration: %s", out_dir, listed)
    for k, (a, b) in changes.items():
        before[k] = [before[k][0] if k in before else a, b]
    return before
