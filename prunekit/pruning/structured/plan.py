"""Channel plans: which channels every pruned module keeps, as plain JSON.

A plan is a dict (JSON-able, stored as checkpoint meta ``plan`` and as ``plan.json``)::

    {"format": "prunekit-plan/2", "model": "resnet56", "base_cfg": null, "cfg": [...], "method": "l1-filter",
     "modules": {"layer1.0.conv1": {"out": [0, 2, ...], "out_full": 16},
                 "layer1.0.bn1":   {"out": [0, 2, ...], "out_full": 16},
                 "layer1.0.conv2": {"in":  [0, 2, ...], "in_full": 16},
                 "layer1.0.select": {"select": [1, 5, ...], "select_full": 64},
                 "layer2.0.shortcut": {"custom": [...], "custom_full": 16},
                 "fc": {"in": [...], "in_full": 64}},
     "params": {"blocks.0.gamma@0": {"param": "blocks.0.gamma", "dim": 0, "kept": [...], "full": 96}},
     "groups": {"layer1.0.conv1": {"kept": [0, 2, ...], "full": 16}, ...}}

Index lists are positions in the *base* model (the dense model the builder makes; ``base_cfg`` null = the default
full model). ``out`` slices Conv/Linear outputs (weight dim 0 and bias) and norm layers (BatchNorm, InstanceNorm,
GroupNorm by whole groups, PReLU); ``in`` slices Conv weight dim 1 (grouped convs: the same positions in every
group; depthwise convs lose whole groups) or Linear columns (a flattened feature map is listed column by column;
plans of format ``/1`` give ``in_group`` columns per channel instead); ``select`` sets a
:class:`~prunekit.models.layers.ChannelSelection`; ``custom`` is passed to the slicer registered for the module's
class; ``params`` slices parameters and buffers that no layer owns (layer-scale γ, class tokens). ``cfg`` is the zoo
cfg of the pruned model (null when the shape is not expressible as a cfg).

:func:`apply_plan` turns a freshly built base model into the pruned one. It is idempotent per module: a module
already at the pruned width (e.g. built from the pruned ``cfg``) is left alone, so loading works either way.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import torch
import torch.nn as nn

from ...errors import CheckpointError, PrunekitError
from .drop import drop_blocks

PLAN_FORMAT = "prunekit-plan/2"
PLAN_FORMATS = ("prunekit-plan/1", PLAN_FORMAT)  # /1: no "params"/"custom" entries; read as is
Plan = dict[str, Any]


def clone(obj: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars), much faster than ``copy.deepcopy`` on the long
    index lists of a plan."""
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and all(type(v) is int for v in obj[:4]) and all(type(v) is int for v in obj):
            return list(obj)
        return [clone(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: clone(v) for k, v in obj.items()}
    return obj


def new_plan(model_name: str | None, *, base_cfg: list[Any] | None = None, method: str | None = None) -> Plan:
    """An empty plan (keeps everything) for ``model_name``."""
    return {"format": PLAN_FORMAT, "model": model_name, "base_cfg": clone(base_cfg), "cfg": None,
            "method": method, "modules": {}, "groups": {}}


def check_plan(plan: Any) -> Plan:
    """Validate the structure of a plan dict (e.g. read from JSON); raise :class:`CheckpointError` if malformed."""
    if not isinstance(plan, Mapping) or plan.get("format") not in PLAN_FORMATS:
        fmt = plan.get("format") if isinstance(plan, Mapping) else type(plan).__name__
        raise CheckpointError(f"not a channel plan (expected format {PLAN_FORMAT!r}, got {fmt!r})")
    modules = plan.get("modules")
    if not isinstance(modules, Mapping):
        raise CheckpointError("channel plan has no 'modules' mapping")
    for name, entry in modules.items():
        if not isinstance(entry, Mapping):
            raise CheckpointError(f"channel plan entry for module {name!r} is not a mapping")
        for key in ("out", "in", "select", "custom"):
            if key in entry:
                idx = entry[key]
                full = entry.get(f"{key}_full")
                if not isinstance(idx, list) or not all(isinstance(i, int) for i in idx):
                    raise CheckpointError(f"channel plan: {name}.{key} must be a list of ints")
                if not isinstance(full, int) or any(i < 0 or i >= full for i in idx):
                    raise CheckpointError(f"channel plan: {name}.{key} indexes out of range of {key}_full={full}")
                if sorted(set(idx)) != idx:
                    raise CheckpointError(f"channel plan: {name}.{key} must be strictly increasing")
    params = plan.get("params", {})
    if not isinstance(params, Mapping):
        raise CheckpointError("channel plan 'params' must be a mapping")
    for key, entry in params.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("param"), str):
            raise CheckpointError(f"channel plan: params entry {key!r} must name its parameter")
        kept, full, dim = entry.get("kept"), entry.get("full"), entry.get("dim")
        if not isinstance(dim, int) or dim < 0 or not isinstance(full, int) or not isinstance(kept, list) or \
                not all(isinstance(i, int) and 0 <= i < full for i in kept) or sorted(set(kept)) != kept:
            raise CheckpointError(f"channel plan: params entry {key!r} needs dim, full and strictly increasing "
                                  "kept positions in range")
    attrs = plan.get("attrs", {})
    if not isinstance(attrs, Mapping) or not all(
            isinstance(a, Mapping) and all(isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)
                                           for v in a.values()) for a in attrs.values()):
        raise CheckpointError("channel plan 'attrs' must map module -> attribute -> [before, after] ints")
    depth = plan.get("depth", {})
    if not isinstance(depth, Mapping) or not all(
            isinstance(d, Mapping) and isinstance(d.get("removed"), list) and isinstance(d.get("full"), int) and
            all(type(i) is int and 0 <= i < d["full"] for i in d["removed"]) for d in depth.values()):
        raise CheckpointError("channel plan 'depth' must map container -> {removed: [ints < full], full: int}")
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


def _local(name: str, idx: list[int], groups: int, per: int, what: str) -> list[int]:
    """Positions inside one group of a grouped layer, checked to be the same in every group."""
    if len(idx) % groups:
        raise CheckpointError(f"channel plan: {what} of grouped conv {name!r} keeps {len(idx)} channels, not a "
                              f"multiple of its {groups} groups")
    k = len(idx) // groups
    local = [i % per for i in idx[:k]]
    if idx != [g * per + j for g in range(groups) for j in local]:
        raise CheckpointError(f"channel plan: {what} of grouped conv {name!r} must keep the same positions in "
                              "every group")
    return local


def _slice_conv(name: str, m: nn.modules.conv._ConvNd, entry: Mapping[str, Any]) -> None:
    """Conv outputs (weight dim 0, bias) and inputs (weight dim 1; per group for grouped convs; depthwise convs
    lose whole groups)."""
    g = m.groups
    depthwise = g > 1 and m.weight.shape[1] == 1
    do_in = "in" in entry and _needs_slice(name, "in", m.in_channels, entry)
    do_out = "out" in entry and _needs_slice(name, "out", m.out_channels, entry)
    dev = m.weight.device
    w = m.weight.data
    tr = isinstance(m, nn.modules.conv._ConvTransposeNd)  # weight (in, out, ...): its rule allows groups=1 only
    if do_out:
        out = entry["out"]
        if g > 1 and not depthwise:
            _local(name, out, g, m.out_channels // g, "output")
        w = w.index_select(1 if tr else 0, torch.tensor(out, dtype=torch.long, device=dev))
        if m.bias is not None:
            m.bias = _param(m.bias.data.index_select(0, torch.tensor(out, dtype=torch.long, device=dev)), m.bias)
        m.out_channels = len(out)
    if do_in:
        idx = entry["in"]
        if depthwise:
            m.groups = len(idx)
        elif g > 1:
            local = _local(name, idx, g, m.in_channels // g, "input")
            w = w.index_select(1, torch.tensor(local, dtype=torch.long, device=dev))
        else:
            w = w.index_select(0 if tr else 1, torch.tensor(idx, dtype=torch.long, device=dev))
        m.in_channels = len(idx)
    if depthwise and m.out_channels % m.groups:
        raise CheckpointError(f"channel plan: depthwise conv {name!r} would have {m.out_channels} outputs for "
                              f"{m.groups} groups")
    if do_in or do_out:
        m.weight = _param(w, m.weight)


def _slice_out(name: str, m: nn.Module, idx: torch.Tensor, entry: Mapping[str, Any]) -> None:
    if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm*, SyncBatchNorm, InstanceNorm*
        if not _needs_slice(name, "out", m.num_features, entry):
            return
        if m.weight is not None:
            m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
            m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
        if m.running_mean is not None:
            m.running_mean = m.running_mean.index_select(0, idx).clone()
            m.running_var = m.running_var.index_select(0, idx).clone()
        m.num_features = int(idx.numel())
    elif isinstance(m, nn.GroupNorm):
        if not _needs_slice(name, "out", m.num_channels, entry):
            return
        per = m.num_channels // m.num_groups
        if idx.numel() % per:
            raise CheckpointError(f"channel plan: GroupNorm {name!r} must lose whole groups of {per} channels")
        if m.weight is not None:
            m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
            m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
        m.num_channels, m.num_groups = int(idx.numel()), int(idx.numel()) // per
    elif isinstance(m, nn.PReLU):
        if not _needs_slice(name, "out", m.num_parameters, entry):
            return
        m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
        m.num_parameters = int(idx.numel())
    elif isinstance(m, nn.Linear):
        if not _needs_slice(name, "out", m.out_features, entry):
            return
        m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
        if m.bias is not None:
            m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
        m.out_features = int(idx.numel())
    elif isinstance(m, nn.Embedding):  # the vectors' channels: weight columns
        if not _needs_slice(name, "out", m.embedding_dim, entry):
            return
        m.weight = _param(m.weight.data.index_select(1, idx), m.weight)
        m.embedding_dim = int(idx.numel())
    elif isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 1:  # LayerNorm, *RMSNorm
        if not _needs_slice(name, "out", m.weight.numel(), entry):
            return
        m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
        if isinstance(getattr(m, "bias", None), torch.Tensor):
            m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
        if getattr(m, "normalized_shape", None) is not None:
            m.normalized_shape = (int(idx.numel()),)
    else:
        raise PrunekitError(f"channel plan: cannot slice outputs of {name!r} ({type(m).__name__})")


def _slice_in(name: str, m: nn.Module, idx: torch.Tensor, entry: Mapping[str, Any]) -> None:
    if isinstance(m, nn.Linear):
        group = int(entry.get("in_group", 1))  # plans of format /1: columns per channel of a flattened map
        cols = (idx.view(-1, 1) * group + torch.arange(group, device=idx.device).view(1, -1)).flatten() \
            if group > 1 else idx
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


def _slice_param(model: nn.Module, key: str, entry: Mapping[str, Any]) -> None:
    """Slice a parameter or buffer that is not owned by a known layer (e.g. a layer-scale γ or a class token)."""
    qual, dim, kept, full = entry["param"], int(entry["dim"]), list(entry["kept"]), int(entry["full"])
    owner_name, _, attr = qual.rpartition(".")
    try:
        owner = model.get_submodule(owner_name) if owner_name else model
    except AttributeError:
        raise CheckpointError(f"channel plan names parameter {qual!r}, which the model does not have") from None
    t = getattr(owner, attr, None)
    if not isinstance(t, torch.Tensor) or dim >= t.dim():
        raise CheckpointError(f"channel plan names parameter {qual!r} (dim {dim}), which the model does not have")
    if t.shape[dim] == len(kept) and len(kept) != full:
        return
    if t.shape[dim] != full:
        raise CheckpointError(f"channel plan: parameter {qual!r} has size {t.shape[dim]} on dim {dim}, the plan "
                              f"expects {full} (base) or {len(kept)} (pruned)")
    idx = torch.tensor(kept, dtype=torch.long, device=t.device)
    with torch.no_grad():
        new = t.data.index_select(dim, idx).contiguous().clone()
    if isinstance(t, nn.Parameter):
        setattr(owner, attr, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        owner.register_buffer(attr, new, persistent=attr not in owner._non_persistent_buffers_set)


def _slice_custom(name: str, m: nn.Module, entry: Mapping[str, Any]) -> None:
    from .rules import slicer_for

    slicer = slicer_for(m)
    if slicer is None:
        raise PrunekitError(f"channel plan: module {name!r} ({type(m).__name__}) has a custom entry but no slicer "
                            "is registered for its class (register_module_rule(cls, rule, slicer=...))")
    slicer(m, list(entry["custom"]), int(entry["custom_full"]))


def _set_attrs(model: nn.Module, name: str, attrs: Mapping[str, Any]) -> None:
    """Set the integer attributes a pruned module reads in its forward (``num_heads``: ``[before, after]``)."""
    try:
        m = model.get_submodule(name) if name else model
    except AttributeError:
        raise CheckpointError(f"channel plan names module {name!r}, which the model does not have") from None
    for attr, (before, after) in attrs.items():
        now = getattr(m, attr, None)
        if now == after:
            continue
        if now != before:
            raise CheckpointError(f"channel plan: {name}.{attr} is {now!r}, the plan expects {before!r} (base) or "
                                  f"{after!r} (pruned)")
        setattr(m, attr, after)


def _shared_params(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Parameters held by several modules (a tied ``lm_head`` and embedding): ``[[(module, attr), ...], ...]``."""
    seen: dict[int, list[tuple[nn.Module, str]]] = {}
    for m in model.modules():
        for attr, p in m._parameters.items():
            if p is not None:
                seen.setdefault(id(p), []).append((m, attr))
    return [v for v in seen.values() if len(v) > 1]


def _retie(model: nn.Module, shared: list[list[tuple[nn.Module, str]]]) -> None:
    """Share again what was shared before slicing (each holder was sliced alike; else a CheckpointError)."""
    for holders in shared:
        first = getattr(*holders[0])
        for m, attr in holders[1:]:
            p = getattr(m, attr)
            if p is first:
                continue
            if p.shape != first.shape or not torch.equal(p.data, first.data):
                raise CheckpointError(f"channel plan slices a parameter shared by several modules differently "
                                      f"({type(m).__name__}.{attr}: {tuple(p.shape)} vs {tuple(first.shape)})")
            setattr(m, attr, first)


@torch.no_grad()
def apply_plan(model: nn.Module, plan: Mapping[str, Any]) -> nn.Module:
    """Slice ``model`` in place to the shapes of ``plan`` (weights sliced along) and return it.

    ``model`` is the plan's base model (fresh or trained), or one already at the pruned widths (then those modules
    are left alone). Sets ``model.prunekit_plan`` and, when the plan has one, ``model.prunekit_cfg``.
    """
    plan = check_plan(plan)
    shared = _shared_params(model)
    for container, entry in plan.get("depth", {}).items():
        drop_blocks(model, container, entry)
    modules = dict(model.named_modules())
    for name, entry in plan["modules"].items():
        if name not in modules:
            raise CheckpointError(f"channel plan names module {name!r}, which "
                                  f"{getattr(model, 'prunekit_name', None) or type(model).__name__} does not have")
        m = modules[name]
        dev = next(iter(m.parameters()), torch.empty(0)).device
        if isinstance(m, nn.modules.conv._ConvNd):
            _slice_conv(name, m, entry)
        else:
            if "out" in entry:
                _slice_out(name, m, torch.tensor(entry["out"], dtype=torch.long, device=dev), entry)
            if "in" in entry:
                _slice_in(name, m, torch.tensor(entry["in"], dtype=torch.long, device=dev), entry)
        if "select" in entry:
            _set_select(name, m, entry["select"], entry["select_full"])
        if "custom" in entry:
            _slice_custom(name, m, entry)
    for key, entry in plan.get("params", {}).items():
        _slice_param(model, key, entry)
    for name, attrs in plan.get("attrs", {}).items():
        _set_attrs(model, name, attrs)
    _retie(model, shared)
    model.prunekit_plan = clone(dict(plan))
    if plan.get("cfg") is not None:
        model.prunekit_cfg = clone(plan["cfg"])
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
        return clone(second)
    first = check_plan(first)
    out = clone(first)
    out["cfg"] = clone(second.get("cfg"))
    out["method"] = second.get("method") or first.get("method")
    for name, e2 in second["modules"].items():
        e1 = out["modules"].setdefault(name, {})
        for key in ("out", "in", "custom"):
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
    out["format"] = PLAN_FORMAT
    params = out.setdefault("params", {})
    for key, p2 in second.get("params", {}).items():
        p1 = params.get(key)
        if p1 is None:
            params[key] = clone(dict(p2))
        else:
            if len(p1["kept"]) != p2["full"]:
                raise CheckpointError(f"cannot compose plans: parameter {key} has {len(p1['kept'])} positions after "
                                      f"the first plan, the second expects {p2['full']}")
            params[key] = {**p1, "kept": [p1["kept"][i] for i in p2["kept"]]}
    if second.get("depth"):
        if out.get("depth") or out["modules"]:
            raise CheckpointError("cannot compose a plan that removes blocks after one that already pruned: remove "
                                  "blocks first (prune_structured(depth=...) does)")
        out["depth"] = clone(second["depth"])
    attrs = out.setdefault("attrs", {})
    for name, a2 in second.get("attrs", {}).items():
        a1 = attrs.setdefault(name, {})
        for attr, (before, after) in a2.items():
            a1[attr] = [a1[attr][0] if attr in a1 else before, after]
    for gname, g2 in second.get("groups", {}).items():
        g1 = out["groups"].get(gname)
        if g1 is not None and not g2.get("select") and len(g1["kept"]) == g2["full"]:
            out["groups"][gname] = {"kept": [g1["kept"][i] for i in g2["kept"]], "full": g1["full"],
                                    "select": False}
        else:
            out["groups"][gname] = clone(g2)
    return check_plan(out)
