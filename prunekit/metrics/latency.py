"""Wall-clock inference latency of a model on random input (eval mode, ``torch.inference_mode``)."""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..errors import PrunekitError, check_number
from ._common import check_input_elements, check_shape, eval_mode, input_checks, model_device, model_dtype
from .runtimes import check_runtime, runner, sync, time_ms


@dataclass
class LatencyReport:
    """Latency statistics in milliseconds over ``repeats`` timed forward passes of ``batch_size`` samples on
    ``runtime``: median, mean, 90th percentile, standard deviation, quartiles (``q1_ms``, ``q3_ms``) and range."""

    median_ms: float
    mean_ms: float
    p90_ms: float
    std_ms: float
    batch_size: int
    device: str
    repeats: int
    threads: int
    runtime: str = "eager"
    q1_ms: float = 0.0
    q3_ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields."""
        return asdict(self)

    def spread(self) -> str:
        """``"1.53 ms (IQR 1.48-1.60, 40 passes)"``: the median with its interquartile range."""
        return format_spread(self.median_ms, self.q1_ms, self.q3_ms, self.repeats)


def _resolve_device(device: Union[str, torch.device, None], model: nn.Module) -> torch.device:
    if device is None:
        return model_device(model)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise PrunekitError(f"invalid device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PrunekitError(f"device {device!r} requested but CUDA is not available")
    return dev


@contextlib.contextmanager
def _num_threads(threads: Optional[int]) -> Iterator[int]:
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads is not None:
            torch.set_num_threads(old)


@contextlib.contextmanager
def _on_device(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Move ``model`` to ``device`` for the block and back to where it was afterwards."""
    home = model_device(model)
    moved = home != device
    if moved:
        model.to(device)
    try:
        yield
    finally:
        if moved:
            model.to(home)


def measure_latency(model: nn.Module, input_size: Sequence[int], *, batch_size: int = 1, warmup: int = 5,
                    repeats: int = 30, device: Union[str, torch.device, None] = None,
                    threads: Optional[int] = None, runtime: str = "eager") -> LatencyReport:
    """Time ``repeats`` forward passes (after ``warmup`` untimed ones) on random input of shape
    ``(batch_size, *input_size)``; ``input_size`` excludes the batch dimension (e.g. ``(3, 32, 32)``).

    Runs in eval mode under ``torch.inference_mode`` and restores every submodule's train/eval flag. ``device``
    defaults to the model's; the model is moved there for the measurement and moved back. ``threads`` sets
    ``torch.set_num_threads`` (and ONNX Runtime's intra-op threads) for the measurement only. CUDA is
    synchronised around every timed pass. ``runtime``: ``eager`` (PyTorch), ``compile`` (``torch.compile``,
    compiled before timing) or ``onnxruntime`` (the model exported to ONNX at this batch size; CPU, or the CUDA
    execution provider on a CUDA device), see :mod:`prunekit.metrics.runtimes`. The input size is checked
    first (at most :data:`~prunekit.metrics._common.MAX_INPUT_ELEMENTS` elements, the first layer's channels, no
    layer's kernel larger than its input): a wrong one is a PrunekitError; other failures keep their traceback.

    >>> import prunekit
    >>> rep = prunekit.measure_latency(prunekit.create_model("resnet20"), (3, 32, 32), repeats=3, threads=1)
    >>> rep.batch_size, rep.repeats, rep.median_ms > 0
    (1, 3, True)
    """
    shape = check_shape("input_size", input_size, min_dims=1)
    for name, value, low in (("batch_size", batch_size, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        check_number(name, value, low=low, integer=True)
    if threads is not None:
        check_number("threads", threads, low=1, integer=True)
    check_runtime(runtime)
    dims = (int(batch_size), *shape)
    check_input_elements(dims)
    dev = _resolve_device(device, model)
    with _num_threads(threads) as n_threads, _on_device(model, dev), eval_mode(model), torch.inference_mode():
        gen = torch.Generator().manual_seed(0)  # a private generator: the global RNG stream is untouched
        x = torch.randn(dims, generator=gen).to(device=dev, dtype=model_dtype(model))
        with input_checks(model, dims):
            model(x)  # one checked eager pass (a wrong input size is named here), untimed
        run = runner(model, x, runtime, threads=n_threads, device=dev)
        times = time_ms(lambda: run(x), warmup, repeats, dev)
    return _report(times, int(batch_size), str(dev), int(n_threads), runtime)


def _report(times: Sequence[float], batch_size: int, device: str, threads: int, runtime: str) -> LatencyReport:
    q1, q3 = (float(v) for v in np.percentile(times, [25, 75]))
    return LatencyReport(
        median_ms=float(statistics.median(times)), mean_ms=float(statistics.fmean(times)),
        p90_ms=float(np.percentile(times, 90)), std_ms=float(statistics.stdev(times)) if len(times) > 1 else 0.0,
        batch_size=batch_size, device=device, repeats=len(times), threads=threads, runtime=runtime,
        q1_ms=q1, q3_ms=q3, min_ms=float(min(times)), max_ms=float(max(times)))


def format_spread(median_ms: float, q1_ms: float, q3_ms: float, passes: int) -> str:
    """``"1.53 ms (IQR 1.48-1.60, 40 passes)"``."""
    return f"{median_ms:.4g} ms (IQR {q1_ms:.4g}-{q3_ms:.4g}, {passes} pass{'es' if passes != 1 else ''})"


# ---------------------------------------------------------------------------------------------------------------
# Budgeted, interleaved comparisons: what the commands print.

DEFAULT_BUDGET_S = 3.0  # seconds of measurement per model and batch size, warm-up included
DEFAULT_MAX_PASSES = 100  # timed passes per model and batch size at most (enough for a median and quartiles)
MIN_VERDICT_PASSES = 3  # fewer paired passes than this: no verdict on a speed-up


@dataclass
class Speedup:
    """``a`` against ``b`` over paired, interleaved passes: ``ratio`` = median of ``time_a / time_b`` per round
    (above 1: ``b`` is faster), ``q1``/``q3`` its quartiles, ``passes`` the rounds; ``verdict``: ``faster``,
    ``slower``, ``within noise`` (the quartiles of the ratio include 1) or ``too few passes``."""

    ratio: float
    q1: float
    q3: float
    passes: int
    verdict: str

    def describe(self, b: str = "pruned") -> str:
        """One phrase, e.g. ``"pruned 1.72x faster (paired IQR 1.65-1.80)"`` or ``"... within the noise"``."""
        span = f"paired IQR {self.q1:.2f}-{self.q3:.2f} over {self.passes} passes"
        if self.verdict == "faster":
            return f"{b} {self.ratio:.2f}x faster ({span})"
        if self.verdict == "slower":
            return f"{b} {1 / self.ratio:.2f}x slower ({span})"
        if self.verdict == "within noise":
            return f"no measurable difference: ratio {self.ratio:.2f} is within the noise ({span} includes 1)"
        return f"ratio {self.ratio:.2f} from {self.passes} pass(es): too few to tell a speed-up from noise"


@dataclass
class LatencyComparison:
    """Several models (or runtimes) timed at one batch size, pass by pass in turn, within a time budget.

    ``reports``: label -> :class:`LatencyReport` (absent when ``skipped``); ``times``: label -> the per-pass
    milliseconds, in round order (round ``i`` of every label ran back to back); ``skipped``: why nothing was
    timed (one pass would exceed the budget), else None."""

    batch_size: int
    budget_s: float
    reports: dict[str, LatencyReport] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    skipped: str | None = None

    def median(self, label: str) -> float | None:
        """The median ms of ``label`` (None when not timed)."""
        rep = self.reports.get(label)
        return rep.median_ms if rep is not None else None

    def speedup(self, a: str, b: str) -> Speedup | None:
        """``a`` against ``b`` over the rounds both ran (None when not timed)."""
        ta, tb = self.times.get(a), self.times.get(b)
        if not ta or not tb:
            return None
        ratios = [x / y for x, y in zip(ta, tb) if y > 0]
        if not ratios:
            return None
        q1, med, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
        if len(ratios) < MIN_VERDICT_PASSES:
            verdict = "too few passes"
        elif q1 > 1.0:
            verdict = "faster"
        elif q3 < 1.0:
            verdict = "slower"
        else:
            verdict = "within noise"
        return Speedup(med, q1, q3, len(ratios), verdict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: batch size, budget, skipped, and per label the statistics (without the raw times)."""
        return {"batch_size": self.batch_size, "budget_s": self.budget_s, "skipped": self.skipped,
                **{label: rep.as_dict() for label, rep in self.reports.items()}}


def interleaved_times(runs: Mapping[str, Callable[[], Any]], *, budget_s: float = DEFAULT_BUDGET_S,
                      max_passes: int | None = DEFAULT_MAX_PASSES, device: torch.device | None = None,
                      warmup: bool = True, spent_s: float = 0.0) -> tuple[dict[str, list[float]], str | None]:
    """Time each callable of ``runs`` pass by pass in turn (round ``i`` runs every label once; the order alternates
    between rounds) until ``len(runs) * budget_s - spent_s`` seconds have gone, warm-up included, or ``max_passes``
    rounds; at least one round.

    ``warmup``: run every callable once untimed first; when the slowest of those passes exceeds ``budget_s``,
    nothing more is run and the second item says why. ``spent_s``: budget already used (e.g. by the caller's own
    warm-up passes). Returns ``(times, skipped)``: label -> per-pass ms, in round order."""
    labels = list(runs)
    budget = float(budget_s)
    start = time.perf_counter()
    if warmup:
        warm = max(time_ms(runs[label], 0, 1, device)[0] for label in labels)
        if warm / 1000.0 > budget:
            return {}, f"one pass takes about {warm / 1000.0:.3g} s, over the {budget:g} s budget"
    times: dict[str, list[float]] = {label: [] for label in labels}
    deadline = start + budget * len(labels) - float(spent_s)
    rounds = 0
    while max_passes is None or rounds < max_passes:
        order = labels if rounds % 2 == 0 else labels[::-1]
        for label in order:
            times[label].append(time_ms(runs[label], 0, 1, device)[0])
        rounds += 1
        if time.perf_counter() >= deadline:
            break
    return times, None


def compare_latency(models: Mapping[str, nn.Module], input_size: Sequence[int], *,
                    batch_sizes: Sequence[int] = (1,), budget_s: float = DEFAULT_BUDGET_S,
                    max_passes: int | None = DEFAULT_MAX_PASSES, device: Union[str, torch.device, None] = None,
                    threads: Optional[int] = None, runtime: str = "eager") -> list[LatencyComparison]:
    """Time ``models`` (label -> model; e.g. ``{"dense": a, "pruned": b}``) at each batch size, interleaved pass by
    pass within ``budget_s`` seconds per model and batch size (warm-up included; ``max_passes`` timed passes at
    most). A batch size one pass of which would exceed the budget (predicted from the smaller batch sizes'
    per-sample time, or measured by the first, warm-up pass) is skipped and says so. ``budget_s=0`` times nothing
    (an empty list).

    The medians, quartiles and pass counts are in each comparison's :class:`LatencyReport` s; a speed-up with its
    noise is :meth:`LatencyComparison.speedup`. Inputs: random, eval mode, ``torch.inference_mode``; ``device``
    defaults to the first model's; ``threads`` as :func:`measure_latency`.

    >>> import prunekit
    >>> from prunekit.metrics.latency import compare_latency
    >>> m = prunekit.create_model("resnet20")
    >>> [c] = compare_latency({"a": m, "b": m}, (3, 32, 32), budget_s=0.5, max_passes=5, threads=1)
    >>> c.batch_size, c.reports["a"].repeats == c.reports["b"].repeats >= 1
    (1, True)
    """
    shape = check_shape("input_size", input_size, min_dims=1)
    check_number("budget_s", budget_s, low=0.0, high=86400.0)
    if max_passes is not None:
        check_number("max_passes", max_passes, low=1, integer=True)
    if threads is not None:
        check_number("threads", threads, low=1, integer=True)
    check_runtime(runtime)
    sizes = sorted({int(check_number("batch_size", b, low=1, integer=True)) for b in batch_sizes})
    if not models or budget_s == 0 or not sizes:
        return []
    for b in sizes:
        check_input_elements((b, *shape))
    dev = _resolve_device(device, next(iter(models.values())))
    out: list[LatencyComparison] = []
    per_sample_ms: float | None = None  # the slowest model's ms per sample at the largest batch seen so far
    with contextlib.ExitStack() as stack:
        n_threads = stack.enter_context(_num_threads(threads))
        for m in models.values():
            stack.enter_context(_on_device(m, dev))
            stack.enter_context(eval_mode(m))
        stack.enter_context(torch.inference_mode())
        gen = torch.Generator().manual_seed(0)
        for b in sizes:
            comp = LatencyComparison(b, float(budget_s))
            out.append(comp)
            estimate = per_sample_ms * b if per_sample_ms is not None else None
            if estimate is not None and estimate / 1000.0 > budget_s:
                comp.skipped = (f"batch {b}: not timed: one pass would take about {estimate / 1000.0:.3g} s (from "
                                f"the smaller batch), over the {budget_s:g} s budget per model; --latency-budget "
                                f"{_suggest(estimate)} times it")
                continue
            dims = (b, *shape)
            runs: dict[str, Callable[[], Any]] = {}
            start = time.perf_counter()
            for label, m in models.items():
                x = torch.randn(dims, generator=gen).to(device=dev, dtype=model_dtype(m))
                first = time.perf_counter()
                with input_checks(m, dims):
                    m(x)  # one checked eager pass (a wrong input size is named here), untimed: the warm-up
                sync(dev)
                first_ms = (time.perf_counter() - first) * 1000.0
                per_sample_ms = max(per_sample_ms or 0.0, first_ms / b)
                if first_ms / 1000.0 > budget_s:
                    comp.skipped = (f"batch {b}: not timed: one pass takes about {first_ms / 1000.0:.3g} s, over the "
                                    f"{budget_s:g} s budget per model; --latency-budget {_suggest(first_ms)} times it")
                    break
                fn = runner(m, x, runtime, threads=n_threads, device=dev)
                runs[label] = (lambda f, t: (lambda: f(t)))(fn, x)
            if comp.skipped:
                continue
            times, why = interleaved_times(runs, budget_s=budget_s, max_passes=max_passes, device=dev,
                                           warmup=runtime != "eager", spent_s=time.perf_counter() - start)
            if why is not None:
                comp.skipped = f"batch {b}: not timed: {why} per model; --latency-budget N raises it"
                continue
            comp.times = times
            comp.reports = {label: _report(t, b, str(dev), int(n_threads), runtime) for label, t in times.items()}
            per_sample_ms = max(r.median_ms for r in comp.reports.values()) / b
    return out


def _suggest(estimate_ms: float) -> str:
    """A budget (s) that fits a warm-up pass and about 5 timed ones."""
    return f"{max(1, math.ceil(estimate_ms * 6 / 1000.0))}"
