"""Interop with ``torch.nn.utils.prune``: its reparametrisation (``<p>_orig`` parameter + ``<p>_mask`` buffer)
to prunekit masks and back.

* :func:`masks_from_torch_prune` reads a live module or a state dict pruned with ``torch.nn.utils.prune`` and
  returns a plain state dict (``<p> = <p>_orig * <p>_mask``) plus prunekit masks.
* :func:`load_torch_pruned` loads such a state dict (or module) into a prunekit model and returns its masks.
* :func:`remove_torch_prune` makes a live pruned module plain again (``prune.remove``) and returns the masks.
* :func:`to_torch_prune` applies prunekit masks to a model with ``prune.custom_from_mask``.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from ..errors import PrunekitError
from .masks import Masks, check_masks

_ORIG, _MASK = "_orig", "_mask"


def _split_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Masks]:
    out: dict[str, torch.Tensor] = {}
    masks: Masks = {}
    for key, t in state.items():
        if key.endswith(_MASK) and (key[: -len(_MASK)] + _ORIG) in state:
            continue
        if key.endswith(_ORIG):
            base = key[: -len(_ORIG)]
            mkey = base + _MASK
            if mkey not in state:
                raise PrunekitError(f"{key!r} has no matching {mkey!r}: not a torch.nn.utils.prune state dict")
            m = state[mkey]
            if tuple(m.shape) != tuple(t.shape):
                raise PrunekitError(f"{mkey!r} has shape {tuple(m.shape)}, {key!r} has {tuple(t.shape)}")
            mask = m.detach() != 0
            if base in state:
                raise PrunekitError(f"state dict holds both {base!r} and {key!r}")
            out[base] = t.detach().masked_fill(~mask, 0.0)
            masks[base] = mask.cpu()
        else:
            out[key] = t
    return out, masks


def masks_from_torch_prune(source: nn.Module | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Masks]:
    """``(state_dict, masks)`` from a module (live) or state dict pruned with ``torch.nn.utils.prune``.

    The returned state dict has the original parameter names (``conv.weight``) with pruned entries 0.0; masks
    are bool tensors keyed by those names. Entries not pruned by torch pass through unchanged.
    """
    state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    return _split_state(state)


def load_torch_pruned(model: nn.Module, source: nn.Module | Mapping[str, torch.Tensor]) -> Masks:
    """Load a ``torch.nn.utils.prune`` state dict (or module) into the plain ``model``; return the masks."""
    from ..checkpoint import load_state_strict

    state, masks = masks_from_torch_prune(source)
    load_state_strict(model, state, "torch.nn.utils.prune state dict")
    check_masks(model, masks)
    return masks


def remove_torch_prune(module: nn.Module) -> Masks:
    """Turn every torch pruning reparametrisation in ``module`` into a plain parameter; return the masks."""
    masks: Masks = {}
    for mname, sub in module.named_modules():
        for hook in list(sub._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                pname = hook._tensor_name
                mask = getattr(sub, pname + _MASK).detach() != 0
                tprune.remove(sub, pname)
                masks[f"{mname}.{pname}" if mname else pname] = mask.cpu()
    return masks


def to_torch_prune(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Apply ``masks`` to ``model`` in place with ``torch.nn.utils.prune.custom_from_mask``; returns ``model``."""
    check_masks(model, masks)
    modules = dict(model.named_modules())
    for name, m in masks.items():
        mname, _, pname = name.rpartition(".")
        sub = modules[mname]
        tprune.custom_from_mask(sub, pname, m.to(device=getattr(sub, pname).device, dtype=torch.bool))
    return model
