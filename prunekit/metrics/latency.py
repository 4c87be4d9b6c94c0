"""Wall-clock inference latency of a model on random input (eval mode, ``torch.inference_mode``)."""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..errors import PrunekitError, check_number
from ._common import check_input_elements, check_shape, eval_mode, input_checks, model_device, model_dtype
from .runtimes import check_runtime, runner, time_ms


@dataclass
class LatencyReport:
    """Latency statistics in milliseconds over ``repeats`` timed forward passes of ``batch_size`` samples on
    ``runtime``."""

    median_ms: float
    mean_ms: float
    p90_ms: float
    std_ms: float
    batch_size: int
    device: str
    repeats: int
    threads: int
    runtime: str = "eager"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields."""
        return asdict(self)


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
    return LatencyReport(
        median_ms=float(statistics.median(times)),
        mean_ms=float(statistics.fmean(times)),
        p90_ms=float(np.percentile(times, 90)),
        std_ms=float(statistics.stdev(times)) if len(times) > 1 else 0.0,
        batch_size=int(batch_size), device=str(dev), repeats=int(repeats), threads=int(n_threads),
        runtime=runtime,
    )
