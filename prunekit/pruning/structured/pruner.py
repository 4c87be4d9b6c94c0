"""Structured pruning of any model: select channels on the discovered groups, slice, verify.

:func:`prune_structured` is the generic entry point (uniform per-group ratio, one global ranking, or a MACs /
params budget). L1-filter's named plans and network slimming (:mod:`.l1_filter`, :mod:`.slimming`) choose their
channels with their own rules on the same groups and finish through :func:`finish` here, so every path produces
the same kind of result: a physically smaller copy, a JSON plan relative to the base model, per-group rows, and
(on request) the exactness check of :mod:`.verify`.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ...errors import PrunekitError, UnknownNameError, check_number, check_range
from ...utils.warn import warn_user
from ..calibrated.blocks import find_blocks
from .capture import as_inputs
from .compensate import compensate_biases
from .cost import CostModel, removed_positions
from .depth import prune_depth
from .fallback import first_failure, groups_to_keep_whole
from .graph import DependencyGraph, Group, build_graph, candidates, ignore_paths
from .heads import attention_attrs, attention_table, removed_roots
from .hf import (derived_head_dim, describable, follow_hidden, hidden_follows_heads, hidden_multiple_of_heads,
                 is_hf_model, stock_describable, update_hf_config)
from .importance import CRITERIA, accumulate_gradients, activation_norms, all_scores
from .plan import Plan, apply_plan, compose_plans, new_plan
from .result import StructuredResult, carry_identity
from .selection import check_round_to, global_order, global_take, keep_count, search, select_uniform
from .verify import check_exact

log = logging.getLogger(__name__)
Keep = dict[str, list[int]]


# ----------------------------------------------------------------------------------------------------------------
# candidates and keep lists


def removed_units(graph: DependencyGraph, g: Group, kept: Iterable[int]) -> list[int]:
    """Unit indexes of ``g`` not in ``kept`` (``kept`` in the terms of :func:`candidates`)."""
    cand = candidates(graph, g)
    kept_set = set(kept)
    unknown = kept_set - set(cand)
    if unknown:
        raise PrunekitError(f"group {g.name}: kept channels {sorted(unknown)[:5]} do not exist")
    return [u for u, c in enumerate(cand) if c not in kept_set]


def build_plan(graph: DependencyGraph, removed: Mapping[str, Sequence[int]], method: str,
               keep: Mapping[str, Sequence[int]] | None = None) -> Plan:
    """The plan (relative to ``graph.model``) that removes ``removed[group name]`` units of every group."""
    model = graph.model
    plan = new_plan(getattr(model, "prunekit_name", None), base_cfg=getattr(model, "prunekit_cfg", None),
                    method=method)
    by_name = {g.name: g for g in graph.groups}
    gone: dict[tuple[str, str], set[int]] = {}
    for gname, units in removed.items():
        g = by_name[gname]
        if not units:
            continue
        for key, per_unit in g.positions.items():
            s = gone.setdefault(key, set())
            for u in units:
                s.update(per_unit[u])
        gone_units = set(units)
        kept = list(keep[gname]) if keep is not None and gname in keep else \
            [c for u, c in enumerate(candidates(graph, g)) if u not in gone_units]
        plan["groups"][gname] = {"kept": sorted(kept), "full": g.size if g.select is None else
                                 graph.sites[("select_out", g.select)].info["full"], "select": g.select is not None}
    mods = plan["modules"]
    for (kind, name), rm in sorted(gone.items(), key=lambda kv: graph.sites[kv[0]].order):
        site = graph.sites[(kind, name)]
        kept = [p for p in range(site.size) if p not in rm]
        if kind in ("out", "norm"):
            mods.setdefault(name, {}).update({"out": kept, "out_full": site.size})
        elif kind == "in":
            mods.setdefault(name, {}).update({"in": kept, "in_full": site.size})
        elif kind == "select_out":
            sel = site.info["kept"]
            mods.setdefault(name, {}).update({"select": [sel[p] for p in kept], "select_full": site.info["full"]})
        elif kind == "custom":
            mods.setdefault(name, {}).update({"custom": kept, "custom_full": site.size})
        elif kind == "param":
            plan.setdefault("params", {})[name] = {"param": site.info["param"], "dim": site.info["dim"],
                                                   "kept": kept, "full": site.size}
    if graph.attention:
        attrs = attention_attrs(graph, attention_table(graph, removed_roots(graph, removed)))
        if attrs:
            plan["attrs"] = attrs
    return plan


def _zoo_cfg(model: nn.Module) -> list[Any] | None:
    from ...models.cfg import current_cfg

    return current_cfg(model)


def rebuild(model: nn.Module, step_plan: Plan) -> tuple[nn.Module, Plan]:
    """Physically prune a copy of ``model`` by ``step_plan``; return ``(pruned, cumulative plan)``.

    For zoo models the pruned cfg is recorded too (``plan["cfg"]``, ``model.prunekit_cfg``).
    """
    sliced = apply_plan(copy.deepcopy(model), step_plan)
    cfg = _zoo_cfg(sliced)
    step_plan = dict(step_plan, cfg=cfg)
    total = compose_plans(getattr(model, "prunekit_plan", None), step_plan)
    carry_identity(model, sliced)
    sliced.prunekit_cfg = cfg  # None: the pruned shapes are not expressible as a zoo cfg (the plan rebuilds them)
    sliced.prunekit_plan = total
    sliced.train(model.training)
    return sliced, total


def channel_rows(graph: DependencyGraph, groups: Sequence[Group], keep: Mapping[str, list[int]]) -> list[dict]:
    """Per-group rows ``{layer, stage, total, kept, pruned, kept_ratio}`` (total = channels before this step)."""
    rows = []
    for g in groups:
        total = len(candidates(graph, g))
        kept = len(keep.get(g.name, candidates(graph, g)))
        rows.append({"layer": g.name, "stage": g.stage + 1, "total": total, "kept": kept, "pruned": total - kept,
                     "kept_ratio": round(kept / total, 4) if total else 0.0})
    return rows


def finish(graph: DependencyGraph, groups: Sequence[Group], keep: Keep, method: str, notes: list[str],
           info: Mapping[str, Any] | None = None) -> StructuredResult:
    """Plan + pruned model + rows for ``keep`` (kept channels per group, in :func:`candidates` terms)."""
    if notes:
        from ...utils.warn import warn_user

        warn_user(f"{len(notes)} layer(s) kept one channel instead of none: " + "; ".join(notes))
    by_name = {g.name: g for g in graph.groups}
    removed = {name: removed_units(graph, by_name[name], kept) for name, kept in keep.items()}
    step = build_plan(graph, removed, method, keep)
    pruned, total = rebuild(graph.model, step)
    return StructuredResult(model=pruned, plan=total, keep=dict(keep), rows=channel_rows(graph, groups, keep),
                            warnings=list(notes), info=dict(info or {}), graph=graph, removed=removed,
                            step_plan=step)


KINDS = ("heads", "hidden", "channels")
_MAX_FALLBACKS = 16


def prune_structured(model: nn.Module, example_inputs: Any = None, *,
                     input_size: Sequence[int] | None = None, criterion: str = "l1", ratio: float | None = None,
                     global_ranking: bool = False, target_macs: float | None = None,
                     target_params: float | None = None, round_to: int = 1, ignore: Sequence[str] = (),
                     reduction: str = "sum", normalize: bool = True, max_group_ratio: float = 0.9,
                     data: Iterable | None = None, loss_fn: Any = None, seed: int = 0, verify: bool = True,
                     simple_only: bool = False, strict_empty: bool = False, tolerance: float = 1e-5,
                     kinds: Sequence[str] = KINDS, head_dims: bool = False, depth: int = 0,
                     blocks: str | None = None, hf_loadable: bool | None = None,
                     compensate: bool = False) -> StructuredResult:
    """Remove channels, attention heads and blocks from any model for real, and prove the result exact.

    ``example_inputs``: a tensor, a tuple of inputs, or a dict of keyword inputs (``{"input_ids": ...}``); the model
    runs once on them and every op of that run is placed (:mod:`.capture`). Give ``ratio`` (fraction of every
    group's channels, or of all channels with ``global_ranking``), or a budget ``target_macs`` / ``target_params``
    (fraction of the model's conv/linear MACs or of its params to keep; global ranking). ``criterion``: l1, l2, bn,
    taylor (needs ``data``: a few ``(x, y)`` batches, or keyword batches with ``labels``), activation (calibrated:
    ``data`` batches of model inputs, else the example), random. ``ignore``: regular expressions of module paths kept
    whole. ``round_to``: kept channels per group a multiple of this. ``max_group_ratio``: no group loses more than
    this fraction under a global ranking. A group that a ratio would empty keeps its strongest channel (one warning
    for all), or with ``strict_empty`` raises :class:`~prunekit.errors.EmptyLayerError` naming it.

    Transformers: ``kinds`` says what may be pruned: ``"heads"`` (attention heads; in grouped-query attention a
    key/value head with its query group), ``"hidden"`` (the residual-stream width: embeddings, every norm and
    projection on it) and ``"channels"`` (every other group: MLP widths, conv filters). ``head_dims``: heads keep
    their number and lose dims instead (refused where rotary embeddings make it inexact). ``depth``: remove this
    many whole blocks first (lowest block influence on ``data`` or the example; ``blocks`` names their container).
    ``compensate``: after the exactness check, add to each pruned consumer's bias the mean contribution of the
    channels it lost over ``data`` (FLAP's bias compensation; the example when no data is given).
    ``hf_loadable`` (default: on for Hugging Face models pruned with a per-group ratio): prune only what the stock
    config describes, alike in every layer, and update ``model.config`` so ``save_pretrained`` / ``from_pretrained``
    round-trip; ``info["hf"]`` says whether it does.

    >>> import prunekit
    >>> model = prunekit.create_model("resnet20")
    >>> res = prunekit.prune_structured(model, ratio=0.5)       # every group keeps floor(n * 0.5) channels
    >>> res.model.prunekit_cfg                                   # the blocks' first convs: 16/32/64 -> 8/16/32
    [8, 8, 8, 16, 16, 16, 32, 32, 32]
    >>> res.info["max_abs_diff"] < 1e-5    # equals the unpruned model that ignores the removed channels
    True
    """
    t0 = time.perf_counter()
    example = _example(model, example_inputs, input_size)
    n_targets = sum(v is not None for v in (ratio, target_macs, target_params))
    if n_targets != 1:
        raise PrunekitError("structured pruning needs exactly one of ratio, target_macs, target_params")
    if criterion not in CRITERIA:
        raise UnknownNameError(f"unknown importance criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    if ratio is not None:
        check_range("ratio", float(ratio), 0.0, 1.0, high_open=True)
    for name, v in (("target_macs", target_macs), ("target_params", target_params)):
        if v is not None:
            check_range(name, float(v), 0.0, 1.0, low_open=True)
    check_range("max_group_ratio", float(max_group_ratio), 0.0, 1.0, high_open=True)
    round_to = check_round_to(round_to)
    kinds = _check_kinds(kinds)
    depth = int(check_number("depth", depth, low=0, high=10_000, integer=True))
    hf = is_hf_model(model)
    if hf_loadable is None:
        hf_loadable = hf and ratio is not None and not global_ranking and stock_describable(model)
    if hf_loadable and not hf:
        raise PrunekitError("hf_loadable needs a Hugging Face transformers model (one with a config)")
    base, depth_res = model, None
    if depth:
        depth_res = prune_depth(model, example, depth, data=data, blocks=blocks, tolerance=tolerance, verify=verify)
        base = depth_res.model
    graph = build_graph(base, example, ignore=ignore_paths(base, ignore) if ignore else (),
                        options={"head_dims": bool(head_dims)})
    groups = [g for g in graph.groups if g.size >= 2 and g.kind in kinds and (g.simple or not simple_only)]
    if criterion == "bn":
        groups = [g for g in groups if g.norms or g.select is not None]
    chain = find_blocks(base, blocks) if hf_loadable else None
    tied_to_hidden: list[Group] = []
    if chain is not None:
        inside = describable(groups, chain.names)
        hidden = [g for g in inside if g.kind == "hidden"]
        tied_to_hidden = [g for g in groups if g not in inside and hidden and g.size == hidden[0].size]
        groups = inside + tied_to_hidden  # a pooler of width hidden_size follows the hidden width
    if not groups:
        raise PrunekitError(f"{_model_label(model)} has no channel group that can be pruned (every channel is "
                            "fixed by the model's input/output, a mixing op, ignore=, or the kinds asked for)")
    if criterion == "taylor":
        if data is None:
            raise PrunekitError("criterion 'taylor' needs data: a few batches (CLI: --taylor-batches N)")
        accumulate_gradients(base, data, loss_fn, next(base.parameters()).device)
    means: dict[str, torch.Tensor] = {}
    if criterion == "activation" or compensate:
        consumers = {c for g in groups for c in g.consumers}
        graph.activation_norms = activation_norms(base, consumers, data if data is not None else [example],
                                                  means=means if compensate else None)
    scores = all_scores(graph, groups, criterion, reduction=reduction, seed=seed)
    if criterion == "taylor":
        base.zero_grad(set_to_none=True)
    info: dict[str, Any] = {"criterion": criterion, "reduction": reduction, "global": bool(global_ranking or
                                                                                            ratio is None),
                            "round_to": round_to, "groups_total": len(graph.groups),
                            "groups_prunable": len(groups), "kinds": list(kinds)}
    kept_whole: list[str] = []
    follow_heads = bool(hf_loadable and derived_head_dim(base))
    for _ in range(_MAX_FALLBACKS):
        live = [g for g in groups if g.name not in kept_whole]
        notes: list[str] = []
        removed = _select(graph, live, scores, info, ratio=ratio, global_ranking=global_ranking,
                          target_macs=target_macs, target_params=target_params, round_to=round_to,
                          normalize=normalize, max_group_ratio=max_group_ratio, strict_empty=strict_empty,
                          notes=notes)
        if follow_heads:
            hidden_follows_heads(graph, live, scores, removed, info.setdefault("notes", []))
        elif hf_loadable:
            hidden_multiple_of_heads(graph, live, scores, removed, info)
        follow_hidden(graph, [g for g in tied_to_hidden if g in live], scores, removed)
        keep = {}
        for g in live:
            if removed.get(g.name):
                gone = set(removed[g.name])
                keep[g.name] = [c for u, c in enumerate(candidates(graph, g)) if u not in gone]
        res = finish(graph, live, keep, f"structured-{criterion}", notes, info)
        failure = first_failure(res.model, example)
        if failure is None:
            break
        path, err = failure
        if not follow_heads and any(a["module"] == path for a in graph.attention) and \
                any(g.kind == "hidden" for g in live):
            follow_heads = True  # a forward that reshapes heads to the input width (timm's reshape(B, N, C))
            info["hidden_follows_heads"] = path
            continue
        culprits = groups_to_keep_whole(graph, live, path)
        if not culprits:
            raise PrunekitError(f"the pruned model fails in module {path or '<root>'!r} ({err}), and no pruned "
                                f"group lies there; pass ignore=['^{path}$'] to keep it whole")
        kept_whole += culprits
        info.setdefault("kept_whole", []).append({"module": path, "groups": culprits, "error": err})
    else:
        tried = ", ".join(dict.fromkeys(k["module"] or "<root>" for k in info.get("kept_whole", [])))
        raise PrunekitError(f"structured pruning could not find a prune whose model runs (the pruned model failed "
                            f"in {tried}); pass ignore= with those modules to keep them whole")
    if kept_whole:
        warn_user(f"kept {len(kept_whole)} group(s) whole because the pruned model could not run with them pruned: "
                  + "; ".join(f"{k['module']} ({k['error']})" for k in info["kept_whole"]))
    table = attention_table(graph, removed_roots(graph, res.removed)) if graph.attention else []
    if table and ratio is not None and not global_ranking:
        units = sorted({g.size for g in groups if g.kind == "heads" and g.name not in kept_whole})
        if units and any(abs(keep_count(u, float(ratio)) / u - (1 - float(ratio))) > 1e-9 for u in units):
            info.setdefault("notes", []).append(
                f"heads go in whole units ({'/'.join(map(str, units))} per attention: heads, or key/value groups "
                f"with their query heads), so ratio {ratio} keeps floor(units × {1 - float(ratio):.3g}) of them")
    if info.get("notes"):
        res.info["notes"] = list(dict.fromkeys(info["notes"]))
    if table:
        res.info["attention"] = table
        res.info["attention_note"] = ("grouped-query attention: a key/value head is removed with its query heads, so "
                                      "every layer keeps a valid grouped-query layout"
                                      if any(r["heads"] != max(x["heads"] for x in table if x["module"] == r["module"])
                                             for r in table) else "whole heads removed")
    if graph.kept_whole:
        res.info["attention_kept_whole"] = list(graph.kept_whole)
        warn_user("attention kept whole (its heads meet ops prunekit has no head rule for) in module(s) "
                  + ", ".join(repr(p or "<root>") for p in graph.kept_whole))
    if depth_res is not None:  # res.plan already starts from the depth-pruned model's plan (rebuild composes)
        res.info["depth"] = depth_res.info["depth"]
    if hf:
        res.info["hf"] = update_hf_config(res, graph, table, chain, depth_res)
    res.info["prune_seconds"] = round(time.perf_counter() - t0, 4)
    if verify:
        check_exact(base, res, example, tolerance=tolerance)
    if compensate:
        res.info["compensated"] = compensate_biases(res.model, base, res.step_plan, means)
    return res


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    out = tuple(kinds)
    bad = [k for k in out if k not in KINDS]
    if bad or not out:
        raise UnknownNameError(f"kinds: unknown {bad[0]!r}" if bad else "kinds: give at least one" +
                               f"; valid: {', '.join(KINDS)}")
    return out


def _select(graph: DependencyGraph, groups: Sequence[Group], scores: Mapping[str, np.ndarray],
            info: dict[str, Any], *, ratio: float | None, global_ranking: bool, target_macs: float | None,
            target_params: float | None, round_to: int, normalize: bool, max_group_ratio: float,
            strict_empty: bool, notes: list[str]) -> dict[str, list[int]]:
    """Units to remove per group: per-group ratio, global ranking, or a MACs/params budget."""
    if ratio is not None and not global_ranking:
        for g in groups:
            if g.kind == "heads" and keep_count(g.size, float(ratio)) == 0:
                raise PrunekitError(f"ratio {ratio} would remove every head of the attention of group {g.name} "
                                    f"({g.size} units: heads, or key/value groups with their query heads); the "
                                    f"largest ratio that keeps one is {(g.size - 1) / g.size:.4g}")
        return select_uniform(groups, scores, float(ratio), round_to, strict=strict_empty, notes=notes)
    by_name = {g.name: g for g in graph.groups}
    order = global_order(groups, scores, normalize)
    total_units = sum(g.size for g in groups)
    take = lambda k: global_take(groups, order, k, round_to, float(max_group_ratio))  # noqa: E731
    if ratio is not None:
        return take(int(round(float(ratio) * total_units)))
    cost = CostModel(graph, graph.example)
    kind = "macs" if target_macs is not None else "params"
    if kind == "macs":
        cost.include_other_macs()
    target = float(target_macs if target_macs is not None else target_params)
    dense = cost.dense_macs if kind == "macs" else cost.dense_params

    def value(k: int) -> float:
        macs, params = cost.evaluate(removed_positions(by_name, take(k)))
        return macs if kind == "macs" else params

    k = search(value, 0, total_units, lambda v: v <= target * dense + 1e-9)
    reached = value(k) / dense if dense else 1.0
    info.update({"target": {kind: target}, "target_reached": round(reached, 6)})
    if reached > target + 1e-9:
        raise PrunekitError(f"cannot reach target_{kind}={target}: the most the prunable groups allow is "
                            f"{reached:.4f} of the dense {kind} (max_group_ratio={max_group_ratio}); raise "
                            "the target or max_group_ratio")
    return take(k)


def _model_label(model: nn.Module) -> str:
    return getattr(model, "prunekit_name", None) or type(model).__name__


def _example(model: nn.Module, example_inputs: Any, input_size: Sequence[int] | None,
             default_side: int | None = None) -> tuple[torch.Tensor, ...]:
    if example_inputs is not None:
        return as_inputs(example_inputs)
    if input_size is None:
        from ...models import natural_input_size

        natural = natural_input_size(model)
        if natural is None and default_side is not None:  # a zoo family class built directly (CIFAR input)
            natural = (getattr(model, "in_channels", 3), default_side, default_side)
        if natural is None:
            raise PrunekitError("structured pruning needs example_inputs or input_size (C, H, W)")
        input_size = (getattr(model, "in_channels", natural[0]), *natural[1:])
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return (torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0)).to(dev, dtype),)


def graph_for(model: nn.Module, input_size: Sequence[int] | None = None, *, ignore: Sequence[str] = (),
              example_inputs: Any = None, default_side: int | None = 32) -> DependencyGraph:
    """The dependency graph of ``model`` for its natural (or the given) input size (a model that has neither:
    ``in_channels × default_side²``)."""
    example = _example(model, example_inputs, input_size, default_side)
    return build_graph(model, example, ignore=ignore_paths(model, ignore) if ignore else ())
