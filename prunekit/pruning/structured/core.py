"""From "which channels each group keeps" to a plan, a physically smaller model and the zeroed reference."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ...errors import EmptyLayerError
from .groups import ChannelGroup, cfg_from_model, selected
from .plan import Plan, apply_plan, compose_plans, new_plan

Keep = dict[str, list[int]]


@dataclass
class StructuredResult:
    """Outcome of a structured prune.

    ``model``: the physically smaller model (rebuilt from its cfg, weights copied). ``plan``: the cumulative plan
    relative to the base model (``model.prunekit_plan``). ``keep``: kept channels per group in this step (positions
    in the pruned-from model; full-width positions for selection groups). ``rows``: per-layer channel counts.
    ``warnings``: layers that would have lost every channel (kept at one). ``info``: method-specific numbers.
    """

    model: nn.Module
    plan: Plan
    keep: Keep
    rows: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def candidates(model: nn.Module, g: ChannelGroup) -> list[int]:
    """The channels of group ``g`` that exist now (full-width positions that the selection lets through, or
    ``range(size)``)."""
    return selected(model, g.select) if g.select else list(range(g.size))


def guard_empty(g: ChannelGroup, kept: list[int], fallback: int, *, strict: bool, what: str,
                notes: list[str]) -> list[int]:
    """Return ``kept``, or ``[fallback]`` with a warning (or :class:`EmptyLayerError` when ``strict``) if empty."""
    if kept:
        return kept
    msg = f"{what} would remove every channel of layer {g.name}"
    if strict:
        raise EmptyLayerError(msg + " (drop --strict-empty to keep its strongest channel instead)")
    msg += f"; kept its strongest channel {fallback}"
    warnings.warn(msg, stacklevel=3)
    notes.append(msg)
    return [fallback]


def build_plan(model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, list[int]],
               method: str) -> Plan:
    """The plan (relative to ``model``) that keeps ``keep[g.name]`` of every group (missing groups: all)."""
    plan = new_plan(getattr(model, "prunekit_name", None), base_cfg=getattr(model, "prunekit_cfg", None),
                    method=method)
    mods = plan["modules"]
    for g in groups:
        if g.name not in keep:
            continue
        cand = candidates(model, g)
        kept = sorted(keep[g.name])
        if kept == cand:
            continue
        if g.select:
            full = dict(model.named_modules())[g.select].indexes.numel()
            pos_of = {c: i for i, c in enumerate(cand)}
            pos = [pos_of[k] for k in kept]
            mods.setdefault(g.select, {}).update({"select": kept, "select_full": full})
            for c in g.in_modules:
                mods.setdefault(c, {}).update({"in": pos, "in_full": len(cand)})
            plan["groups"][g.name] = {"kept": kept, "full": full, "select": True}
        else:
            for m in g.out_modules:
                mods.setdefault(m, {}).update({"out": kept, "out_full": g.size})
            for c in g.in_modules:
                mods.setdefault(c, {}).update({"in": kept, "in_full": g.size})
            plan["groups"][g.name] = {"kept": kept, "full": g.size, "select": False}
    return plan


def rebuild(model: nn.Module, step_plan: Plan) -> tuple[nn.Module, Plan]:
    """Physically prune a copy of ``model`` by ``step_plan``; return ``(pruned, cumulative plan)``.

    The pruned model is rebuilt from the zoo cfg of the sliced copy (``create_model(name, cfg=...)``) and loaded
    strictly, so a shape the cfg cannot express fails here, not at load time.
    """
    sliced = apply_plan(copy.deepcopy(model), step_plan)
    cfg = cfg_from_model(sliced)
    step_plan = dict(step_plan, cfg=cfg)
    total = compose_plans(getattr(model, "prunekit_plan", None), step_plan)
    name = getattr(model, "prunekit_name", None)
    if name is None:  # a family class built directly (reduced depth): keep the sliced copy
        out = sliced
    else:
        from ...checkpoint import load_state_strict
        from ...models import create_model

        out = create_model(name, num_classes=getattr(model, "num_classes", 10), cfg=cfg,
                           in_channels=getattr(model, "in_channels", 3))
        load_state_strict(out, sliced.state_dict(), f"rebuilt {name}")
        dev = next(model.parameters()).device
        out.to(dev)
    out.prunekit_cfg = cfg
    out.prunekit_plan = total
    out.train(model.training)
    return out, total


@torch.no_grad()
def zeroed_reference(model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, list[int]]) -> nn.Module:
    """A copy of ``model`` with γ and β of every removed channel set to 0 (the exactness reference)."""
    ref = copy.deepcopy(model)
    mods = dict(ref.named_modules())
    for g in groups:
        if g.name not in keep or g.bn is None:
            continue
        removed = sorted(set(candidates(model, g)) - set(keep[g.name]))
        if removed:
            bn = mods[g.bn]
            idx = torch.tensor(removed, dtype=torch.long, device=bn.weight.device)
            bn.weight.index_fill_(0, idx, 0.0)
            bn.bias.index_fill_(0, idx, 0.0)
    return ref


def channel_rows(model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, list[int]]) -> list[dict]:
    """Per-group rows ``{layer, stage, total, kept, pruned, kept_ratio}`` (total = channels before this step)."""
    rows = []
    for g in groups:
        total = len(candidates(model, g))
        kept = len(keep.get(g.name, candidates(model, g)))
        rows.append({"layer": g.name, "stage": g.stage + 1, "total": total, "kept": kept, "pruned": total - kept,
                     "kept_ratio": round(kept / total, 4) if total else 0.0})
    return rows


def finish(model: nn.Module, groups: Sequence[ChannelGroup], keep: Keep, method: str, notes: list[str],
           info: Mapping[str, Any] | None = None) -> StructuredResult:
    """Build plan + pruned model + rows for ``keep`` on ``model``."""
    step = build_plan(model, groups, keep, method)
    pruned, total = rebuild(model, step)
    return StructuredResult(model=pruned, plan=total, keep=dict(keep), rows=channel_rows(model, groups, keep),
                            warnings=list(notes), info=dict(info or {}))
