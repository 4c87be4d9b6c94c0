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
(found in the torch.fx trace structured pruning uses): :func:`fold_selections` (channel selections absorbed into
their consumer or moved before their BatchNorm; on by default in :func:`export`) and :func:`fold_batchnorm`
(eval-mode BatchNorm into the conv that feeds it, ``fold_bn``). Both are export-time transforms: their copies are
not prunekit checkpoints (save the unfolded model). The ONNX writer and runtimes are :mod:`.metrics.runtimes`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .errors import PrunekitError, check_number
from .metrics._common import check_input_elements, input_checks, model_device, model_dtype
from .metrics.latency import _num_threads
from .metrics.runtimes import ONNX_HINT, onnx_session, quiet, require_onnx, time_ms, write_onnx  # noqa: F401
from .utils.io import atomic_path

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torch.jit", "exported-program": "torch.export"}
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
    selections: list[dict[str, Any]] = field(default_factory=list)
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

def _traced(src: nn.Module, what: str) -> tuple[Any, dict[str, nn.Module], dict[str, int], set[str]]:
    """``(fx graph module, modules by name, calls per module, modules read as attributes)`` of ``src``, traced as
    structured pruning traces it."""
    from .pruning.structured import rules as R  # noqa: F401  (importing the package registers the zoo rules)
    from .pruning.structured.trace import trace

    try:
        gm = trace(src, leaf_paths=set(), has_rule=lambda m: R.module_rule_for(m) is not None)
    except PrunekitError as exc:
        raise PrunekitError(f"{what}: {exc}") from None
    calls: dict[str, int] = {}
    attr_reads: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        elif node.op == "get_attr":
            attr_reads.add(str(node.target).rpartition(".")[0])
    return gm, dict(src.named_modules()), calls, attr_reads


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of ``model`` (eval mode) in which every BatchNorm fed by a conv is folded into that conv.

    Pairs come from the torch.fx trace of structured pruning: a ``Conv1d/2d/3d`` node whose *only* user is a
    ``BatchNorm`` node of the same width (nothing else reads the conv output), each module called once and never
    read as an attribute, the BN tracking running statistics. The conv gets ``W·γ/√(var+ε)`` and bias
    ``(b − mean)·γ/√(var+ε) + β``; the BN becomes ``nn.Identity``. Returns ``(copy, [(conv, bn), ...])``. With
    ``example`` the copy is checked against the model (relative max difference ≤ 1e-5, else PrunekitError).
    """
    src = copy.deepcopy(model).eval()
    gm, modules, calls, attr_reads = _traced(src, "fold_bn")
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


# ---------------------------------------------------------------------------------------------------------------
# Folding channel selections

@torch.no_grad()
def fold_selections(model: nn.Module, example: torch.Tensor | None = None, *, absorb: str | bool = "auto",
                    input_size: Sequence[int] | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) without the runtime cost of its :class:`ChannelSelection` layers, exact.

    A selection that keeps every channel becomes ``nn.Identity``. Otherwise the selected tensor's source (the
    residual stream or DenseNet concatenation feeding the BatchNorm before the selection) is shared with other
    readers, so the gather cannot be sliced away; two exact rewrites remove or cheapen it:

    * **absorb**: the one conv (groups 1) or linear layer that reads the selection's output (through ReLU,
      dropout, global average pooling + flatten) takes the full width, with zero weights on the channels the
      selection dropped; the selection becomes ``nn.Identity`` and no index op remains (ONNX Runtime keeps its
      blocked conv layout through BN -> ReLU -> conv), at the price of that layer's MACs on the dropped channels;
    * **reorder**: the gather moves in front of the BatchNorm that feeds it (which is sliced to the kept
      channels: γ, β, running mean/var), so BN and ReLU run on the kept channels only; one ``index_select`` on a
      constant index remains.

    ``absorb``: ``True`` / ``False`` for every selection, or ``"auto"``: absorb where the consumer's extra MACs
    per sample are at most :data:`ABSORB_MACS_PER_ELEMENT` times the elements of the selection's input (the
    memory traffic a gather and the layout changes around it cost), else reorder. Selections matching neither
    pattern stay. ``copy.prunekit_folded`` lists what was done. The copy is checked against the model on
    ``example`` (default: random input of ``input_size`` or the model's natural size; relative max difference
    ≤ 1e-5, else PrunekitError). An export/benchmark-time transform: the copy is not a prunekit checkpoint.
    """
    from .models.layers import ChannelSelection
    from .pruning.structured.plan import _slice_out
    from .pruning.structured.zoo_rules import selection_consumer

    if absorb not in (True, False, "auto"):
        raise PrunekitError(f"fold_selections: absorb must be True, False or 'auto', got {absorb!r}")
    out = copy.deepcopy(model).eval()
    sels = [n for n, m in out.named_modules() if isinstance(m, ChannelSelection)]
    done: list[dict[str, Any]] = []
    if not sels:
        out.prunekit_folded = done
        return out
    if example is None:
        size = tuple(input_size) if input_size is not None else default_input_size(model)
        example = torch.randn((EXAMPLE_BATCH, *size), generator=torch.Generator().manual_seed(0))
    example = example.to(model_device(model), model_dtype(model))
    gm, modules, calls, attr_reads = _traced(out, "fold_selections")
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [modules[n].register_forward_hook(
        lambda m, a, o, n=n: shapes.__setitem__(n, tuple(a[0].shape))) for n in sels]
    try:
        out(example)
    finally:
        for h in hooks:
            h.remove()
    for node in gm.graph.nodes:
        name = str(node.target)
        if node.op != "call_module" or name not in sels:
            continue
        sel = modules[name]
        sel.refresh()
        if sel.all_kept:
            _set_module(out, name, nn.Identity())
            done.append({"selection": name, "action": "identity"})
            continue
        if calls.get(name) != 1 or name in attr_reads or name not in shapes:
            continue
        kept, full = sel.kept_index.clone(), int(sel.indexes.numel())
        cons = selection_consumer(node, modules, calls)
        cons_ok = cons is not None and cons not in attr_reads
        if cons_ok and absorb == "auto":
            layer = modules[cons]
            per_in = layer.out_features if isinstance(layer, nn.Linear) else \
                layer.out_channels * math.prod(layer.kernel_size)
            spatial = math.prod(shapes[name][2:]) if isinstance(layer, nn.modules.conv._ConvNd) else 1
            extra = (full - kept.numel()) * per_in * spatial
            cons_ok = extra <= ABSORB_MACS_PER_ELEMENT * full * math.prod(shapes[name][2:])
        if cons_ok and absorb is not False:
            layer = modules[cons]
            w = layer.weight
            wide = w.new_zeros((w.shape[0], full, *w.shape[2:]))
            wide.index_copy_(1, kept.to(w.device), w)
            layer.weight = nn.Parameter(wide, requires_grad=w.requires_grad)
            if isinstance(layer, nn.Linear):
                layer.in_features = full
            else:
                layer.in_channels = full
            _set_module(out, name, nn.Identity())
            done.append({"selection": name, "action": "absorbed", "into": cons})
            continue
        src = node.args[0] if node.args else None
        bn = modules.get(str(getattr(src, "target", ""))) if getattr(src, "op", None) == "call_module" else None
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and len(src.users) == 1 and \
                calls.get(str(src.target)) == 1 and str(src.target) not in attr_reads and bn.num_features == full:
            sliced = copy.deepcopy(bn)
            _slice_out(str(src.target), sliced, kept, {"out": kept.tolist(), "out_full": full})
            _set_module(out, str(src.target), nn.Sequential(sel, sliced))
            _set_module(out, name, nn.Identity())
            done.append({"selection": name, "action": "moved before", "bn": str(src.target)})
    out.prunekit_folded = done
    diff, ref = _max_diff(model, out, example)
    if diff > FOLD_TOL * max(1.0, ref):
        raise PrunekitError(f"fold_selections: the folded model differs from the model by {diff:.3g} (max "
                            f"|output| {ref:.3g})")
    return out


ABSORB_MACS_PER_ELEMENT = 32


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |a(x) - b(x)|, max |a(x)|), both in eval mode: the structured pruning's exactness helper."""
    from .pruning.structured.verify import output_gap

    return output_gap(a, b, (x,))


# ---------------------------------------------------------------------------------------------------------------
# Export

def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """The model's natural input (C, H, W): a zoo model's (with its ``in_channels``), a factory model's recorded
    ``input_size``; anything else must say it."""
    from .models import natural_input_size

    natural = natural_input_size(model)
    if natural is not None:
        return natural
    raise PrunekitError(f"export: pass input_size=(C, H, W) for this {type(model).__name__} (CLI: --input-size)")


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


ONNX_PAD_TO = 8  # ONNX Runtime's CPU conv channel block (docs/BENCHMARKS.md, benchmarks/bench_pad.py)


def default_pad_to(model: nn.Module, format: str) -> int:
    """The multiple :func:`export` pads to when ``pad_to`` is not given: :data:`ONNX_PAD_TO` for ONNX of a model
    with a prunekit channel plan, else 1 (no padding)."""
    plan = getattr(model, "prunekit_plan", None)
    return ONNX_PAD_TO if format == "onnx" and isinstance(plan, dict) and plan.get("groups") else 1


def export(model: nn.Module, path: str | Path, format: str = "onnx", input_size: Sequence[int] | None = None,
           fold_bn: bool = False, *, latency_batch_sizes: Sequence[int] = (), latency_threads: int | None = None,
           warmup: int = 5, repeats: int = 30, opset: int | None = None, tolerance: float = 1e-4,
           seed: int = 0, dynamic_batch: bool = True, fold_select: bool = True,
           pad_to: int | None = None) -> ExportResult:
    """Export ``model`` to ``path`` in ``format`` (``onnx``, ``torchscript``, ``exported-program``) and verify it.

    ``path``: a file with the format's suffix (``.onnx``, ``.pt``, ``.pt2``) or a folder (gets ``model<suffix>``);
    written atomically. ``input_size``: (C, H, W), default the model's natural input. The model is copied to the
    CPU in eval mode (the caller's model is not touched); ``fold_bn`` exports :func:`fold_batchnorm`'s copy.
    The file is loaded back in its runtime and compared with the (unfolded) model in PyTorch eager on random
    input: a relative max difference above ``tolerance`` is an error. ``latency_batch_sizes``: also time the
    runtime and PyTorch eager at these batch sizes (median of ``repeats``, ``latency_threads`` threads each).
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
    target, folded, fold_diff, selections = ref, [], None, []
    pad = default_pad_to(model, format) if pad_to is None else check_number("pad_to", pad_to, low=1, high=4096,
                                                                             integer=True)
    if pad > 1:
        from .pruning.structured.pad import pad_widths

        target = pad_widths(ref, pad, size)
        if target.prunekit_padded or pad_to is not None:
            notes.append(f"padded {len(target.prunekit_padded)} channel groups to multiples of {pad}"
                         + ("" if pad_to is not None else ", the ONNX default (--pad-to 1: none)")
                         + (f"; {len(target.prunekit_pad_skipped)} could not be" if target.prunekit_pad_skipped
                            else ""))
    if fold_select:
        target = fold_selections(target, example)
        selections = target.prunekit_folded
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
    latency: dict[int, dict[str, float | None]] = {}
    for b in latency_batch_sizes:
        x = torch.randn((int(b), *size), generator=gen)
        with _num_threads(latency_threads), torch.inference_mode():
            eager_ms = statistics.median(time_ms(lambda: ref(x), warmup, repeats))
            runtime_ms = None
            if dynamic or b == EXAMPLE_BATCH:
                with quiet():
                    runtime_ms = statistics.median(time_ms(lambda: run(x), warmup, repeats))
        latency[int(b)] = {"eager_ms": eager_ms, "runtime_ms": runtime_ms}
    return ExportResult(format=format, path=str(out_path), file_bytes=out_path.stat().st_size, exporter=exporter,
                        runtime=RUNTIMES[format], input_size=list(size), max_abs_diff=diff, max_abs_ref=peak,
                        dynamic_batch=dynamic, fold_bn=bool(fold_bn), folded=[list(p) for p in folded],
                        fold_max_abs_diff=fold_diff, selections=selections, latency=latency,
                        latency_threads=latency_threads if latency_threads is not None else torch.get_num_threads(),
                        notes=notes, loaded=loaded)
