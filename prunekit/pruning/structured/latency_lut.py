"""Timing and the per-layer latency lookup table of :mod:`.latency_target` (its module docstring, step 1).

:func:`measure_pair` times two models interleaved pass by pass on a runtime (eager, ``torch.compile``, ONNX
Runtime: :mod:`prunekit.metrics.runtimes`); :class:`LatencyTable` times every conv/linear layer of a dependency
graph alone at a grid of widths and predicts the latency of a pruned model from it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ...errors import PrunekitError
from ...metrics.runtimes import RUNTIMES
from .graph import DependencyGraph

WIDTHS = (1.0, 0.75, 0.5, 0.25)
LatencyFn = Callable[[nn.Module, tuple[int, ...]], float]

PairFn = Callable[[nn.Module, nn.Module, tuple[int, ...]], tuple[float, float, float]]


def measure_pair(a: nn.Module, b: nn.Module, input_shape: Sequence[int], *, repeats: int = 20, warmup: int = 3,
                 device: Any = None, threads: int | None = None, runtime: str = "eager") -> tuple[float, float, float]:
    """Time ``a`` and ``b`` pass by pass, alternately (the order alternating too), on one random input of
    ``input_shape`` (batch included); return ``(median ms of a, median ms of b, median of the per-pass ratios
    b/a)``. On a shared machine both see the same load, so the ratio is far steadier than two separate
    measurements. Eval mode and ``torch.inference_mode``; ``threads``, ``device`` and ``runtime`` (eager,
    compile, onnxruntime) as in :func:`prunekit.metrics.measure_latency`."""
    import statistics

    from ...metrics._common import eval_mode, model_dtype
    from ...metrics.latency import _num_threads, _on_device, _resolve_device
    from ...metrics.runtimes import runner, sync

    dev = _resolve_device(device, a)
    ta: list[float] = []
    tb: list[float] = []
    with _num_threads(threads) as n, _on_device(a, dev), _on_device(b, dev), eval_mode(a), eval_mode(b), \
            torch.inference_mode():
        x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0)).to(dev, model_dtype(a))
        fa, fb = (runner(m, x, runtime, threads=n, device=dev) for m in (a, b))
        for _ in range(int(warmup)):
            fa(x)
            fb(x)
        sync(dev)
        for i in range(int(repeats)):
            for f, out in (((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta))):
                start = time.perf_counter()
                f(x)
                sync(dev)
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
    """``(whole-model fn, single-layer fn, interleaved pair fn)`` for ``runtime``. The layer table is timed on
    the runtime too, except for ``compile`` (one compilation per layer configuration would take minutes: its
    table is eager, the correction step absorbs the difference)."""
    from ...metrics import measure_latency
    from ...metrics.runtimes import check_runtime

    check_runtime(runtime)
    if runtime == "onnxruntime":
        from ...metrics.runtimes import require_onnx

        try:
            require_onnx()
        except PrunekitError as exc:
            raise PrunekitError(f"--latency-runtime onnxruntime: {exc}") from None

    def timed(rt: str, warm: int) -> LatencyFn:
        def fn(m: nn.Module, shape: tuple[int, ...]) -> float:
            return measure_latency(m, shape[1:], batch_size=shape[0], warmup=warm, repeats=repeats, device=device,
                                   threads=threads, runtime=rt).median_ms
        return fn

    warm = max(2, warmup) if runtime == "compile" else warmup

    def pair(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> tuple[float, float, float]:
        return measure_pair(a, b, shape, repeats=repeats, warmup=warm, device=device, threads=threads,
                            runtime=runtime)

    return timed(runtime, warm), timed("eager" if runtime == "compile" else runtime, max(1, warmup)), pair


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


__all__ = ["LatencyTable", "measure_pair", "RUNTIMES", "WIDTHS"]
