"""Deploying what you prune: ONNX, TorchScript and ``torch.export`` files of any prunekit model, verified.

:func:`export` writes one deployable file of a model (dense, masked or structurally pruned, zoo or user-built),
loads it back in its runtime, compares it with PyTorch eager on random input and, on request, times both:

* ``onnx`` (``.onnx``): ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter, which
  needs ``onnxscript``), else the TorchScript-based exporter (``dynamo=False``, with a note); run in
  ONNX Runtime. Needs ``pip install prunekit[onnx]`` (onnx + onnxruntime, onnxscript for the new exporter).
* ``torchscript`` (``.pt``): ``torch.jit.trace`` + ``torch.jit.save``; run with ``torch.jit.load``.
* ``exported-program`` (``.pt2``): ``torch.export.export`` + ``torch.export.save``; run as
  ``torch.export.load(path).module()``.

The batch dimension is exported dynamic wherever the model allows it (example batch 2, check batch 3);
``dynamic_batch=False`` exports a fixed batch of 2. Exact rewrites for runtimes, each proved equal to the model
(found in the torch.fx trace structured pruning uses, and defined in :mod:`.pruning.structured.fold`, re-exported
here): :func:`fold_selections` (channel selections absorbed into their consumer or moved before their BatchNorm; on
by default in :func:`export`), :func:`fold_batchnorm` (eval-mode BatchNorm into the conv that feeds it,
``fold_bn``) and the zero-padding of pruned widths (:func:`default_pad_to`: 8 for ONNX). All are export-time
transforms: their copies are not prunekit checkpoints (save the unfolded model). The ONNX writer and runtimes are
:mod:`.metrics.runtimes`.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .errors import PrunekitError, check_number
from .metrics._common import check_input_elements, input_checks
from .metrics.latency import (DEFAULT_BUDGET_S, DEFAULT_MAX_PASSES, LatencyComparison, _num_threads, _report,
                              interleaved_times)
from .metrics.runtimes import ONNX_HINT, onnx_session, quiet, require_onnx, time_ms, write_onnx  # noqa: F401
from .pruning.structured.fold import (ABSORB_MACS_PER_ELEMENT, EXAMPLE_BATCH, FOLD_TOL, ONNX_PAD_TO,  # noqa: F401
                                      _max_diff, as_deployed, default_input_size, default_pad_to, fold_batchnorm,
                                      fold_selections, shape_for_export)
from .utils.io import atomic_path

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torch.jit", "exported-program": "torch.export"}
CHECK_BATCH = 3


@dataclass
class ExportResult:
    """What :func:`export` wrote and measured. ``latency``: ``{batch: {"eager_ms", "runtime_ms", "eager",
    "runtime", "speedup", "skipped"}}`` (medians; ``eager``/``runtime``: median, quartiles and passes;
    ``speedup``: runtime against eager over the paired passes, with its verdict; None where not timed);
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
    selections: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[int, dict[str, Any]] = field(default_factory=dict)
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
# Export

def _load_runtime(fmt: str, path: Path, ort: Any, threads: int | None
                  ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any]:
    """``(run, loaded)``: a callable running the exported file on a CPU tensor (returning a CPU tensor), and the
    loaded object."""
    if fmt == "onnx":  # as many threads as PyTorch uses, for a like-for-like comparison
        return onnx_session(path, ort, threads)
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
           warmup: int = 1, repeats: int = DEFAULT_MAX_PASSES, latency_budget: float = DEFAULT_BUDGET_S,
           opset: int | None = None, tolerance: float = 1e-4,
           seed: int = 0, dynamic_batch: bool = True, fold_select: bool = True,
           pad_to: int | None = None) -> ExportResult:
    """Export ``model`` to ``path`` in ``format`` (``onnx``, ``torchscript``, ``exported-program``) and verify it.

    ``path``: a file with the format's suffix (``.onnx``, ``.pt``, ``.pt2``) or a folder (gets ``model<suffix>``);
    written atomically. ``input_size``: (C, H, W), default the model's natural input. The model is copied to the
    CPU in eval mode (the caller's model is not touched); ``fold_bn`` exports :func:`fold_batchnorm`'s copy.
    The file is loaded back in its runtime and compared with the (unfolded) model in PyTorch eager on random
    input: a relative max difference above ``tolerance`` is an error. ``latency_batch_sizes``: also time the
    runtime and PyTorch eager at these batch sizes, pass by pass in turn (after ``warmup`` untimed passes each),
    within ``latency_budget`` seconds each (at most ``repeats`` passes; ``latency_threads`` threads); a batch size
    one pass of which exceeds the budget is not timed (``latency[b]["skipped"]`` says why).
    ``dynamic_batch=False``: the file takes batches of exactly 2 (the runtime is timed at that batch size only).
    ``fold_select`` (default): export :func:`fold_selections`'s copy (no channel-selection gathers where they
    can be absorbed, the others moved in front of their BatchNorm); ``result.selections`` lists what it did.
    ``pad_to``: zero-pad pruned widths to multiples of it first (exact;
    :func:`prunekit.pruning.structured.pad.pad_widths`), for runtimes whose fast convs need channel blocks; the
    notes say how many groups were padded. Default (None): :data:`ONNX_PAD_TO` (8) for ``onnx`` when the model
    carries a prunekit channel plan (structurally pruned), else no padding (``pad_to=1`` never pads): ONNX
    Runtime's CPU convs run 8-channel blocks, and benchmarks/bench_pad.py measured padding faster or equal there.

    >>> import tempfile, prunekit
    >>> res = prunekit.export(prunekit.create_model("resnet20"), tempfile.mkdtemp(), format="torchscript")
    >>> res.path.endswith("model.pt"), res.max_abs_diff < 1e-4     # loaded back and compared with eager
    (True, True)
    """
    if format not in FORMATS:
        raise PrunekitError(f"export format must be one of {', '.join(FORMATS)}; got {format!r}")
    ort, has_script = require_onnx() if format == "onnx" else (None, False)
    for b in latency_batch_sizes:
        check_number("latency batch size", b, low=1, integer=True)
    if latency_threads is not None:
        check_number("latency_threads", latency_threads, low=1, integer=True)
    check_number("warmup", warmup, low=0, integer=True)
    check_number("repeats", repeats, low=1, integer=True)
    check_number("latency_budget", latency_budget, low=0.0, high=86400.0)
    check_number("tolerance", tolerance, low=0.0, high=float("inf"), low_open=True)
    check_number("seed", seed, integer=True)
    if opset is not None:
        check_number("opset", opset, low=7, high=100, integer=True)
    raw = input_size if input_size is not None else default_input_size(model)
    size = tuple(check_number("input_size", v, low=1, integer=True) for v in raw)
    if not size:
        raise PrunekitError(f"input_size must be positive integers, got {input_size!r}")
    check_input_elements((max(EXAMPLE_BATCH, CHECK_BATCH), *size))
    out_path = resolve_path(path, format)
    notes: list[str] = []
    ref = copy.deepcopy(model).to("cpu").float().eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn((EXAMPLE_BATCH, *size), generator=gen)
    check = torch.randn((CHECK_BATCH if dynamic_batch else EXAMPLE_BATCH, *size), generator=gen)
    with torch.no_grad(), input_checks(ref, example.shape):  # a wrong input_size is named; a bug keeps its traceback
        ref(example)
    target = shape_for_export(ref, format, example, pad_to=pad_to, fold_select=fold_select)
    folded, fold_diff, selections = [], None, target.prunekit_folded
    if target.prunekit_padded or (pad_to is not None and target.prunekit_pad > 1):
        notes.append(f"padded {len(target.prunekit_padded)} channel groups to multiples of {target.prunekit_pad}"
                     + ("" if pad_to is not None else ", the ONNX default (--pad-to 1: none)")
                     + (f"; {len(target.prunekit_pad_skipped)} could not be" if target.prunekit_pad_skipped else ""))
    if selections:
        acts = [d["action"] for d in selections]
        notes.append("channel selections: " + ", ".join(f"{acts.count(a)} {a}" for a in sorted(set(acts))))
    if fold_bn:
        target, folded = fold_batchnorm(target, example)
        fold_diff = _max_diff(ref, target, check)[0] if folded else 0.0
        notes.append(f"folded {len(folded)} BatchNorm layers into their convs")
    with quiet():
        try:
            with atomic_path(out_path) as tmp, torch.no_grad():
                if format == "onnx":
                    exporter = write_onnx(target, example, tmp, has_script, opset, dynamic_batch, notes)
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
    latency = _time_eager_and_runtime(ref, run, size, latency_batch_sizes, gen, threads=latency_threads,
                                      warmup=warmup, repeats=repeats, budget_s=latency_budget,
                                      runtime_batches=None if dynamic else {EXAMPLE_BATCH})
    return ExportResult(format=format, path=str(out_path), file_bytes=out_path.stat().st_size, exporter=exporter,
                        runtime=RUNTIMES[format], input_size=list(size), max_abs_diff=diff, max_abs_ref=peak,
                        dynamic_batch=dynamic, fold_bn=bool(fold_bn), folded=[list(p) for p in folded],
                        fold_max_abs_diff=fold_diff, selections=selections, latency=latency,
                        latency_threads=latency_threads if latency_threads is not None else torch.get_num_threads(),
                        notes=notes, loaded=loaded)


def _time_eager_and_runtime(ref: nn.Module, run: Any, size: Sequence[int], batch_sizes: Sequence[int],
                            gen: torch.Generator, *, threads: int | None, warmup: int, repeats: int,
                            budget_s: float, runtime_batches: set[int] | None) -> dict[int, dict[str, Any]]:
    """``{batch: {...}}`` (see :class:`ExportResult`): PyTorch eager and the runtime timed in turn at each batch
    size within ``budget_s`` per runtime (``runtime_batches``: the only batch sizes the file takes, None: any)."""
    latency: dict[int, dict[str, Any]] = {}
    per_sample_ms: float | None = None
    for b in sorted({int(v) for v in batch_sizes}):
        entry: dict[str, Any] = {"eager_ms": None, "runtime_ms": None, "eager": None, "runtime": None,
                                 "speedup": None, "skipped": None}
        latency[b] = entry
        if budget_s == 0:
            entry["skipped"] = "not timed (latency budget 0)"
            continue
        if per_sample_ms is not None and per_sample_ms * b / 1000.0 > budget_s:
            entry["skipped"] = (f"not timed: one pass would take about {per_sample_ms * b / 1000.0:.3g} s, over the "
                                f"{budget_s:g} s budget")
            continue
        x = torch.randn((b, *size), generator=gen)
        runs = {"eager": lambda x=x: ref(x)}
        if runtime_batches is None or b in runtime_batches:
            runs["runtime"] = lambda x=x: run(x)
        with _num_threads(threads) as n, torch.inference_mode(), quiet():
            start = time.perf_counter()
            warm = [max(time_ms(fn, 0, 1)[0] for _ in range(max(1, int(warmup)))) for fn in runs.values()]
            per_sample_ms = max(warm) / b
            if max(warm) / 1000.0 > budget_s:
                entry["skipped"] = f"not timed: one pass takes about {max(warm) / 1000.0:.3g} s, over the {budget_s:g} s budget"
                continue
            times, _ = interleaved_times(runs, budget_s=budget_s, max_passes=repeats, warmup=False,
                                         spent_s=time.perf_counter() - start)
        reps = {k: _report(t, b, "cpu", int(n), k) for k, t in times.items()}
        per_sample_ms = max(r.median_ms for r in reps.values()) / b
        for k, r in reps.items():
            entry[f"{k}_ms"] = r.median_ms
            entry[k] = {"median_ms": r.median_ms, "q1_ms": r.q1_ms, "q3_ms": r.q3_ms, "min_ms": r.min_ms,
                        "max_ms": r.max_ms, "repeats": r.repeats}
        if "runtime" in times:
            sp = LatencyComparison(b, budget_s, times=times).speedup("eager", "runtime")
            entry["speedup"] = None if sp is None else vars(sp)
    return latency
