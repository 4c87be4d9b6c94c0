"""Deploying what you prune: ONNX, TorchScript and ``torch.export`` files of any prunekit model, verified.

:func:`export` writes one deployable file of a model (dense, masked or structurally pruned, zoo or user-built),
loads it back in its runtime, compares it with PyTorch eager on random input and, on request, times both:

* ``onnx`` (``.onnx``): ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter, which
  needs ``onnxscript``), else the TorchScript-based exporter (``dynamo=False``, with a note); run in
  ONNX Runtime. Needs ``pip install prunekit[onnx]`` (onnx + onnxruntime, onnxscript for the new exporter).
* ``torchscript`` (``.pt``): ``torch.jit.trace`` + ``torch.jit.save``; run with ``torch.jit.load``.
* ``exported-program`` (``.pt2``): ``torch.export.export`` + ``torch.export.save``; run as
  ``torch.export.load(path).module()``.

The batch dimension is exported dynamic wherever the model allows it (the example input has batch 2, the check
batch 3); ``dynamic_batch=False`` exports a fixed batch of 2 (quicker to export, e.g. in tests). :func:`fold_batchnorm` folds every eval-mode BatchNorm into the conv that feeds it (found in the
torch.fx trace that structured pruning uses) and proves the copy equal to the model.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import logging
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn

from .errors import PrunekitError
from .utils.io import atomic_path

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torch.jit", "exported-program": "torch.export"}
ONNX_HINT = "onnx export needs `pip install prunekit[onnx]`"
EXAMPLE_BATCH, CHECK_BATCH = 2, 3
FOLD_TOL = 1e-5


@dataclass
class ExportResult:
    """What :func:`export` wrote and measured. ``latency``: ``{batch: {"eager_ms", "runtime_ms"}}`` (medians);
    ``max_abs_diff``: max |runtime - eager| on a fresh random batch of ``CHECK_BATCH`` (of ``EXAMPLE_BATCH`` when
    the file has a fixed batch size, ``dynamic_batch=False``). ``loaded``: the file loaded back (an ONNX Runtime
    session, a ScriptModule, an ExportedProgram), not part of :meth:`as_dict`."""

    format: str
    path: str
    file_bytes: int
    exporter: str
    runtime: str
    input_size: list[int]
    max_abs_diff: float
    max_abs_ref: float
    dynamic_batch: bool
    fold_bn: bool
    folded: list[list[str]] = field(default_factory=list)
    fold_max_abs_diff: float | None = None
    latency: dict[int, dict[str, float | None]] = field(default_factory=dict)
    latency_threads: int | None = None
    notes: list[str] = field(default_factory=list)
    loaded: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict (latency keys as strings)."""
        d = asdict(dataclasses.replace(self, loaded=None))
        del d["loaded"]
        d["latency"] = {str(k): v for k, v in self.latency.items()}
        return d


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm folding

@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of ``model`` (eval mode) in which every BatchNorm fed by a conv is folded into that conv.

    Pairs come from the torch.fx trace of structured pruning: a ``Conv1d/2d/3d`` node whose *only* user is a
    ``BatchNorm`` node of the same width (nothing else reads the conv output), each module called once and never
    read as an attribute, the BN tracking running statistics. The conv gets ``W·γ/√(var+ε)`` and bias
    ``(b − mean)·γ/√(var+ε) + β``; the BN becomes ``nn.Identity``. Returns ``(copy, [(conv, bn), ...])``. With
    ``example`` the copy is checked against the model (relative max difference ≤ 1e-5, else PrunekitError).
    """
    from .pruning.structured import rules as R  # noqa: F401  (importing the package registers the zoo rules)
    from .pruning.structured.trace import trace

    src = copy.deepcopy(model).eval()
    try:
        gm = trace(src, leaf_paths=set(), has_rule=lambda m: R.module_rule_for(m) is not None)
    except PrunekitError as exc:
        raise PrunekitError(f"fold_bn: {exc}") from None
    modules = dict(src.named_modules())
    calls: dict[str, int] = {}
    attr_reads: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        elif node.op == "get_attr":
            attr_reads.add(str(node.target).rpartition(".")[0])
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    pairs: list[tuple[str, str]] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), nn.modules.batchnorm._BatchNorm):
            continue
        bn_name = str(node.target)
        bn = modules[bn_name]
        prev = node.args[0] if node.args else None
        if getattr(prev, "op", None) != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        conv_name = str(prev.target)
        conv = modules.get(conv_name)
        if not isinstance(conv, convs) or len(prev.users) != 1 or calls.get(conv_name) != 1 or \
                calls.get(bn_name) != 1 or conv_name in attr_reads or bn_name in attr_reads:
            continue
        if not bn.track_running_stats or bn.running_mean is None or conv.out_channels != bn.num_features:
            continue
        pairs.append((conv_name, bn_name))
    out = src
    for conv_name, bn_name in pairs:
        conv, bn = out.get_submodule(conv_name), out.get_submodule(bn_name)
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        w = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        b = shift if conv.bias is None else conv.bias.double() * scale + shift
        conv.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
        conv.bias = nn.Parameter(b.to(conv.weight.dtype))
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, attr, nn.Identity())
    if example is not None and pairs:
        diff, ref = _max_diff(model, out, example)
        if diff > FOLD_TOL * max(1.0, ref):
            raise PrunekitError(f"fold_bn: the folded model differs from the model by {diff:.3g} (max |output| "
                                f"{ref:.3g}); not exporting it")
    return out, pairs


@torch.no_grad()
def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    was = a.training
    a.eval()
    try:
        ra, rb = a(x), b(x)
    finally:
        a.train(was)
    return float((ra - rb).abs().max()), float(ra.abs().max())


# ---------------------------------------------------------------------------------------------------------------
# Export

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


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """The model's natural input (C, H, W): a zoo model's (with its ``in_channels``), a factory model's recorded
    ``input_size``; anything else must say it."""
    from .models import list_models, model_info

    name = getattr(model, "prunekit_name", None)
    if name in list_models():
        _, h, w = model_info(name).input_size
        return (int(getattr(model, "in_channels", 3)), h, w)
    natural = getattr(model, "prunekit_input_size", None)
    if natural is not None:
        return tuple(int(v) for v in natural)
    raise PrunekitError(f"export: pass input_size=(C, H, W) for this {type(model).__name__} (CLI: --input-size)")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
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


def _write_onnx(model: nn.Module, x: torch.Tensor, tmp: Path, has_script: bool, opset: int | None,
                dynamic: bool, notes: list[str]) -> str:
    import io
    from contextlib import redirect_stdout

    kw: dict[str, Any] = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    buf = io.StringIO()
    if has_script:
        with redirect_stdout(buf):
            prog = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False,
                                     dynamic_shapes=({0: torch.export.Dim.AUTO},) if dynamic else None, **kw)
            prog.save(str(tmp), external_data=False)
        return "torch.onnx.export(dynamo=True)"
    notes.append("onnxscript is not installed: used the TorchScript-based ONNX exporter (dynamo=False); "
                 "`pip install prunekit[onnx]` for the torch.export-based one")
    with redirect_stdout(buf):
        torch.onnx.export(model, (x,), str(tmp), dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None, **kw)
    return "torch.onnx.export(dynamo=False)"


def _load_runtime(fmt: str, path: Path, ort: Any, threads: int | None
                  ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any]:
    """``(run, loaded)``: a callable running the exported file on a CPU tensor (returning a CPU tensor), and the
    loaded object."""
    if fmt == "onnx":
        opts = ort.SessionOptions()  # as many threads as PyTorch uses, for a like-for-like comparison
        opts.intra_op_num_threads = int(threads) if threads is not None else torch.get_num_threads()
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return (lambda x: torch.from_numpy(sess.run(None, {name: x.numpy()})[0])), sess
    if fmt == "torchscript":
        loaded = mod = torch.jit.load(str(path), map_location="cpu").eval()
    else:
        loaded = torch.export.load(str(path))
        mod = loaded.module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return mod(x)
    return run, loaded


def _run_or_fail(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, fmt: str, path: Path
                 ) -> torch.Tensor:
    try:
        return run(x)
    except Exception as exc:  # noqa: BLE001  (runtimes raise their own types)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunekitError(f"{path} does not run in {RUNTIMES[fmt]} on a batch of shape {list(x.shape)}: "
                            f"{first[:400]}") from exc


def _median_ms(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve_path(path: str | Path, fmt: str) -> Path:
    """``path`` itself when it ends with the format's suffix, else ``path/model<suffix>`` (a folder)."""
    p = Path(path)
    suffix = SUFFIXES[fmt]
    if p.suffix == suffix:
        return p
    if p.exists() and not p.is_dir():
        raise PrunekitError(f"export: {p} exists and is not a folder (a {fmt} file must end with {suffix})")
    return p / f"model{suffix}"


def export(model: nn.Module, path: str | Path, format: str = "onnx", input_size: Sequence[int] | None = None,
           fold_bn: bool = False, *, latency_batch_sizes: Sequence[int] = (), latency_threads: int | None = None,
           warmup: int = 5, repeats: int = 30, opset: int | None = None, tolerance: float = 1e-4,
           seed: int = 0, dynamic_batch: bool = True) -> ExportResult:
    """Export ``model`` to ``path`` in ``format`` (``onnx``, ``torchscript``, ``exported-program``) and verify it.

    ``path``: a file with the format's suffix (``.onnx``, ``.pt``, ``.pt2``) or a folder (gets ``model<suffix>``);
    written atomically. ``input_size``: (C, H, W), default the model's natural input. The model is copied to the
    CPU in eval mode (the caller's model is not touched); ``fold_bn`` exports :func:`fold_batchnorm`'s copy.
    The file is loaded back in its runtime and compared with the (unfolded) model in PyTorch eager on random
    input: a relative max difference above ``tolerance`` is an error. ``latency_batch_sizes``: also time the
    runtime and PyTorch eager at these batch sizes (median of ``repeats``, ``latency_threads`` threads each).
    ``dynamic_batch=False``: the file takes batches of exactly 2 (the runtime is timed at that batch size only).
    """
    if format not in FORMATS:
        raise PrunekitError(f"export format must be one of {', '.join(FORMATS)}; got {format!r}")
    ort, has_script = require_onnx() if format == "onnx" else (None, False)
    for b in latency_batch_sizes:
        if int(b) != b or b < 1:
            raise PrunekitError(f"latency batch sizes must be positive integers, got {b!r}")
    if latency_threads is not None and (int(latency_threads) != latency_threads or latency_threads < 1):
        raise PrunekitError(f"latency threads must be a positive integer, got {latency_threads!r}")
    size = tuple(int(v) for v in (input_size if input_size is not None else default_input_size(model)))
    if not size or min(size) < 1:
        raise PrunekitError(f"input_size must be positive integers, got {input_size!r}")
    out_path = resolve_path(path, format)
    notes: list[str] = []
    ref = copy.deepcopy(model).to("cpu").float().eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn((EXAMPLE_BATCH, *size), generator=gen)
    check = torch.randn((CHECK_BATCH if dynamic_batch else EXAMPLE_BATCH, *size), generator=gen)
    try:
        with torch.no_grad():
            ref(example)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunekitError(f"export: {type(model).__name__} does not run on an input of shape "
                            f"{[EXAMPLE_BATCH, *size]} (wrong input_size?): {first}") from None
    target, folded, fold_diff = ref, [], None
    if fold_bn:
        target, folded = fold_batchnorm(ref, example)
        fold_diff = _max_diff(ref, target, check)[0] if folded else 0.0
        notes.append(f"folded {len(folded)} BatchNorm layers into their convs")
    with _quiet():
        try:
            with atomic_path(out_path) as tmp, torch.no_grad():
                if format == "onnx":
                    exporter = _write_onnx(target, example, tmp, has_script, opset, dynamic_batch, notes)
                elif format == "torchscript":
                    torch.jit.save(torch.jit.trace(target, (example,), check_trace=False), str(tmp))
                    exporter = "torch.jit.trace"
                else:
                    ep = torch.export.export(target, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)
                                             if dynamic_batch else None)
                    torch.export.save(ep, str(tmp))
                    exporter = "torch.export.export"
        except PrunekitError:
            raise
        except Exception as exc:  # the exporters raise many types; the message is what the user needs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PrunekitError(f"{format} export of {type(model).__name__} failed: {type(exc).__name__}: "
                                f"{first[:400]}") from exc
        run, loaded = _load_runtime(format, out_path, ort, latency_threads)
        with torch.no_grad():
            expected = ref(check)
        dynamic = dynamic_batch
        try:
            got = run(check)
        except Exception:  # noqa: BLE001  (the exporter specialised the batch size)
            if not dynamic_batch:
                got = _run_or_fail(run, check, format, out_path)
            dynamic = False
            check = torch.randn((EXAMPLE_BATCH, *size), generator=gen)
            with torch.no_grad():
                expected = ref(check)
            got = _run_or_fail(run, check, format, out_path)
            notes.append(f"the exporter fixed the batch size at {EXAMPLE_BATCH} (the model specialises it)")
    expected = expected.detach()
    diff = float((got.float() - expected).abs().max())
    peak = float(expected.abs().max())
    if not diff <= tolerance * max(1.0, peak):
        raise PrunekitError(f"{format} export of {type(model).__name__}: the {RUNTIMES[format]} output differs from "
                            f"PyTorch eager by {diff:.3g} (max |output| {peak:.3g}); the file {out_path} is kept "
                            "for inspection")
    latency: dict[int, dict[str, float | None]] = {}
    for b in latency_batch_sizes:
        x = torch.randn((int(b), *size), generator=gen)
        with _torch_threads(latency_threads), torch.inference_mode():
            eager_ms = _median_ms(lambda: ref(x), warmup, repeats)
            runtime_ms = None
            if dynamic or b == EXAMPLE_BATCH:
                with _quiet():
                    runtime_ms = _median_ms(lambda: run(x), warmup, repeats)
        latency[int(b)] = {"eager_ms": eager_ms, "runtime_ms": runtime_ms}
    return ExportResult(format=format, path=str(out_path), file_bytes=out_path.stat().st_size, exporter=exporter,
                        runtime=RUNTIMES[format], input_size=list(size), max_abs_diff=diff, max_abs_ref=peak,
                        dynamic_batch=dynamic, fold_bn=bool(fold_bn), folded=[list(p) for p in folded],
                        fold_max_abs_diff=fold_diff, latency=latency,
                        latency_threads=latency_threads if latency_threads is not None else torch.get_num_threads(),
                        notes=notes, loaded=loaded)
