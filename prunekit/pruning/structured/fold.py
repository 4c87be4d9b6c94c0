"""Exact export-time rewrites of a model for the runtimes it is deployed on, each proved equal to the model.

* :func:`fold_selections`: channel selections absorbed into their consumer or moved before their BatchNorm;
* :func:`fold_batchnorm`: eval-mode BatchNorm folded into the conv that feeds it;
* :func:`default_pad_to` / :data:`ONNX_PAD_TO`: the multiple the ONNX export zero-pads pruned widths to
  (:func:`.pad.pad_widths`);
* :func:`as_deployed`: a model shaped as ``prunekit.export`` ships it to a runtime (padding, then folding), so that
  what is measured (e.g. by the latency target) is what is deployed.

The pairs and selections come from the torch.fx trace structured pruning uses. The copies are not prunekit
checkpoints (save the unfolded model). :func:`prunekit.export` applies them; ``prunekit.deploy`` re-exports them.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
import torch.nn as nn

from ...errors import PrunekitError
from ...metrics._common import model_device, model_dtype

FOLD_TOL = 1e-5
EXAMPLE_BATCH = 2  # the batch of the example input the rewrites are checked on (and export traces with)


def _traced(src: nn.Module, what: str) -> tuple[Any, dict[str, nn.Module], dict[str, int], set[str]]:
    """``(fx graph module, modules by name, calls per module, modules read as attributes)`` of ``src``, traced as
    structured pruning traces it."""
    from . import rules as R  # the package (imported first) has registered the zoo rules
    from .trace import trace

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
    from ...models.layers import ChannelSelection
    from .plan import _slice_out
    from .zoo_rules import selection_consumer

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
    from .verify import output_gap

    return output_gap(a, b, (x,))


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """The model's natural input (C, H, W): a zoo model's (with its ``in_channels``), a factory model's recorded
    ``input_size``; anything else must say it."""
    from ...models import natural_input_size

    natural = natural_input_size(model)
    if natural is not None:
        return natural
    raise PrunekitError(f"export: pass input_size=(C, H, W) for this {type(model).__name__} (CLI: --input-size)")


ONNX_PAD_TO = 8  # ONNX Runtime's CPU conv channel block (docs/BENCHMARKS.md, benchmarks/bench_pad.py)


def default_pad_to(model: nn.Module, format: str) -> int:
    """The multiple :func:`export` pads to when ``pad_to`` is not given: :data:`ONNX_PAD_TO` for ONNX of a model
    with a prunekit channel plan, else 1 (no padding)."""
    plan = getattr(model, "prunekit_plan", None)
    return ONNX_PAD_TO if format == "onnx" and isinstance(plan, dict) and plan.get("groups") else 1


def shape_for_export(model: nn.Module, format: str, example: torch.Tensor | None = None, *,
                     pad_to: int | None = None, fold_select: bool = True,
                     input_size: Sequence[int] | None = None) -> nn.Module:
    """What ``prunekit.export`` writes to ``format`` (exact): ``model`` zero-padded to multiples of ``pad_to``
    (default :func:`default_pad_to`; 1: none), then its channel selections folded (``fold_select``,
    ``absorb="auto"``). The result carries ``prunekit_pad`` (the multiple used), ``prunekit_padded`` /
    ``prunekit_pad_skipped`` (empty without padding) and ``prunekit_folded``."""
    from ...errors import check_number
    from .pad import pad_widths

    pad = default_pad_to(model, format) if pad_to is None else check_number("pad_to", pad_to, low=1, high=4096,
                                                                             integer=True)
    size = tuple(example.shape[1:]) if example is not None else input_size
    out = pad_widths(model, pad, size) if pad > 1 else model
    if fold_select:
        out = fold_selections(out, example, input_size=input_size)
    out.prunekit_pad = pad
    out.prunekit_padded = getattr(out, "prunekit_padded", []) if pad > 1 else []
    out.prunekit_pad_skipped = getattr(out, "prunekit_pad_skipped", []) if pad > 1 else []
    out.prunekit_folded = getattr(out, "prunekit_folded", [])
    return out


def as_deployed(model: nn.Module, runtime: str, example: torch.Tensor | None = None, *,
                input_size: Sequence[int] | None = None) -> nn.Module:
    """``model`` as ``prunekit.export`` ships it to ``runtime``: for ``onnxruntime`` :func:`shape_for_export`'s
    ONNX copy (pruned widths padded to 8, selections folded); for the torch runtimes (``eager``, ``compile``: the
    model is run as it is) ``model`` itself."""
    if runtime != "onnxruntime":
        return model
    return shape_for_export(model, "onnx", example, input_size=input_size)
