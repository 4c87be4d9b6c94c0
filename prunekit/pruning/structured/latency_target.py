"""Structured pruning to a *measured* latency target (NetAdapt / HALP style), for any traceable model.

:func:`prune_to_latency` removes channels, on the groups of the dependency graph (:mod:`.graph`), until the pruned
model's latency measured on the chosen runtime, device, thread count and batch size meets ``target`` (a fraction
of the dense model's measured latency, or milliseconds: ``"12ms"``). The algorithm:

1. **Lookup table.** Every conv/linear layer of the graph (its ``out`` sites) is timed *alone*, on its real input
   shape at ``batch_size``, at input/output widths of 1, 0.75, 0.5 and 0.25 of its channels (only along the
   dimensions some group can prune; depthwise convs along their one tied width). Identical layer configurations
   are timed once. Each layer's table is made non-decreasing in both widths (timing noise must not promise a
   speed-up for keeping more channels) and read by bilinear interpolation in channel counts (linear
   extrapolation below the smallest width). The predicted latency of a pruned model is
   ``dense_measured − Σ LUT(dense widths) + Σ LUT(pruned widths)``: everything the table does not cover (norms,
   activations, adds, framework overhead, per-call overhead of timing a layer alone) is a constant taken from the
   measured dense model. For a cost that is a per-layer bilinear function of the widths plus constants (MACs plus
   per-layer and per-call overheads) the prediction is exact.
2. **Ranking.** Units (channels) are ranked globally by importance / latency saved: the unit's importance
   (:func:`.importance.all_scores`, normalised by its group's mean) divided by its group's latency share per unit
   (predicted saving of removing half of that group alone, per unit removed). The ranking and the removal of the
   first ``k`` units under ``max_group_ratio`` / ``round_to`` are :mod:`.pruner`'s ``_global_order`` and
   ``_global_take``.
3. **Greedy prediction.** The smallest ``k`` whose predicted latency is ≤ target (removing units in rank order,
   i.e. a binary search over the monotone prefix length).
4. **Correction on the real measurement.** The candidate is built for real and measured. For a fraction target
   it is timed interleaved with the dense model, pass by pass (:func:`measure_pair`, ``repeats × rounds``
   passes each), and judged by the median of the per-pass ratios (both see the same load, so a shared machine
   whose speed drifts does not move the target); a time target times the candidate alone (median).
   After each measurement the uncovered part of the prediction is refitted by least squares on all measurements
   as ``fixed + a · (kept fraction of the conv/linear output activations)`` with ``a ≥ 0`` (norms, activations
   and adds shrink with the channels, framework overhead does not). A bracket ``(largest measured-infeasible k,
   smallest measured-feasible k)`` is kept; the next candidate is the smallest ``k`` that the refitted
   prediction, plus its error at the two bracket ends interpolated linearly in ``k`` (regula falsi on the
   measurements with the table as the shape), accepts, clipped strictly into the bracket; after two measurements
   on the same side it bisects the bracket (or, with no feasible candidate yet, at least doubles ``k``). It
   stops when the bracket closes (neighbouring ``k``: the least pruning that meets the target), when a feasible
   measurement is within ``rel_tol`` below the target, or after ``max_iters`` measurements; the answer is the
   smallest measured-feasible ``k``. Candidates with the same per-group channel counts are measured once.
5. **Result.** The chosen model is measured twice more (both reported, in the terms of step 4 and raw); if the
   median of its three measurements is above the target (the search's was a lucky one), the next more pruned
   measured-feasible candidate is checked instead (at most ``fallbacks`` times). :func:`.verify.check_exact`
   proves the removal exact.

``latency_fn(module, input_shape) -> ms`` replaces the runtime (used for the whole model and for single layers;
``input_shape`` includes the batch): tests give a deterministic cost model. Runtimes
(:mod:`prunekit.metrics.runtimes`): ``eager`` (default); ``compile`` (``torch.compile`` of every whole-model
candidate; the layer table stays eager, the correction step absorbs the difference; slow: one compilation per
candidate); ``onnxruntime`` (every layer of the table and every candidate exported to ONNX at the batch size and
timed in an ONNX Runtime session: CPU, or the CUDA execution provider on a CUDA ``device``; needs
``pip install prunekit[onnx]``). Timing, the table and its prediction are in :mod:`.latency_lut`. On ONNX Runtime
every whole-model candidate is measured as ``prunekit.export`` ships it (:func:`.fold.as_deployed`: pruned widths
zero-padded to multiples of 8, channel selections folded), so the target holds for the exported file; the layer
table times layers at their pruned widths and the correction step absorbs the difference (``round_to=8`` makes
the two agree).
"""
from __future__ import annotations

import functools
import math
import re
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ...errors import PrunekitError, UnknownNameError, check_range
from .graph import build_graph, ignore_paths
from .importance import CRITERIA, all_scores
from .fold import as_deployed
from .latency_lut import (RUNTIMES, WIDTHS, LatencyFn, LatencyTable, _default_latency_fn, _fn_pair,  # noqa: F401
                          measure_pair)
from .cost import removed_positions as _removed_positions
from .pruner import StructuredResult, _example, _model_label, candidates, finish
from .selection import check_round_to
from .selection import global_order as _global_order
from .selection import global_take as _global_take
from .selection import search as _search


_TARGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|us|µs)?\s*$")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_TARGET_HELP = ("a fraction of the dense model's measured latency in (0, 1) (e.g. 0.6) or a time with a unit "
                "(e.g. 12ms, 0.5s, 800us)")


def parse_latency_target(value: Any) -> tuple[str, float]:
    """``("fraction", f)`` for a number or unit-less string in (0, 1); ``("ms", t)`` for ``"12ms"`` / ``"0.5s"`` /
    ``"800us"``; a :class:`PrunekitError` otherwise."""
    if isinstance(value, bool):
        raise PrunekitError(f"target latency must be {_TARGET_HELP}, got {value!r}")
    if isinstance(value, (int, float)):
        check_range("target latency (fraction of the dense latency)", float(value), 0.0, 1.0,
                    low_open=True, high_open=True)
        return "fraction", float(value)
    if isinstance(value, str):
        m = _TARGET_RE.match(value.lower())
        if m is None:
            raise PrunekitError(f"target latency must be {_TARGET_HELP}, got {value!r}")
        num, unit = float(m.group(1)), m.group(2)
        if unit is None:
            return parse_latency_target(num)
        ms = num * _UNIT_MS[unit]
        if not (ms > 0 and math.isfinite(ms)):
            raise PrunekitError(f"target latency must be a positive time, got {value!r}")
        return "ms", ms
    raise PrunekitError(f"target latency must be {_TARGET_HELP}, got {value!r}")


# ----------------------------------------------------------------------------------------------------------------
# the search


def _macs_params(model: nn.Module, input_size: Sequence[int]) -> tuple[float, int]:
    from ...metrics import count_flops, count_params

    return float(count_flops(model, (1, *input_size), convention="macs").macs), int(count_params(model))


def prune_to_latency(model: nn.Module, input_size: Sequence[int] | None = None, target: Any = None, *,
                     criterion: str = "l1", batch_size: int = 1, runtime: str = "eager", threads: int | None = None,
                     ignore: Sequence[str] = (), round_to: int = 1, max_group_ratio: float = 0.9,
                     latency_fn: LatencyFn | None = None, seed: int = 0, device: Any = None, repeats: int = 10,
                     rounds: int = 2, warmup: int = 3, max_iters: int = 8, rel_tol: float = 0.01,
                     fallbacks: int = 2, reduction: str = "sum",
                     verify: bool = True, tolerance: float = 1e-5) -> StructuredResult:
    """Remove channels from any traceable model until its *measured* latency meets ``target``.

    ``target``: a fraction of the dense model's measured latency (``0.6``) or a time with a unit (``"12ms"``).
    Latency is the median of ``repeats`` timed forward passes of a ``(batch_size, *input_size)`` input on
    ``runtime`` (``eager`` / ``compile`` / ``onnxruntime``), ``device`` (default: the model's) with ``threads``
    threads, or ``latency_fn(module, input_shape) -> ms`` when given (used for the whole model and for single layers). The
    runtime's measurements take ``repeats × rounds`` passes. For a fraction target every candidate is timed
    interleaved with the dense model, pass by pass (:func:`measure_pair`), and judged by the median per-pass
    ratio, so a machine whose speed drifts (shared) does not move the target; ``measured_ms`` in the result is
    that ratio times the dense latency (``measured_raw_ms``: the candidate's own median).
    ``criterion``: l1, l2, bn, random. ``ignore``, ``round_to``, ``max_group_ratio``: as in
    :func:`.pruner.prune_structured`. ``max_iters``: real measurements in the correction step; ``rel_tol``: stop
    when a feasible measurement is this close below the target; ``fallbacks``: how many more pruned feasible
    candidates step 5 may fall back to. The algorithm is in the module docstring.

    ``result.info["latency_target"]`` holds the target (ms and fraction), the dense, predicted and (twice)
    measured latency, MACs/params before and after and every iteration. A target that removing the most
    ``max_group_ratio`` allows cannot reach is a :class:`PrunekitError` naming the best reachable latency.
    """
    t0 = time.perf_counter()
    if target is None:
        raise PrunekitError(f"prune_to_latency needs target: {_TARGET_HELP}")
    kind, value = parse_latency_target(target)
    if criterion not in CRITERIA:
        raise UnknownNameError(f"unknown importance criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    if criterion == "taylor":
        raise PrunekitError("criterion 'taylor' needs training batches; the latency target takes l1, l2, bn or random")
    if runtime not in RUNTIMES:
        raise UnknownNameError(f"unknown latency runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    for name, v, low in (("batch_size", batch_size, 1), ("repeats", repeats, 1), ("rounds", rounds, 1),
                         ("warmup", warmup, 0),
                         ("max_iters", max_iters, 1), ("fallbacks", fallbacks, 0)):
        if isinstance(v, bool) or int(v) != v or v < low:
            raise PrunekitError(f"{name} must be an integer >= {low}, got {v!r}")
    if threads is not None and (int(threads) != threads or threads < 1):
        raise PrunekitError(f"threads must be an integer >= 1, got {threads!r}")
    round_to = check_round_to(round_to)
    check_range("max_group_ratio", float(max_group_ratio), 0.0, 1.0, high_open=True)
    check_range("rel_tol", float(rel_tol), 0.0, 1.0, high_open=True)
    if latency_fn is not None:
        model_fn = layer_fn = latency_fn
        pair_fn = _fn_pair(latency_fn)
    else:
        model_fn, layer_fn, pair_fn = _default_latency_fn(runtime, device, threads, int(repeats) * int(rounds),
                                                          int(warmup))

    example = _example(model, None, input_size)
    input_size = tuple(int(s) for s in example[0].shape[1:])
    shape = (int(batch_size), *input_size)
    graph = build_graph(model, example, ignore=ignore_paths(model, ignore) if ignore else ())
    groups = [g for g in graph.groups if g.size >= 2]
    if criterion == "bn":
        groups = [g for g in groups if g.norms or g.select is not None]
    if not groups:
        raise PrunekitError(f"{_model_label(model)} has no channel group that can be pruned (every channel is "
                            "fixed by the model's input/output, a mixing op, or --ignore)")
    by_name = {g.name: g for g in graph.groups}

    deployed_shape = latency_fn is None and runtime == "onnxruntime"

    def measure(cand: nn.Module) -> tuple[float, float | None, float]:
        """``(candidate ms, dense ms alongside or None, candidate in the terms of the target)``: a fraction target
        times dense and candidate interleaved (the candidate is ``ratio × dense_ms``), a time target the candidate
        alone."""
        if deployed_shape:
            cand = as_deployed(cand, runtime, example[0])  # padded and folded as the export ships it
        if kind == "fraction":
            d, c, ratio = pair_fn(model, cand, shape)
            return c, d, ratio * dense_ms
        c = float(model_fn(cand, shape))
        return c, None, c

    dense_ms = float(model_fn(model, shape))

    target_ms = value * dense_ms if kind == "fraction" else value
    if target_ms >= dense_ms:
        raise PrunekitError(f"the dense model already runs in {dense_ms:.4g} ms <= the target {target_ms:.4g} ms "
                            f"({runtime}, batch {batch_size}); nothing to prune")
    lut = LatencyTable(graph, layer_fn, shape)
    lut.calibrate(dense_ms)

    # step 2: importance / latency saved
    scores = all_scores(graph, groups, criterion, reduction=reduction, seed=seed)
    dense_pred = lut.predict({})
    gains = {}
    for g in groups:
        n = max(1, min(g.size - 1, g.size // 2))
        gains[g.name] = max(0.0, dense_pred - lut.predict(_removed_positions(by_name, {g.name: list(range(n))}))) / n
    positive = [v for v in gains.values() if v > 0]
    floor = 1e-3 * (sum(positive) / len(positive)) if positive else 1.0
    ranked = {}
    for g in groups:
        s = np.asarray(scores[g.name], dtype=np.float64)
        mean = float(s.mean()) if s.size else 0.0
        s = s / mean if mean > 0 else s
        ranked[g.name] = s / max(gains[g.name], floor)
    order = _global_order(groups, ranked, normalize=False)
    k_max = sum(g.size for g in groups)

    @functools.lru_cache(maxsize=64)
    def take(k: int) -> dict[str, list[int]]:
        return _global_take(groups, order, k, round_to, float(max_group_ratio))

    def predict(k: int) -> float:
        return lut.predict(_removed_positions(by_name, take(k)))

    def signature(k: int) -> tuple[int, ...]:
        return tuple(len(v) for v in take(k).values())

    def build(k: int) -> StructuredResult:
        removed = take(k)
        keep = {g.name: [c for u, c in enumerate(candidates(graph, g)) if u not in set(removed[g.name])]
                for g in groups if removed.get(g.name)}
        return finish(graph, groups, keep, f"structured-latency-{criterion}", [], {})

    # step 3: greedy on the prediction
    k_pred = _search(predict, 0, k_max, lambda v: v <= target_ms)
    predicted_at_k_pred = predict(k_pred)

    # step 4: correction on the measurement
    measured: dict[tuple[int, ...], float] = {}
    by_k: dict[int, float] = {0: dense_ms}
    points: list[tuple[float, float, float]] = []
    iterations: list[dict[str, Any]] = []
    best: tuple[int, StructuredResult, float] | None = None
    lo, hi = 0, None  # largest measured-infeasible k (the dense model), smallest measured-feasible k
    k, sides = k_pred, []
    while True:
        sig = signature(k)
        if sig in measured:
            m = measured[sig]
            by_k[k] = m
        else:
            cand = build(k)
            raw, dense_now, m = measure(cand.model)
            measured[sig] = by_k[k] = m
            pred_k = predict(k)
            points.append((*lut.parts(_removed_positions(by_name, take(k))), m))
            iterations.append({"k": k, "removed_channels": sum(sig), "predicted_ms": round(pred_k, 6),
                               "measured_ms": round(m, 6), "raw_ms": round(raw, 6),
                               "dense_alongside_ms": None if dense_now is None else round(dense_now, 6),
                               "feasible": m <= target_ms})
            sides.append(m <= target_ms)
            if m <= target_ms and (best is None or k < best[0]):
                best = (k, cand, m)
            del cand
        if m <= target_ms:
            hi = k if hi is None else min(hi, k)
        else:
            lo = max(lo, k)
        if hi is None and k >= k_max:
            raise PrunekitError(
                f"cannot reach the target latency {target_ms:.4g} ms ({target_ms / dense_ms:.3f} of the dense "
                f"{dense_ms:.4g} ms; {runtime}, batch {batch_size}): removing the most the prunable groups allow "
                f"(max_group_ratio={max_group_ratio}) measures {m:.4g} ms ({m / dense_ms:.3f} of dense); raise the "
                "target or max_group_ratio")
        if hi is not None and (hi - lo <= 1 or (target_ms - measured[signature(hi)]) <= rel_tol * target_ms):
            break
        if len(iterations) >= max_iters:
            if hi is not None:
                break
            k = k_max  # out of tries without a feasible candidate: settle reachability
            continue
        lut.fit(points)
        r_lo = by_k[lo] - predict(lo)
        r_hi = by_k[hi] - predict(hi) if hi is not None else r_lo

        def corrected(j: int) -> float:  # the refit prediction + its error at the bracket ends, interpolated
            t = (j - lo) / (hi - lo) if hi is not None else 0.0
            return predict(j) + (1 - t) * r_lo + t * r_hi

        top = hi - 1 if hi is not None else k_max
        guess = min(max(_search(corrected, lo + 1, top, lambda v: v <= target_ms), lo + 1), top)
        if len(sides) >= 2 and sides[-1] == sides[-2]:  # two steps on the same side: the bracket must shrink
            guess = (lo + hi) // 2 if hi is not None else max(guess, min(k_max, 2 * lo))
        if signature(guess) in measured:
            guess = (lo + hi) // 2 if hi is not None else lo + max(1, (k_max - lo) // 2)  # bisection
            if signature(guess) in measured:
                if hi is not None:
                    break
                guess = k_max
        k = guess
    assert best is not None and hi is not None

    # step 5: measure twice; a candidate whose re-measurements (with the search's) have a median above the target
    # was a lucky measurement: fall back to the next more pruned feasible candidate (at most ``fallbacks``)
    feasible, seen = [], set()
    for kk in sorted(kk for kk, mm in by_k.items() if kk > 0 and mm <= target_ms):
        if signature(kk) not in seen:
            seen.add(signature(kk))
            feasible.append(kk)
    checks: list[dict[str, Any]] = []
    for i, k_final in enumerate(feasible[:1 + int(fallbacks)]):
        res = best[1] if k_final == best[0] else build(k_final)
        finals = [measure(res.model) for _ in range(2)]
        m1, m2 = (e for _, _, e in finals)
        searched_ms = by_k[k_final]
        checks.append({"k": k_final, "measured_ms": [round(searched_ms, 6), round(m1, 6), round(m2, 6)]})
        if sorted((searched_ms, m1, m2))[1] <= target_ms or i == min(len(feasible), 1 + int(fallbacks)) - 1:
            break

    macs0, params0 = _macs_params(model, input_size)
    macs1, params1 = _macs_params(res.model, input_size)
    info = {
        "runtime": runtime if latency_fn is None else "latency_fn", "batch_size": int(batch_size),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": str(device if device is not None else next(model.parameters()).device),
        "target_ms": round(target_ms, 6), "target_fraction": round(target_ms / dense_ms, 6),
        "target_given": {kind: value}, "dense_ms": round(dense_ms, 6),
        "predicted_ms": round(predict(k_final), 6), "greedy_predicted_ms": round(predicted_at_k_pred, 6),
        "search_measured_ms": round(searched_ms, 6), "measured_ms": [round(m1, 6), round(m2, 6)],
        "measured_raw_ms": [round(c, 6) for c, _, _ in finals],
        "dense_alongside_ms": [None if d is None else round(d, 6) for _, d, _ in finals],
        "measured_fraction": [round(m1 / dense_ms, 6), round(m2 / dense_ms, 6)],
        "measured_over_target": [round(m1 / target_ms, 6), round(m2 / target_ms, 6)],
        "target_met": max(m1, m2) <= target_ms, "within_5pct": max(m1, m2) <= 1.05 * target_ms,
        "macs_before": macs0, "macs_after": macs1, "params_before": params0, "params_after": params1,
        "removed_channels": sum(signature(k_final)), "units_total": k_max, "k_greedy": k_pred, "k": k_final,
        "iterations": iterations, "final_checks": checks, "lut_layers": len(lut.tables), "lut_timings": lut.timed,
        "lut_seconds": round(lut.seconds, 3),
        "uncovered_ms": {"fixed": round(lut.fixed_ms, 6), "per_activation": round(lut.act_ms, 6)},
    }
    res.info.update({"criterion": criterion, "reduction": reduction, "global": True, "round_to": round_to,
                     "groups_total": len(graph.groups), "groups_prunable": len(groups), "latency_target": info})
    res.info["prune_seconds"] = round(time.perf_counter() - t0, 4)
    if verify:
        from .verify import check_exact

        check_exact(model, res, example, tolerance=tolerance)
    return res


__all__ = ["prune_to_latency", "parse_latency_target", "LatencyTable", "RUNTIMES"]
