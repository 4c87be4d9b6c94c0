"""Ensembles of (possibly differently pruned) models: "E-x-y" of the iterative-pruning rounds (Li et al., kesi).

Two ways to combine members, both giving a ``[batch, classes]`` score whose argmax is the ensemble prediction:

* ``"sum_logits"`` (the seed's E-x-y definition): the sum of the members' logits;
* ``"mean_softmax"`` (what the seed used later): the mean of the members' softmax probabilities.

Members may have different architectures or cfgs (pruned rounds) but must agree on the number of classes.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import PrunekitError

MODES = ("sum_logits", "mean_softmax")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a valid ensemble mode, else raise a PrunekitError listing the valid ones."""
    if mode not in MODES:
        raise PrunekitError(f"unknown ensemble mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


def _names(models: Sequence[nn.Module], names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"member {i + 1}" for i in range(len(models))]
    if len(names) != len(models):
        raise PrunekitError(f"{len(names)} names given for {len(models)} ensemble members")
    return [str(n) for n in names]


def check_members(models: Sequence[nn.Module], names: Sequence[str] | None = None,
                  num_classes: int | None = None) -> int:
    """Check that there is at least one member and all agree on ``num_classes``; return it.

    ``names`` (e.g. checkpoint paths) are used in the error message; ``num_classes`` (e.g. the dataset's) is the
    value every member must have, by default the first member's.
    """
    if len(models) == 0:
        raise PrunekitError("an ensemble needs at least one model")
    labels = _names(models, names)
    expected, source = (num_classes, "the dataset") if num_classes is not None else (None, None)
    for model, label in zip(models, labels):
        c = getattr(model, "num_classes", None)
        if c is None:
            continue
        if expected is None:
            expected, source = int(c), label
        elif int(c) != expected:
            raise PrunekitError(f"ensemble member {label} has {c} classes, but {source} has {expected}; "
                                "all members must agree on num_classes")
    if expected is None:
        raise PrunekitError("cannot tell the number of classes of the ensemble members (no 'num_classes' "
                            "attribute); build them with prunekit.create_model")
    return expected


def ensemble_logits(models: Sequence[nn.Module], x: torch.Tensor, mode: str = "sum_logits") -> torch.Tensor:
    """Combined ensemble score for input ``x`` (float32 ``[batch, classes]``; argmax = prediction).

    ``"sum_logits"``: sum of the members' logits. ``"mean_softmax"``: mean of their softmax probabilities.
    Runs the members as they are (no mode switch, gradients as the caller's context decides).
    """
    return combine_outputs([m(x) for m in models], mode)


def combine_outputs(outputs: Sequence[torch.Tensor], mode: str = "sum_logits") -> torch.Tensor:
    """Combine already computed member logits (see :func:`ensemble_logits`)."""
    check_mode(mode)
    if len(outputs) == 0:
        raise PrunekitError("an ensemble needs at least one model")
    shapes = {tuple(o.shape) for o in outputs}
    if len(shapes) != 1:
        raise PrunekitError(f"ensemble members produced outputs of different shapes: {sorted(shapes)}")
    if mode == "sum_logits":
        return torch.stack([o.float() for o in outputs]).sum(dim=0)
    return torch.stack([torch.softmax(o.float(), dim=1) for o in outputs]).mean(dim=0)


@torch.no_grad()
def evaluate_ensemble(models: Sequence[nn.Module], data: Any, mode: str = "sum_logits", batch_size: int = 256,
                      device: str | torch.device | None = None, *, names: Sequence[str] | None = None,
                      max_batches: int | None = None) -> dict[str, Any]:
    """Top-1/top-5 (percent) of the ensemble and top-1 of every member, in one pass over ``data``'s test transform.

    Every member sees the same batches, in eval mode, without gradients; members are moved to ``device``
    (default: the first member's device) and their train/eval mode is restored afterwards. Returns
    ``{"top1", "top5", "n", "mode", "members": [top1 per member], "members_top5": [...]}``.
    """
    from ..engine.distributed import resolve_device
    from ..engine.evaluate import evaluate_outputs

    check_mode(mode)
    num_classes = data.num_classes if getattr(data, "num_classes", None) is not None else None
    check_members(models, names, num_classes)
    if device is None:
        device = next(models[0].parameters()).device
    device = resolve_device(device)
    for m in models:
        m.to(device)

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        outs = [m(x).float() for m in models]
        return outs + [combine_outputs(outs, mode)]

    *members, ens = evaluate_outputs(models, forward, data, batch_size, device, max_batches=max_batches)
    return {"top1": ens["top1"], "top5": ens["top5"], "n": ens["n"], "mode": mode,
            "members": [r["top1"] for r in members], "members_top5": [r["top5"] for r in members]}


def load_members(paths: Sequence[str | os.PathLike], map_location: str | torch.device = "cpu",
                 num_classes: int | None = None) -> list:
    """Load each checkpoint (file or output folder) with :func:`prunekit.load_checkpoint`.

    Returns the list of :class:`~prunekit.checkpoint.Checkpoint`; a num_classes disagreement (among them, or with
    ``num_classes`` when given) is a PrunekitError naming the checkpoint.
    """
    from ..checkpoint import load_checkpoint

    if len(paths) == 0:
        raise PrunekitError("an ensemble needs at least one checkpoint")
    ckpts = [load_checkpoint(p, map_location) for p in paths]
    check_members([c.model for c in ckpts], [str(p) for p in paths], num_classes)
    return ckpts
