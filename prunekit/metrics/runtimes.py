"""The runtimes a model is timed (and exported) on: PyTorch eager, ``torch.compile`` and ONNX Runtime.

:func:`runner` turns a model into a callable on one input tensor for a runtime; :func:`time_ms` times any
callable. ``compile`` and ``onnxruntime`` are optional: a runtime that is missing or does not work on this machine
is one :class:`~prunekit.errors.PrunekitError` (``pip install prunekit[onnx]`` for ONNX Runtime; ``torch.compile``
needs a working C++ toolchain for its CPU backend). The ONNX writer and session here are the ones
:func:`prunekit.export` uses.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import tempfile
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from ..errors import PrunekitError, UnknownNameError

RUNTIMES = ("eager", "compile", "onnxruntime")
ONNX_HINT = "onnx export needs `pip install prunekit[onnx]`"
Run = Callable[[torch.Tensor], Any]


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`, else an :class:`UnknownNameError`."""
    if runtime not in RUNTIMES:
        raise UnknownNameError(f"unknown latency runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    return runtime


def require_onnx() -> tuple[Any, bool]:
    """``(onnxruntime module, onnxscript available)``; a missing ``onnx`` or ``onnxruntime`` is one PrunekitError."""
    missing = []
    ort = None
    for name in ("onnx", "onnxruntime"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            missing.append(name)
            continue
        if name == "onnxruntime":
            ort = mod
    if missing:
        raise PrunekitError(f"{ONNX_HINT} ({' and '.join(missing)} not installed)")
    try:
        importlib.import_module("onnxscript")
        has_script = True
    except ImportError:
        has_script = False
    return ort, has_script


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' chatter (tracer warnings, deprecation notes, torch.onnx's registration log)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def write_onnx(model: nn.Module, x: torch.Tensor, path: Path, has_script: bool, opset: int | None,
               dynamic: bool, notes: list[str]) -> str:
    """Write ``model`` (traced on ``x``) to ``path`` as ONNX; return the exporter used. The ``torch.export``-based
    exporter where ``onnxscript`` is installed, else the TorchScript-based one (with a line in ``notes``)."""
    kw: dict[str, Any] = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    buf = io.StringIO()
    if has_script:
        with redirect_stdout(buf):
            prog = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False,
                                     dynamic_shapes=({0: torch.export.Dim.AUTO},) if dynamic else None, **kw)
            prog.save(str(path), external_data=False)
        return "torch.onnx.export(dynamo=True)"
    notes.append("onnxscript is not installed: used the TorchScript-based ONNX exporter (dynamo=False); "
                 "`pip install prunekit[onnx]` for the torch.export-based one")
    with redirect_stdout(buf):
        torch.onnx.export(model, (x,), str(path), dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None, **kw)
    return "torch.onnx.export(dynamo=False)"


def onnx_session(path: str | Path, ort: Any, threads: int | None = None,
                 device: torch.device | None = None) -> tuple[Run, Any]:
    """``(run, session)``: an ONNX Runtime session of the file at ``path`` with ``threads`` intra-op threads
    (default: as many as PyTorch uses), on the CPU or, for a CUDA ``device``, the CUDA execution provider; ``run``
    takes a tensor and returns a CPU tensor (a CUDA input is copied to the host first)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads is not None else torch.get_num_threads()
    opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise PrunekitError("runtime onnxruntime on a CUDA device needs onnxruntime-gpu (this onnxruntime has "
                                f"only {', '.join(ort.get_available_providers())})")
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    name = sess.get_inputs()[0].name
    return (lambda x: torch.from_numpy(sess.run(None, {name: x.detach().cpu().numpy()})[0])), sess


def runner(model: nn.Module, example: torch.Tensor, runtime: str = "eager", *, threads: int | None = None,
           device: torch.device | None = None) -> Run:
    """A callable running ``model`` (eval mode, on ``example``'s device) in ``runtime`` on tensors shaped like
    ``example``: the model itself (eager), ``torch.compile(model, dynamic=False)`` compiled by one call on
    ``example`` (compile), or an ONNX Runtime session of the model exported with the batch of ``example``
    (onnxruntime; written with the TorchScript-based exporter where it works, it is much quicker to export, else
    the ``torch.export``-based one). A runtime that is not installed or fails to build is a PrunekitError."""
    check_runtime(runtime)
    if runtime == "eager":
        return model
    if runtime == "compile":
        try:
            importlib.import_module("torch._dynamo").reset()  # a fresh module per call: no recompilation limit
            fn = torch.compile(model, dynamic=False)
            with torch.inference_mode():
                fn(example)
        except PrunekitError:
            raise
        except Exception as exc:  # noqa: BLE001  (inductor needs a working C++ toolchain; it raises many types)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise PrunekitError(f"runtime compile: torch.compile does not work on this machine: "
                                f"{type(exc).__name__}: {first[:300]}") from exc
        return fn
    ort, has_script = require_onnx()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prunekit-ort-") as tmp, quiet(), torch.no_grad():
        path = Path(tmp) / "model.onnx"
        try:  # the TorchScript-based exporter: ~50x quicker to export (a latency table exports many layers)
            try:
                write_onnx(model, example.cpu(), path, False, None, False, notes)
            except Exception:  # noqa: BLE001  (a torch without it, or a model it cannot trace)
                if not has_script:
                    raise
                write_onnx(model, example.cpu(), path, True, None, False, notes)
        except Exception as exc:  # noqa: BLE001  (the exporters raise many types)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PrunekitError(f"runtime onnxruntime: ONNX export of {type(model).__name__} failed: "
                                f"{type(exc).__name__}: {first[:300]}") from exc
        run, _ = onnx_session(path, ort, threads, device)  # the session holds the model: the file can go
    return run


def sync(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device | None = None) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; the wall-clock times in ms (the device
    synchronised around every timed call)."""
    for _ in range(int(warmup)):
        fn()
    sync(device)
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times
