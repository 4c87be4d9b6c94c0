"""Channel plans: which channels every pruned module keeps, as plain JSON.

A plan is a dict (JSON-able, stored as checkpoint meta ``plan`` and as ``plan.json``)::

    {"format": "prunekit-plan/1", "model": "resnet56", "base_cfg": null, "cfg": [...], "method": "l1-filter",
     "modules": {"layer1.0.conv1": {"out": [0, 2, ...], "out_full": 16},
                 "layer1.0.bn1":   {"out": [0, 2, ...], "out_full": 16},
                 "layer1.0.conv2": {"in":  [0, 2, ...], "in_full": 16},
                 "layer1.0.select": {"select": [1, 5, ...], "select_full": 64},
                 "fc": {"in": [...], "in_full": 64, "in_group": 1}},
     "groups": {"layer1.0.conv1": {"kept": [0, 2, ...], "full": 16}, ...}}

Index lists are positions in the *base* model (``create_model(model, cfg=base_cfg)``; ``base_cfg`` null = the
default full model). ``out`` slices Conv2d/Linear outputs (weight dim 0 and bias) and BatchNorm channels (weight,
bias, running stats); ``in`` slices Conv2d weight dim 1 or Linear columns (``in_group`` columns per channel when a
flattened feature map feeds the Linear); ``select`` sets a :class:`~prunekit.models.layers.ChannelSelection`.
``cfg`` is the zoo cfg of the pruned model (null when the shape is not expressible as a cfg).

:func:`apply_plan` turns a freshly built base model into the pruned one. It is idempotent per module: a module
already at the pruned width (e.g. built from the pruned ``cfg``) is left alone, so loading works either way.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Mapping

import torch
import torch.nn as nn

from ...errors import CheckpointError, PrunekitError

PLAN_FORMAT = "prunekit-plan/1"
Plan = dict[str, Any]


def new_plan(model_name: str | None, *, base_cfg: list[Any] | None = None, method: str | None = None) -> Plan:
    """An empty plan (keeps everything) for ``model_name``."""
    return {"format": PLAN_FORMAT, "model": model_name, "base_cfg": copy.deepcopy(base_cfg), "cfg": None,
            "method": method, "modules": {}, "groups": {}}


def check_plan(plan: Any) -> Plan:
    """Validate the structure of a plan dict (e.g. read from JSON); raise :class:`CheckpointError` if malformed."""
    if not isinstance(plan, Mapping) or plan.get("format") != PLAN_FORMAT:
        fmt = plan.get("format") if isinstance(plan, Mapping) else type(plan).__name__
        raise CheckpointError(f"not a channel plan (expected format {PLAN_FORMAT!r}, got {fmt!r})")
    modules = plan.get("modules")
    if not isinstance(modules, Mapping):
        raise CheckpointError("channel plan has no 'modules' mapping")
    for name, entry in modules.items():
        if not isinstance(entry, Mapping):
            raise CheckpointError(f"channel plan entry for module {name!r} is not a mapping")
        for key in ("out", "in", "select"):
            if key in entry:
                idx = entry[key]
                full = entry.get(f"{key}_full")
                if not isinstance(idx, list) or not all(isinstance(i, int) for i in idx):
                    raise CheckpointError(f"channel plan: {name}.{key} must be a list of ints")
                if not isinstance(full, int) or any(i < 0 or i >= full for i in idx):
                    raise CheckpointError(f"channel plan: {name}.{key} indexes out of range of {key}_full={full}")
                if sorted(set(idx)) != idx:
                    raise CheckpointError(f"channel plan: {name}.{key} must be strictly increasing")
    return dict(plan)


def plan_to_json(plan: Mapping[str, Any]) -> str:
    """Serialise a plan to a JSON string."""
    return json.dumps(check_plan(plan), indent=1)


def plan_from_json(text: str) -> Plan:
    """Parse and validate a plan from a JSON string."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"channel plan is not valid JSON: {e}") from None
    return check_plan(obj)


# ----------------------------------------------------------------------------------------------------------------
# applying a plan to modules


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.contiguous().clone(), requires_grad=like.requires_grad)


def _needs_slice(name: str, key: str, current: int, entry: Mapping[str, Any]) -> bool:
    full, kept = entry[f"{key}_full"], len(entry[key])
    if current == full:
        return kept != full
    if current == kept:
        return False
    raise CheckpointError(f"channel plan: module {name!r} has {key} width {current}, the plan expects "
                          f"{full} (base) or {kept} (pruned)")


def _slice_out(name: str, m: nn.Module, idx: torch.Tensor, entry: Mapping[str, Any]) -> None:
    if isinstance(m, nn.Conv2d):
        if not _needs_slice(name, "out", m.out_channels, entry):
            return
        if m.groups != 1:
            raise PrunekitError(f"channel plan: grouped conv {name!r} (groups={m.groups}) cannot be sliced")
        m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
        if m.bias is not None:
            m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
        m.out_channels = int(idx.numel())
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        if not _needs_slice(name, "out", m.num_features, entry):
            return
        if m.weight is not None:
            m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
            m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
        if m.running_mean is not None:
            m.running_mean = m.running_mean.index_select(0, idx).clone()
            m.running_var = m.running_var.index_select(0, idx).clone()
        m.num_features = int(idx.numel())
    elif isinstance(m, nn.Linear):
        if not _needs_slice(name, "out", m.out_features, entry):
            return
        m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
        if m.bias is not None:
            m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
        m.out_features = int(idx.numel())
    else:
        raise PrunekitError(f"channel plan: cannot slice outputs of {name!r} ({type(m).__name__})")


def _slice_in(name: str, m: nn.Module, idx: torch.Tensor, entry: Mapping[str, Any]) -> None:
    if isinstance(m, nn.Conv2d):
        if not _needs_slice(name, "in", m.in_channels, entry):
            return
        if m.groups != 1:
            raise PrunekitError(f"channel plan: grouped conv {name!r} (groups={m.groups}) cannot be sliced")
        m.weight = _param(m.weight.data.index_select(1, idx), m.weight)
        m.in_channels = int(idx.numel())
    elif isinstance(m, nn.Linear):
        group = int(entry.get("in_group", 1))
        cols = (idx.view(-1, 1) * group + torch.arange(group).view(1, -1)).flatten() if group > 1 else idx
        fake = {"in": list(range(len(entry["in"]) * group)), "in_full": entry["in_full"] * group}
        if not _needs_slice(name, "in", m.in_features, fake):
            return
        m.weight = _param(m.weight.data.index_select(1, cols), m.weight)
        m.in_features = int(cols.numel())
    else:
        raise PrunekitError(f"channel plan: cannot slice inputs of {name!r} ({type(m).__name__})")


def _set_select(name: str, m: nn.Module, kept: list[int], full: int) -> None:
    if not hasattr(m, "set_kept") or not hasattr(m, "indexes"):
        raise PrunekitError(f"channel plan: {name!r} ({type(m).__name__}) is not a channel selection layer")
    if m.indexes.numel() != full:
        raise CheckpointError(f"channel plan: selection {name!r} has width {m.indexes.numel()}, plan expects {full}")
    m.set_kept(kept)


@torch.no_grad()
def apply_plan(model: nn.Module, plan: Mapping[str, Any]) -> nn.Module:
    """Slice ``model`` in place to the shapes of ``plan`` (weights sliced along) and return it.

    ``model`` is the plan's base model (fresh or trained), or one already at the pruned widths (then those modules
    are left alone). Sets ``model.prunekit_plan`` and, when the plan has one, ``model.prunekit_cfg``.
    """
    plan = check_plan(plan)
    modules = dict(model.named_modules())
    for name, entry in plan["modules"].items():
        if name not in modules:
            raise CheckpointError(f"channel plan names module {name!r}, which "
                                  f"{getattr(model, 'prunekit_name', type(model).__name__)} does not have")
        m = modules[name]
        dev = next(iter(m.parameters()), torch.empty(0)).device
        if "out" in entry:
            _slice_out(name, m, torch.tensor(entry["out"], dtype=torch.long, device=dev), entry)
        if "in" in entry:
            _slice_in(name, m, torch.tensor(entry["in"], dtype=torch.long, device=dev), entry)
        if "select" in entry:
            _set_select(name, m, entry["select"], entry["select_full"])
    model.prunekit_plan = copy.deepcopy(dict(plan))
    if plan.get("cfg") is not None:
        model.prunekit_cfg = copy.deepcopy(plan["cfg"])
    return model


# ----------------------------------------------------------------------------------------------------------------
# composing plans (iterative pruning)


def _compose_idx(first: list[int] | None, second: list[int]) -> list[int]:
    return list(second) if first is None else [first[i] for i in second]


def compose_plans(first: Mapping[str, Any] | None, second: Mapping[str, Any]) -> Plan:
    """The plan equivalent to applying ``first`` and then ``second`` (whose indexes refer to ``first``'s result).

    Selections are absolute (full-width numbering) in both plans, so ``second``'s selection replaces ``first``'s.
    """
    second = check_plan(second)
    if first is None:
        return copy.deepcopy(second)
    first = check_plan(first)
    out = copy.deepcopy(first)
    out["cfg"] = copy.deepcopy(second.get("cfg"))
    out["method"] = second.get("method") or first.get("method")
    for name, e2 in second["modules"].items():
        e1 = out["modules"].setdefault(name, {})
        for key in ("out", "in"):
            if key in e2:
                if key in e1 and len(e1[key]) != e2[f"{key}_full"]:
                    raise CheckpointError(f"cannot compose plans: {name}.{key} has {len(e1[key])} channels after the "
                                          f"first plan, the second expects {e2[f'{key}_full']}")
                e1[key] = _compose_idx(e1.get(key), e2[key])
                e1.setdefault(f"{key}_full", e2[f"{key}_full"])
        if "in_group" in e2:
            e1["in_group"] = e2["in_group"]
        if "select" in e2:
            e1["select"], e1["select_full"] = list(e2["select"]), e2["select_full"]
    for gname, g2 in second.get("groups", {}).items():
        g1 = out["groups"].get(gname)
        if g1 is not None and not g2.get("select") and len(g1["kept"]) == g2["full"]:
            out["groups"][gname] = {"kept": [g1["kept"][i] for i in g2["kept"]], "full": g1["full"],
                                    "select": False}
        else:
            out["groups"][gname] = copy.deepcopy(g2)
    return check_plan(out)
