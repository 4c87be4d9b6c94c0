"""One structured prune and its report: what ``prunekit prune --method l1-filter | slimming | slimming-mask`` does,
without the flags and the files.

:func:`prune_and_report` runs one of the methods (the papers' rules: named plans, per-stage ``ratios``, kesi
``rounds`` chained back to back, network slimming's ``percent``; or any model: ``ratio`` / ``target_macs`` /
``target_params`` / ``target_latency`` with a ``criterion``), checks the result against the unpruned model whose
consumers ignore the removed channels (``exactness``), merges the model's weight masks into slimming-mask's BN masks,
counts params / MACs / FLOPs / measured latency before and after and of the dense architecture, and (given an
``evaluate`` callback) the top-1 accuracy before, of the zeroed reference and after. The result is a
:class:`StructuredReport`; :mod:`prunekit.commands.prune_structured` only turns flags into arguments and the report into
files.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ...errors import PrunekitError, check_number
from .pruner import KINDS, StructuredResult

log = logging.getLogger(__name__)

METHODS = ("structured", "l1-filter", "slimming", "slimming-mask")
MASKED = "masked (removed channels zeroed)"


@dataclass
class StructuredReport:
    """Outcome of :func:`prune_and_report`.

    ``model``: the pruned model (slimming-mask: the full-size masked copy); ``result``: the last step's
    :class:`~prunekit.pruning.structured.pruner.StructuredResult` (its ``rows`` span all rounds); ``before`` /
    ``after``: :func:`~prunekit.pruning.structured.reports.model_cost` of the input and pruned model; ``dense``:
    params/MACs/FLOPs of the unpruned architecture; ``masks``: the masks to save with the model (slimming-mask, merged
    with the input's masks), else None; ``rounds``: one row per chained round; ``accuracy``: top-1 by label;
    ``notes``: report lines (exactness, targets, latency, accuracy); ``plan``: the JSON channel plan.
    """

    method: str
    model: nn.Module
    result: StructuredResult
    input_size: tuple[int, ...]
    before: dict[str, Any]
    after: dict[str, Any]
    dense: dict[str, Any]
    plan: dict[str, Any]
    masks: dict[str, torch.Tensor] | None = None
    rounds: list[dict[str, Any]] | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    latency_lines: list[str] = field(default_factory=list)

    @property
    def exactness(self) -> float | None:
        """Max |pruned − reference| on the example input (None where nothing was removed: slimming-mask)."""
        return self.result.info.get("max_abs_diff")

    @property
    def warnings(self) -> list[str]:
        """Layers that kept one channel instead of none."""
        return list(self.result.warnings)

    @property
    def channel_rows(self) -> list[dict[str, Any]]:
        """Per-layer ``{layer, stage, total, kept, pruned, kept_ratio}``."""
        return self.result.rows

    def compare_rows(self) -> list[dict[str, Any]]:
        """``{metric, before, after, ratio}`` for params, MACs, FLOPs and each latency."""
        from .reports import compare_rows

        return compare_rows(self.before, self.after)

    def info(self) -> dict[str, Any]:
        """The method's numbers (threshold, targets, diffs, ...) without empty entries."""
        return {k: v for k, v in self.result.info.items() if k != "equivalent_removal" or v is not None}


def prune_and_report(model: nn.Module, method: str = "l1-filter", *, input_size: Sequence[int],
                     plan: str | None = None, ratios: Sequence[float] | None = None,
                     skip: Sequence[str] | None = None, rounds: int | None = None, percent: float | None = None,
                     ratio: float | None = None, global_ranking: bool = False, target_macs: float | None = None,
                     target_params: float | None = None, target_latency: float | str | None = None,
                     criterion: str | None = None, reduction: str = "sum", round_to: int = 1,
                     ignore: Sequence[str] = (), max_group_ratio: float = 0.9, data: Iterable | None = None,
                     seed: int = 0, strict_empty: bool = False, masks: Mapping[str, torch.Tensor] | None = None,
                     latency_runtime: str | None = None, latency_batch: int | None = None,
                     latency_threads: int | None = None, latency_batch_sizes: Sequence[int] = (1,),
                     latency_repeats: int = 10, device: str | torch.device = "cpu",
                     evaluate: Callable[[nn.Module], float] | None = None,
                     source: str = "the model", kinds: Sequence[str] | None = None, depth: int = 0,
                     head_dims: bool = False) -> StructuredReport:
    """Prune ``model`` (left unchanged) with a structured ``method``; measure and verify it.

    ``method``: ``structured`` (any model: ``ratio`` / ``target_*``, with ``kinds`` / ``depth`` / ``head_dims`` as
    :func:`~.pruner.prune_structured` takes them), ``l1-filter`` (``plan`` / ``ratios`` + ``skip`` / ``rounds``, ``criterion`` l1 or random; or any model
    with ``ratio`` / ``target_macs`` / ``target_params`` / ``target_latency`` and ``criterion`` l1, l2, bn, taylor
    (``data``: a few ``(x, y)`` batches), random), ``slimming`` or ``slimming-mask`` (``percent``). ``masks``: weight
    masks the model carries (only slimming-mask keeps them). ``evaluate(model) -> top-1`` adds the accuracies.

    Example::

        rep = prune_and_report(model, "l1-filter", input_size=(3, 32, 32), ratios=[0.3], latency_batch_sizes=[1])
        rep.model, rep.after["params"], rep.exactness
    """
    if method not in METHODS:
        raise PrunekitError(f"structured method must be one of {', '.join(METHODS)}, got {method!r}")
    size = tuple(check_number("input_size", s, low=1, integer=True) for s in input_size)
    batch_sizes = [check_number("latency_batch_sizes", b, low=1, integer=True) for b in latency_batch_sizes]
    repeats = check_number("latency_repeats", latency_repeats, low=1, integer=True)
    threads = None if latency_threads is None else check_number("latency_threads", latency_threads, low=1,
                                                                integer=True)
    if masks and method != "slimming-mask":
        raise PrunekitError(f"{source} carries weight masks; {method} removes channels and cannot keep them "
                            "(finetune it first or prune the dense model)")
    model = model.eval()
    res, new_masks, round_rows = _run_method(
        model, method, size, plan=plan, ratios=ratios, skip=skip, rounds=rounds, percent=percent, ratio=ratio,
        global_ranking=global_ranking, target_macs=target_macs, target_params=target_params,
        target_latency=target_latency, criterion=criterion, reduction=reduction, round_to=round_to,
        ignore=ignore, max_group_ratio=max_group_ratio, data=data, seed=seed, strict_empty=strict_empty,
        latency_runtime=latency_runtime, latency_batch=latency_batch, latency_threads=threads, device=device,
        extra={"kinds": tuple(kinds) if kinds else pruner_kinds(), "depth": depth, "head_dims": head_dims})
    pruned = res.model.eval()
    merged = merge_masks(masks, new_masks) if new_masks is not None else None
    from .reports import model_cost

    before = model_cost(model, size, batch_sizes, repeats=repeats, threads=threads, device=device)
    after = model_cost(pruned, size, batch_sizes, repeats=repeats, threads=threads, device=device)
    if method == "slimming-mask":
        res.info["equivalent_removal"] = equivalent_removal(model, float(percent), res, size, round_to)
    dense = dense_cost(model, size)
    acc: dict[str, float] = {}
    if evaluate is not None:
        from .verify import zeroed_reference

        ref = res.model if method == "slimming-mask" else zeroed_reference(model, res.step_plan)
        for label, m in (("before", model), (MASKED, ref), ("after", pruned)):
            acc[label] = float(evaluate(m))
    lat_lines = latency_lines(res.info.get("latency_target"))
    report = StructuredReport(method=method, model=pruned, result=res, input_size=size, before=before, after=after,
                              dense=dense, plan=res.plan if res.plan else _mask_plan(res), masks=merged,
                              rounds=round_rows, accuracy=acc, latency_lines=lat_lines)
    report.notes = _notes(report)
    log.debug("%s: params %s -> %s, max |pruned - reference| %s", method, before["params"], after["params"],
             report.exactness)
    return report


def _run_method(model: nn.Module, method: str, size: tuple[int, ...], *, plan, ratios, skip, rounds, percent,
                ratio, global_ranking, target_macs, target_params, target_latency, criterion, reduction, round_to,
                ignore, max_group_ratio, data, seed, strict_empty, latency_runtime, latency_batch, latency_threads,
                device, extra: Mapping[str, Any]) -> tuple[StructuredResult, dict[str, torch.Tensor] | None,
                                                           list[dict[str, Any]] | None]:
    """Run the method; return ``(result, masks, round rows)``."""
    from . import l1_filter, pruner, slimming

    if target_latency is not None:
        from .latency_target import prune_to_latency

        res = prune_to_latency(
            model, input_size=size, target=target_latency, criterion=criterion or "l1",
            batch_size=latency_batch or 1, runtime=latency_runtime or "eager", threads=latency_threads,
            device=device, ignore=ignore, round_to=round_to, max_group_ratio=max_group_ratio, reduction=reduction, seed=seed)
        return res, None, None
    if any(v is not None for v in (ratio, target_macs, target_params)):
        res = pruner.prune_structured(
            model, input_size=size, criterion=criterion or "l1", ratio=ratio, global_ranking=global_ranking,
            target_macs=target_macs, target_params=target_params, round_to=round_to, ignore=ignore,
            reduction=reduction, max_group_ratio=max_group_ratio, data=data, seed=seed, strict_empty=strict_empty,
            **extra)
        return res, None, None
    if method == "structured":
        raise PrunekitError("--method structured needs --ratio R, --target-macs F, --target-params F or "
                            "--target-latency F")
    if method == "l1-filter":
        crit = criterion or "l1"
        if rounds:
            results = l1_filter.prune_iterative(model, rounds, ratios=ratios, skip=skip, strict_empty=strict_empty,
                                                input_size=size, criterion=crit, seed=seed)
            return chain_rounds(results), None, round_rows(results)
        return l1_filter.prune_l1_filter(model, plan=plan, ratios=ratios, skip=skip or (), strict_empty=strict_empty,
                                         input_size=size, criterion=crit, seed=seed), None, None
    if percent is None:
        raise PrunekitError(f"--method {method} needs --percent P (e.g. 0.4)")
    if method == "slimming":
        return slimming.prune_slimming(model, percent, strict_empty=strict_empty, input_size=size,
                                       round_to=round_to), None, None
    _, masks, res = slimming.prune_slimming_mask(model, percent, input_size=size, round_to=round_to)
    return res, masks, None


def round_rows(results: Sequence[StructuredResult]) -> list[dict[str, Any]]:
    """One row per chained round: params, cfg and exactness of the model after it."""
    from ...metrics import count_params

    return [{"round": i + 1, "params": count_params(r.model), "cfg": getattr(r.model, "prunekit_cfg", None),
             "max_abs_diff": r.info.get("max_abs_diff")} for i, r in enumerate(results)]


def chain_rounds(results: Sequence[StructuredResult]) -> StructuredResult:
    """The last round's result with per-layer rows over all rounds (total of round 1, kept after the last) and the
    worst exactness of any round."""
    res = results[-1]
    rows = []
    for a, b in zip(results[0].rows, res.rows):
        rows.append({**a, "kept": b["kept"], "pruned": a["total"] - b["kept"],
                     "kept_ratio": round(b["kept"] / a["total"], 4) if a["total"] else 0.0})
    res.rows = rows
    res.info["max_abs_diff"] = max(r.info.get("max_abs_diff", 0.0) for r in results)
    return res


def merge_masks(old: Mapping[str, torch.Tensor] | None, new: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``old`` and ``new`` masks together: a weight is kept only where both keep it (bool tensors)."""
    merged = {k: v.to(torch.bool) for k, v in (old or {}).items()}
    for k, v in new.items():
        v = v.to(torch.bool)
        merged[k] = merged[k] & v if k in merged else v
    return merged


def dense_of(model: nn.Module) -> nn.Module:
    """The unpruned architecture of ``model`` (zoo name or factory), freshly built; a plain module that no prune
    has touched is its own dense architecture."""
    from ...models import create_model

    fac = getattr(model, "prunekit_factory", None)
    if fac is None and getattr(model, "prunekit_name", None) is None:
        if getattr(model, "prunekit_plan", None):
            raise PrunekitError("cannot rebuild the dense architecture of a pruned plain module (no zoo name or "
                                "factory): prune the unpruned model")
        return model
    if fac is not None:
        from ...factory import build_model

        return build_model(fac["target"], fac.get("kwargs"), input_size=getattr(model, "prunekit_input_size", None))
    plan = getattr(model, "prunekit_plan", None) or {}
    return create_model(model.prunekit_name, num_classes=model.num_classes, in_channels=model.in_channels,
                        cfg=plan.get("base_cfg") if plan.get("format") == "prunekit-plan/2" else None,
                        **(getattr(model, "prunekit_options", None) or {}))


def dense_cost(model: nn.Module, size: Sequence[int]) -> dict[str, Any]:
    """``dense_params``, ``dense_macs``, ``dense_flops`` of the unpruned architecture of ``model``."""
    from ...metrics import count_flops, count_params

    dense = dense_of(model)
    fl = count_flops(dense, (1, *size), convention="macs")
    return {"dense_params": count_params(dense), "dense_macs": fl.macs, "dense_flops": fl.flops}


def _mask_plan(res: StructuredResult) -> dict[str, Any]:
    """plan.json for slimming-mask: the channels each BN keeps (nothing is removed)."""
    from .pruner import build_plan, removed_units

    graph = res.graph
    by_name = {g.name: g for g in graph.groups}
    removed = {n: removed_units(graph, by_name[n], kept) for n, kept in res.keep.items()}
    plan = build_plan(graph, removed, "slimming-mask", res.keep)
    plan["note"] = "mask implementation: the saved model is full size; this plan is what slimming would remove"
    return plan


def equivalent_removal(model: nn.Module, percent: float, res: StructuredResult, size: Sequence[int],
                       round_to: int = 1) -> dict[str, Any] | None:
    """Params/MACs of the physically pruned model a mask run is equivalent to (None if a layer is empty)."""
    from ...metrics import count_flops, count_params
    from .slimming import prune_slimming

    if res.info.get("empty_layers"):
        return None
    small = prune_slimming(model, percent, input_size=size, round_to=round_to).model
    fl = count_flops(small, (1, *size), convention="macs")
    return {"params": count_params(small), "macs": fl.macs, "flops": fl.flops,
            "cfg": getattr(small, "prunekit_cfg", None)}


def latency_lines(lt: Mapping[str, Any] | None) -> list[str]:
    """Report lines of a latency-target prune: target, measured (twice), MACs and params before/after."""
    if not lt:
        return []
    m = lt["measured_ms"]
    met = "met" if lt["target_met"] else ("missed, within 5%" if lt["within_5pct"] else "MISSED by more than 5%")
    return [f"target latency: {lt['target_ms']:.4g} ms = {lt['target_fraction']:.3f} of the dense {lt['dense_ms']:.4g} "
            f"ms ({lt['runtime']}, batch {lt['batch_size']}, {lt['threads']} thread{'' if lt['threads'] == 1 else 's'}, "
            f"{lt['device']})",
            f"measured latency: {m[0]:.4g} ms and {m[1]:.4g} ms (measured/target {lt['measured_over_target'][0]:.3f}, "
            f"{lt['measured_over_target'][1]:.3f}: {met}); predicted {lt['predicted_ms']:.4g} ms; "
            f"{len(lt['iterations'])} measured candidates",
            f"MACs {lt['macs_before']:.4g} -> {lt['macs_after']:.4g}; params {lt['params_before']:,} -> "
            f"{lt['params_after']:,}"]


def _notes(rep: StructuredReport) -> list[str]:
    notes = list(rep.result.warnings)
    if rep.exactness is not None:
        notes.append(f"exactness: max |pruned - reference| on random input = {rep.exactness:.3g} (reference: the "
                     "unpruned model whose consumers ignore the removed channels)")
    info = rep.result.info
    if "target_reached" in info:
        notes.append(f"target {info['target']}: reached {info['target_reached']} (conv/linear cost model)")
    notes.extend(rep.latency_lines)
    notes.extend(f"top-1 {k}: {v:.2f}%" for k, v in rep.accuracy.items())
    return notes


def pruner_kinds() -> tuple[str, ...]:
    """Every kind of group (the default of :func:`~.pruner.prune_structured`)."""
    return KINDS
