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
``input_shape`` includes the batch): tests give a deterministic cost model. Runtimes: ``eager`` (default);
``compile`` (``torch.compile`` of every whole-model candidate; the layer table stays eager, the correction step
absorbs the difference; slow: one compilation per candidate). ``onnxruntime`` is not supported yet.
"""
from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ...errors import PrunekitError, UnknownNameError, check_range
from .graph import DependencyGraph, build_graph, ignore_paths
from .importance import CRITERIA, all_scores
from .pruner import (StructuredResult, _example, _global_order, _global_take, _model_label, _removed_positions,
                     _search, candidates, finish)

RUNTIMES = ("eager", "compile", "onnxruntime")
WIDTHS = (1.0, 0.75, 0.5, 0.25)
LatencyFn = Callable[[nn.Module, tuple[int, ...]], float]

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
# timing


PairFn = Callable[[nn.Module, nn.Module, tuple[int, ...]], tuple[float, float, float]]


def measure_pair(a: nn.Module, b: nn.Module, input_shape: Sequence[int], *, repeats: int = 20, warmup: int = 3,
                 device: Any = None, threads: int | None = None,
                 wrap: Callable[[nn.Module], Any] | None = None) -> tuple[float, float, float]:
    """Time ``a`` and ``b`` pass by pass, alternately (the order alternating too), on one random input of
    ``input_shape`` (batch included); return ``(median ms of a, median ms of b, median of the per-pass ratios
    b/a)``. On a shared machine both see the same load, so the ratio is far steadier than two separate
    measurements. Eval mode and ``torch.inference_mode``; ``threads`` and ``device`` as in
    :func:`prunekit.metrics.measure_latency`; ``wrap`` (e.g. ``torch.compile``) is applied to both models."""
    import statistics

    from ...metrics._common import eval_mode, model_dtype
    from ...metrics.latency import _num_threads, _on_device, _resolve_device, _sync

    dev = _resolve_device(device, a)
    ta: list[float] = []
    tb: list[float] = []
    with _num_threads(threads), _on_device(a, dev), _on_device(b, dev), eval_mode(a), eval_mode(b), \
            torch.inference_mode():
        x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0)).to(dev, model_dtype(a))
        fa, fb = (wrap(a), wrap(b)) if wrap is not None else (a, b)
        for _ in range(int(warmup)):
            fa(x)
            fb(x)
        _sync(dev)
        for i in range(int(repeats)):
            for f, out in (((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta))):
                start = time.perf_counter()
                f(x)
                _sync(dev)
                out.append((time.perf_counter() - start) * 1000.0)
    ratio = statistics.median(y / x if x > 0 else float("inf") for x, y in zip(ta, tb))
    return float(statistics.median(ta)), float(statistics.median(tb)), float(ratio)


def _fn_pair(fn: LatencyFn) -> PairFn:
    def pair(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> tuple[float, float, float]:
        ma, mb = float(fn(a, shape)), float(fn(b, shape))
        return ma, mb, mb / ma if ma > 0 else float("inf")

    return pair


def _default_latency_fn(runtime: str, device: Any, threads: int | None, repeats: int, warmup: int
                        ) -> tuple[LatencyFn, LatencyFn, PairFn]:
    """``(whole-model fn, single-layer fn, interleaved pair fn)`` for ``runtime``."""
    from ...metrics import measure_latency

    def eager(m: nn.Module, shape: tuple[int, ...], reps: int = repeats, warm: int = warmup) -> float:
        return measure_latency(m, shape[1:], batch_size=shape[0], warmup=warm, repeats=reps, device=device,
                               threads=threads).median_ms

    def layer(m: nn.Module, shape: tuple[int, ...]) -> float:
        return eager(m, shape, repeats, max(1, warmup))

    def pair(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> tuple[float, float, float]:
        return measure_pair(a, b, shape, repeats=repeats, warmup=warmup, device=device, threads=threads)

    if runtime == "eager":
        return eager, layer, pair
    if runtime == "compile":
        def _compile(m: nn.Module) -> Any:
            return torch.compile(m, dynamic=False)

        def guarded(f: Callable[[], Any]) -> Any:
            import torch._dynamo

            torch._dynamo.reset()  # every candidate is a new module: do not run into the recompilation limit
            try:
                return f()
            except PrunekitError:
                raise
            except Exception as e:  # noqa: BLE001  (inductor needs a working C++ toolchain)
                first = str(e).splitlines()[0] if str(e) else ""
                raise PrunekitError(f"--latency-runtime compile failed on this machine: {type(e).__name__}: "
                                    f"{first}") from e

        def compiled(m: nn.Module, shape: tuple[int, ...]) -> float:
            was = m.training
            m.eval()
            try:
                return guarded(lambda: eager(_compile(m), shape, repeats, max(2, warmup)))
            finally:
                m.train(was)

        def compiled_pair(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> tuple[float, float, float]:
            return guarded(lambda: measure_pair(a, b, shape, repeats=repeats, warmup=max(2, warmup), device=device,
                                                threads=threads, wrap=_compile))

        return compiled, layer, compiled_pair
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise PrunekitError("--latency-runtime onnxruntime needs the onnxruntime package, which is not "
                            "installed; use eager or compile") from None
    raise PrunekitError("--latency-runtime onnxruntime is not supported yet; use eager or compile")


def _layer_at(m: nn.Module, cin: int, cout: int) -> nn.Module:
    """A fresh layer like ``m`` with ``cin`` inputs and ``cout`` outputs (same kernel, stride, groups ...)."""
    p = next(m.parameters())
    if isinstance(m, nn.Linear):
        new: nn.Module = nn.Linear(cin, cout, bias=m.bias is not None)
    else:
        g = m.groups
        if g > 1 and g == m.in_channels:  # depthwise (times a channel multiplier)
            mult = m.out_channels // m.in_channels
            g, cout = cin, cin * mult
        dims = len(m.kernel_size)
        kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=g, bias=m.bias is not None,
                  padding_mode=m.padding_mode)
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
            kw.pop("padding_mode")
            new = cls(cin, cout, m.kernel_size, output_padding=m.output_padding, **kw)
        else:
            cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
            new = cls(cin, cout, m.kernel_size, **kw)
    return new.to(device=p.device, dtype=p.dtype)


def _grid(n: int, groups: int = 1) -> list[int]:
    """Channel counts at :data:`WIDTHS` of ``n`` (multiples of ``groups``), ascending, without repeats."""
    vals = {max(groups, int(round(n * w / groups)) * groups) for w in WIDTHS}
    return sorted(v for v in vals if v <= n)


def _interp_weights(xs: Sequence[float], x: float) -> list[tuple[int, float]]:
    """Linear interpolation weights of ``x`` on ascending ``xs`` (linear extrapolation outside)."""
    if len(xs) == 1:
        return [(0, 1.0)]
    i = int(np.searchsorted(xs, x)) - 1
    i = min(max(i, 0), len(xs) - 2)
    t = (x - xs[i]) / (xs[i + 1] - xs[i])
    return [(i, 1.0 - t), (i + 1, t)]


@dataclass
class _LayerTable:
    """Timings of one conv/linear call at a grid of (input, output) channel counts."""

    name: str
    cin: int
    cout: int
    xs: list[int]  # input channel counts
    ys: list[int]  # output channel counts
    table: np.ndarray  # [len(xs), len(ys)] ms
    tied: bool = False  # depthwise: one width (xs == ys, only the diagonal is timed; table is 1 x len(ys))

    def at(self, cin: float, cout: float) -> float:
        if self.tied:
            return max(0.0, sum(w * self.table[0, j] for j, w in _interp_weights(self.ys, cout)))
        v = 0.0
        for i, wi in _interp_weights(self.xs, cin):
            for j, wj in _interp_weights(self.ys, cout):
                v += wi * wj * float(self.table[i, j])
        return max(0.0, v)


class LatencyTable:
    """Per-layer latency lookup table of the conv/linear layers of ``graph`` and the latency prediction of
    :mod:`latency_target` (see the module docstring, step 1)."""

    def __init__(self, graph: DependencyGraph, layer_fn: LatencyFn, input_shape: tuple[int, ...]) -> None:
        t0 = time.perf_counter()
        self.graph = graph
        prunable: set[tuple[str, str]] = {key for g in graph.groups for key in g.positions}
        names = [name for (kind, name) in graph.sites if kind == "out"
                 and isinstance(graph.modules.get(name), (nn.Linear, nn.modules.conv._ConvNd))]
        shapes: dict[str, list[tuple[int, ...]]] = {n: [] for n in names}
        outs: dict[str, int] = {n: 0 for n in names}

        def hook(mod: nn.Module, args: Any, out: Any, n: str) -> None:
            shapes[n].append(tuple(args[0].shape))
            outs[n] += int(out.numel()) if isinstance(out, torch.Tensor) else 0

        hooks = [graph.modules[n].register_forward_hook(lambda mod, a, o, n=n: hook(mod, a, o, n)) for n in names]
        model = graph.model
        p = next(model.parameters())
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
        was = model.training
        try:
            model.eval()
            with torch.inference_mode():
                model(x)
        finally:
            model.train(was)
            for h in hooks:
                h.remove()
        self.out_numel = outs
        cache: dict[Any, float] = {}
        self.tables: list[_LayerTable] = []
        self.timed = 0
        for name in names:
            m = graph.modules[name]
            cin, cout = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else \
                (m.in_channels, m.out_channels)
            groups = 1 if isinstance(m, nn.Linear) else m.groups
            tied = groups > 1 and groups == cin
            free_in = ("in", name) in prunable and not tied
            free_out = ("out", name) in prunable
            xs = _grid(cin, groups) if free_in else [cin]
            if tied:  # one width: the channels that go through
                ys = _grid(cin) if free_out or ("in", name) in prunable else [cin]
            else:
                ys = _grid(cout, groups) if free_out else [cout]
            for shape in shapes[name]:
                tab = np.zeros((1 if tied else len(xs), len(ys)))
                for i, a in enumerate([cin] if tied else xs):
                    for j, b in enumerate(ys):
                        c_in, c_out = (b, b) if tied else (a, b)
                        lshape = (*shape[:-1], c_in) if isinstance(m, nn.Linear) else \
                            (shape[0], c_in, *shape[2:])
                        key = (_layer_key(m), c_in, c_out, lshape)
                        if key not in cache:
                            cache[key] = float(layer_fn(_layer_at(m, c_in, c_out), lshape))
                            self.timed += 1
                        tab[i, j] = cache[key]
                tab = np.maximum.accumulate(np.maximum.accumulate(tab, axis=0), axis=1)  # monotone in widths
                self.tables.append(_LayerTable(name, cin, cout, list(xs), list(ys), tab, tied))
        self.dense_sum = sum(t.at(t.cin, t.cout) for t in self.tables)
        self.fixed_ms = 0.0  # the part the table does not cover, constant ...
        self.act_ms = 0.0  # ... and proportional to the conv/linear output activations (norms, activations, adds)
        self.seconds = time.perf_counter() - t0

    def calibrate(self, dense_ms: float) -> None:
        """Prior: everything the table does not cover (measured dense latency − the table's dense sum) is constant."""
        self.dense_ms = float(dense_ms)
        self.fixed_ms, self.act_ms = self.dense_ms - self.dense_sum, 0.0

    def parts(self, removed_pos: Mapping[tuple[str, str], int]) -> tuple[float, float]:
        """``(Σ LUT at the pruned widths, kept fraction of the conv/linear output activations)``."""
        sites = self.graph.sites
        total, act, act_dense = 0.0, 0.0, 0.0
        for t in self.tables:
            fo = 1 - removed_pos.get(("out", t.name), 0) / sites[("out", t.name)].size
            fi = 1.0
            if ("in", t.name) in sites:
                fi = 1 - removed_pos.get(("in", t.name), 0) / sites[("in", t.name)].size
            if t.tied:
                fi = fo = min(fi, fo)
            total += t.at(t.cin * fi, t.cout * fo)
        for name, n in self.out_numel.items():
            fo = 1 - removed_pos.get(("out", name), 0) / sites[("out", name)].size
            act += n * fo
            act_dense += n
        return float(total), (act / act_dense if act_dense else 1.0)

    def predict(self, removed_pos: Mapping[tuple[str, str], int]) -> float:
        lut, act = self.parts(removed_pos)
        return float(lut + self.fixed_ms + self.act_ms * act)

    def fit(self, points: Sequence[tuple[float, float, float]]) -> None:
        """Refit the uncovered part ``fixed + act·(kept activation fraction)`` by least squares on the measured
        ``(lut, act_fraction, ms)`` points and the dense model (``act ≥ 0``, so more channels never predict
        faster)."""
        xs = np.array([1.0] + [a for _, a, _ in points])
        ys = np.array([self.dense_ms - self.dense_sum] + [m - lut for lut, _, m in points])
        if len(xs) >= 2 and float(np.ptp(xs)) > 1e-9:
            slope, icpt = np.polyfit(xs, ys, 1)
            if slope >= 0:
                self.fixed_ms, self.act_ms = float(icpt), float(slope)
                return
        self.fixed_ms, self.act_ms = float(ys.mean()), 0.0


def _layer_key(m: nn.Module) -> tuple:
    if isinstance(m, nn.Linear):
        return ("linear", m.bias is not None)
    return (type(m).__name__, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.bias is not None,
            getattr(m, "padding_mode", ""), getattr(m, "output_padding", None),
            m.groups == m.in_channels and m.groups > 1, m.out_channels // m.groups if m.groups > 1 else 0)


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
    ``runtime`` (``eager`` / ``compile``), ``device`` (default: the model's) with ``threads`` torch threads, or
    ``latency_fn(module, input_shape) -> ms`` when given (used for the whole model and for single layers). The
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
    if int(round_to) != round_to or round_to < 1:
        raise PrunekitError(f"round_to must be a positive integer, got {round_to}")
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

    def measure(cand: nn.Module) -> tuple[float, float | None, float]:
        """``(candidate ms, dense ms alongside or None, candidate in the terms of the target)``: a fraction target
        times dense and candidate interleaved (the candidate is ``ratio × dense_ms``), a time target the candidate
        alone."""
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
        return _global_take(groups, order, k, int(round_to), float(max_group_ratio))

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
    res.info.update({"criterion": criterion, "reduction": reduction, "global": True, "round_to": int(round_to),
                     "groups_total": len(graph.groups), "groups_prunable": len(groups), "latency_target": info})
    res.info["prune_seconds"] = round(time.perf_counter() - t0, 4)
    if verify:
        from .verify import check_exact

        check_exact(model, res, example, tolerance=tolerance)
    return res


__all__ = ["prune_to_latency", "parse_latency_target", "LatencyTable", "RUNTIMES"]
