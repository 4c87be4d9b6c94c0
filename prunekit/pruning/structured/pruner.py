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
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ...errors import EmptyLayerError, PrunekitError, check_number, check_range
from .capture import as_inputs
from .graph import DependencyGraph, Group, build_graph, ignore_paths
from .heads import attention_attrs, attention_table, removed_roots
from .importance import CRITERIA, accumulate_gradients, all_scores
from .plan import Plan, apply_plan, compose_plans, new_plan

log = logging.getLogger(__name__)
Keep = dict[str, list[int]]


@dataclass
class StructuredResult:
    """Outcome of a structured prune.

    ``model``: the physically smaller copy. ``plan``: the cumulative plan relative to the base model
    (``model.prunekit_plan``). ``keep``: kept channels per pruned group in this step (unit indexes; for a
    ChannelSelection group the full-width positions it lets through). ``rows``: per-group channel counts.
    ``warnings``: groups that would have lost every channel (kept at one). ``info``: method-specific numbers,
    including ``max_abs_diff`` / ``rel_diff`` when verified.
    """

    model: nn.Module
    plan: Plan
    keep: Keep
    rows: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    graph: DependencyGraph | None = None
    removed: dict[str, list[int]] = field(default_factory=dict)
    step_plan: Plan = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# candidates and keep lists


def candidates(graph: DependencyGraph, g: Group) -> list[int]:
    """The channels of ``g`` as the keep lists name them: full-width positions for a selection group, else unit
    indexes ``0..size-1`` (for a single conv: its filter indexes)."""
    if g.select is not None:
        return list(graph.sites[("select_out", g.select)].info["kept"])
    return list(range(g.size))


def guard_empty(g: Group, kept: list[int], fallback: int, *, strict: bool, what: str,
                notes: list[str]) -> list[int]:
    """Return ``kept``, or ``[fallback]`` noted in ``notes`` (or :class:`EmptyLayerError` when ``strict``) if empty.
    :func:`finish` turns the notes of one prune into one warning."""
    if kept:
        return kept
    msg = f"{what} would remove every channel of layer {g.name}"
    if strict:
        raise EmptyLayerError(msg + " (drop --strict-empty to keep its strongest channel instead)")
    notes.append(msg + f"; kept its strongest channel {fallback}")
    return [fallback]


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
    for attr in ("prunekit_name", "num_classes", "in_channels", "prunekit_factory", "prunekit_input_size",
                 "prunekit_options"):
        if hasattr(model, attr):
            setattr(sliced, attr, copy.deepcopy(getattr(model, attr)))
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


# ----------------------------------------------------------------------------------------------------------------
# cost model for budgets


class CostModel:
    """Analytic MACs and params of the model after removing units: conv/linear MACs scale with the kept
    fraction of their inputs and outputs; everything else is constant. Exact for conv/linear layers."""

    def __init__(self, graph: DependencyGraph, example: Sequence[torch.Tensor]) -> None:
        self.graph = graph
        self.layer_macs: dict[str, float] = {}
        self.layer_params: dict[str, tuple[float, str]] = {}
        for (kind, name), site in graph.sites.items():
            if kind != "out":
                continue
            m = graph.modules[name]
            if isinstance(m, nn.modules.conv._ConvNd):
                k = math.prod(m.kernel_size)
                self.layer_macs[name] = m.out_channels * (m.in_channels // m.groups) * k * \
                    math.prod(site.info.get("spatial", ()) or (1,))
            elif isinstance(m, nn.Linear):
                self.layer_macs[name] = m.in_features * m.out_features * site.info.get("tokens", 1)
        from ...metrics import count_params

        self.dense_params = count_params(graph.model)
        self.dense_macs = sum(self.layer_macs.values())
        self.other_macs = 0.0
        self._example = example
        self._params = dict(graph.model.named_parameters())

    def include_other_macs(self) -> None:
        """Add the MACs the graph cannot scale (ignored modules, fixed matmuls/attention) as a constant, from one
        count of the dense model, so that budgets are fractions of the whole model's MACs."""
        from ...metrics import count_flops

        total = count_flops(self.graph.model, tuple(self._example[0].shape), convention="macs").macs
        self.other_macs = max(0.0, float(total) - self.dense_macs)
        self.dense_macs += self.other_macs

    def _layer_params(self, m: nn.Module, name: str, removed_pos: Mapping[tuple[str, str], int]) -> float:
        """Parameters a conv/linear loses when ``removed_pos`` outputs/inputs go (weight out'·in'/g'·k + bias)."""
        ro, ri = removed_pos.get(("out", name), 0), removed_pos.get(("in", name), 0)
        bias = 1 if getattr(m, "bias", None) is not None else 0
        if isinstance(m, nn.Linear):
            o, i = m.out_features, m.in_features
            return o * i + bias * o - ((o - ro) * (i - ri) + bias * (o - ro))
        k = math.prod(m.kernel_size)
        o, i, g = m.out_channels, m.in_channels, m.groups
        depthwise = g > 1 and m.weight.shape[1] == 1
        per_in = 1 if depthwise else (i - ri) // g
        dense = o * (i // g) * k + bias * o
        return dense - ((o - ro) * per_in * k + bias * (o - ro))

    def evaluate(self, removed_pos: Mapping[tuple[str, str], int]) -> tuple[float, float]:
        """``(macs, params)`` of conv/linear layers (macs) and of the whole model (params) after removing
        ``removed_pos[site] `` positions per site."""
        sites, mods = self.graph.sites, self.graph.modules
        macs = 0.0
        for name, dense in self.layer_macs.items():
            m = mods[name]
            fo = 1 - removed_pos.get(("out", name), 0) / sites[("out", name)].size
            fi = 1.0
            if ("in", name) in sites and not (isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and
                                              m.weight.shape[1] == 1):
                fi = 1 - removed_pos.get(("in", name), 0) / sites[("in", name)].size
            macs += dense * fo * fi
        macs += self.other_macs
        params = float(self.dense_params)
        done: set[str] = set()
        for (kind, name), n in removed_pos.items():
            if not n:
                continue
            m = mods.get(name)
            site = sites[(kind, name)]
            if kind in ("out", "in") and name not in done and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                done.add(name)
                params -= self._layer_params(m, name, removed_pos)
            elif kind == "norm" and m is not None:
                params -= n * sum(1 for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None)
            elif kind == "param":
                t = self._params.get(site.info["param"])
                if t is not None:
                    params -= n * t.numel() / t.shape[site.info["dim"]]
        return macs, params


def _removed_positions(groups_by_name: Mapping[str, Group], removed: Mapping[str, Sequence[int]]
                       ) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for gname, units in removed.items():
        g = groups_by_name[gname]
        for key, per_unit in g.positions.items():
            out[key] = out.get(key, 0) + sum(len(per_unit[u]) for u in units)
    return out


# ----------------------------------------------------------------------------------------------------------------
# selection


def keep_count(size: int, ratio: float) -> int:
    """``floor(size·(1−ratio))``, robust to binary rounding (``10·(1−0.9)`` is 1, not 0)."""
    return int(math.floor(size * (1.0 - ratio) + 1e-9))


def check_round_to(round_to: Any) -> int:
    """``round_to`` as an int in [1, 65536] (the CLI's bounds), else one PrunekitError naming it."""
    return int(check_number("round_to", round_to, low=1, high=65536, integer=True))


def round_keep(n_keep: int, size: int, round_to: int) -> int:
    """``n_keep`` rounded to the nearest multiple of ``round_to`` (at least ``round_to``, at most ``size``); a group
    no wider than ``round_to`` keeps ``n_keep``."""
    if round_to <= 1 or size <= round_to:
        return n_keep
    return min(size, max(round_to, int(round(n_keep / round_to)) * round_to))


def top_units(scores: np.ndarray, n_keep: int) -> list[int]:
    """Indexes of the ``n_keep`` largest scores (ties: lower index first), in increasing order."""
    order = torch.sort(torch.as_tensor(scores), descending=True, stable=True).indices
    return sorted(order[:n_keep].tolist())


def _uniform(groups: Sequence[Group], scores: Mapping[str, np.ndarray], ratio: float,
             round_to: int, *, strict: bool = False, notes: list[str] | None = None) -> dict[str, list[int]]:
    """Each group keeps ``floor(size·(1−ratio))`` (rounded to ``round_to``) of its best units; a group that would
    keep none keeps its best one (noted), or raises with ``strict``."""
    removed = {}
    notes = notes if notes is not None else []
    for g in groups:
        n_keep = round_keep(keep_count(g.size, ratio), g.size, round_to)
        if n_keep == 0:
            best = top_units(scores[g.name], 1)
            guard_empty(g, [], best[0], strict=strict, what=f"structured pruning at ratio {ratio}", notes=notes)
            n_keep = 1
        kept = set(top_units(scores[g.name], n_keep))
        removed[g.name] = [u for u in range(g.size) if u not in kept]
    return removed


def _global_order(groups: Sequence[Group], scores: Mapping[str, np.ndarray], normalize: bool
                  ) -> list[tuple[str, int]]:
    """All units of all groups, least important first (scores divided by their group's mean if ``normalize``)."""
    items = []
    for gi, g in enumerate(groups):
        s = np.asarray(scores[g.name], dtype=np.float64)
        if normalize:
            mean = float(s.mean()) if s.size else 0.0
            s = s / mean if mean > 0 else s
        for u, v in enumerate(s.tolist()):
            items.append((v, gi, u))
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    return [(groups[gi].name, u) for _, gi, u in items]


def _global_take(groups: Sequence[Group], order: Sequence[tuple[str, int]], k: int, round_to: int,
                 max_ratio: float) -> dict[str, list[int]]:
    """Remove the first ``k`` units of ``order`` that leave every group at least one unit (and at most
    ``max_ratio`` of it removed); then round each group's kept count to a multiple of ``round_to`` (taking more of
    its least important units, or giving back its most important removed ones)."""
    size = {g.name: g.size for g in groups}
    cap = {n: min(s - 1, int(math.floor(s * max_ratio + 1e-9))) for n, s in size.items()}
    removed: dict[str, list[int]] = {g.name: [] for g in groups}
    taken = 0
    for name, u in order:
        if taken >= k:
            break
        if len(removed[name]) < cap[name]:
            removed[name].append(u)
            taken += 1
    if round_to > 1:
        per_group: dict[str, list[int]] = {g.name: [] for g in groups}
        for name, u in order:
            per_group[name].append(u)
        for name, rm in removed.items():
            if not rm:
                continue
            n_keep = round_keep(size[name] - len(rm), size[name], round_to)
            removed[name] = per_group[name][:max(0, size[name] - n_keep)]
    return {n: sorted(v) for n, v in removed.items()}


def _search(fn, lo: int, hi: int, ok) -> int:
    """Smallest k in [lo, hi] with ok(fn(k)) (fn monotone); hi if none."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(fn(mid)):
            hi = mid
        else:
            lo = mid + 1
    return lo


def prune_structured(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None, *,
                     input_size: Sequence[int] | None = None, criterion: str = "l1", ratio: float | None = None,
                     global_ranking: bool = False, target_macs: float | None = None,
                     target_params: float | None = None, round_to: int = 1, ignore: Sequence[str] = (),
                     reduction: str = "sum", normalize: bool = True, max_group_ratio: float = 0.9,
                     data: Iterable | None = None, loss_fn: Any = None, seed: int = 0, verify: bool = True,
                     simple_only: bool = False, strict_empty: bool = False,
                     tolerance: float = 1e-5) -> StructuredResult:
    """Remove channels from any traceable model for real, and prove the result exact.

    Give ``ratio`` (fraction of every group's channels, or of all channels with ``global_ranking``), or a budget
    ``target_macs`` / ``target_params`` (fraction of the model's conv/linear MACs or of its params to keep; global
    ranking). ``criterion``: l1, l2, bn, taylor (needs ``data``: a few ``(x, y)`` batches), random. ``ignore``:
    regular expressions of module paths kept whole (traced as opaque). ``round_to``: kept channels per group a
    multiple of this. ``max_group_ratio``: no group loses more than this fraction under a global ranking. A group
    that a ratio would empty keeps its strongest channel (one warning for all), or with ``strict_empty`` raises
    :class:`~prunekit.errors.EmptyLayerError` naming it.

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
        from ...errors import UnknownNameError

        raise UnknownNameError(f"unknown importance criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    if ratio is not None:
        check_range("ratio", float(ratio), 0.0, 1.0, high_open=True)
    for name, v in (("target_macs", target_macs), ("target_params", target_params)):
        if v is not None:
            check_range(name, float(v), 0.0, 1.0, low_open=True)
    check_range("max_group_ratio", float(max_group_ratio), 0.0, 1.0, high_open=True)
    round_to = check_round_to(round_to)
    graph = build_graph(model, example, ignore=ignore_paths(model, ignore) if ignore else ())
    groups = [g for g in graph.groups if g.size >= 2 and (g.simple or not simple_only)]
    if criterion == "bn":
        groups = [g for g in groups if g.norms or g.select is not None]
    if not groups:
        raise PrunekitError(f"{_model_label(model)} has no channel group that can be pruned (every channel is "
                            "fixed by the model's input/output, a mixing op, or --ignore)")
    if criterion == "taylor":
        if data is None:
            raise PrunekitError("criterion 'taylor' needs data: a few batches (CLI: --taylor-batches N)")
        dev = next(model.parameters()).device
        accumulate_gradients(model, data, loss_fn, dev)
    scores = all_scores(graph, groups, criterion, reduction=reduction, seed=seed)
    if criterion == "taylor":
        model.zero_grad(set_to_none=True)
    by_name = {g.name: g for g in graph.groups}
    info: dict[str, Any] = {"criterion": criterion, "reduction": reduction, "global": bool(global_ranking or
                                                                                            ratio is None),
                            "round_to": round_to, "groups_total": len(graph.groups),
                            "groups_prunable": len(groups)}
    cost = CostModel(graph, example)
    notes: list[str] = []
    if ratio is not None and not global_ranking:
        removed = _uniform(groups, scores, float(ratio), round_to, strict=strict_empty, notes=notes)
    else:
        order = _global_order(groups, scores, normalize)
        total_units = sum(g.size for g in groups)
        take = lambda k: _global_take(groups, order, k, round_to, float(max_group_ratio))  # noqa: E731
        if ratio is not None:
            removed = take(int(round(float(ratio) * total_units)))
        else:
            kind = "macs" if target_macs is not None else "params"
            if kind == "macs":
                cost.include_other_macs()
            target = float(target_macs if target_macs is not None else target_params)
            dense = cost.dense_macs if kind == "macs" else cost.dense_params

            def value(k: int) -> float:
                macs, params = cost.evaluate(_removed_positions(by_name, take(k)))
                return macs if kind == "macs" else params

            k = _search(value, 0, total_units, lambda v: v <= target * dense + 1e-9)
            removed = take(k)
            reached = value(k) / dense if dense else 1.0
            info.update({"target": {kind: target}, "target_reached": round(reached, 6)})
            if reached > target + 1e-9:
                raise PrunekitError(f"cannot reach --target-{kind} {target}: the most the prunable groups allow is "
                                    f"{reached:.4f} of the dense {kind} (max_group_ratio={max_group_ratio}); raise "
                                    "the target or max_group_ratio")
    keep = {}
    for g in groups:
        if removed.get(g.name):
            gone = set(removed[g.name])
            keep[g.name] = [c for u, c in enumerate(candidates(graph, g)) if u not in gone]
    res = finish(graph, groups, keep, f"structured-{criterion}", notes, info)
    res.info["prune_seconds"] = round(time.perf_counter() - t0, 4)
    if verify:
        from .verify import check_exact

        check_exact(model, res, example, tolerance=tolerance)
    return res


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
