"""FLOPs and MACs, dense and sparse-aware, counted per ATen operator on one forward pass.

What is counted: one forward pass of the model on a zero input of ``input_size`` (batch dimension first), on the
model's device and dtype, in eval mode under ``torch.no_grad`` (every submodule's ``training`` flag is restored
afterwards). A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees **every** ATen operator the forward
runs, module or functional (``F.relu``, residual additions, ``F.avg_pool2d``, ``torch.cat``, ``q @ k.T``,
``F.scaled_dot_product_attention``, the fused ``nn.MultiheadAttention`` fast path, ...), and prices it with the
rules of :mod:`prunekit.metrics._rules`. Module pre/post forward hooks keep a stack of the modules executing, so
each operator is attributed to the innermost one for the per-layer table: a leaf's row is its own operators, a
container's row (a ResNet block) is the functional arithmetic of its own ``forward`` (its children have their
own rows); a module called several times is counted once per call. All numbers are **per sample**: the
batch-size total divided by ``input_size[0]``.

Only operators on data computed from the input count: operators whose inputs are all parameters, buffers or
constants (a mask multiplied into a weight, a channel-selection index computed from its buffer) could be
precomputed and cost 0.

Conventions (always say which one a number uses):

* ``"macs"`` (ptflops / thop / fvcore style): MACs of convolutions (``Cin/groups*kh*kw*Cout*Hout*Wout``), matrix
  products (``mm``/``addmm``/``bmm``/``baddbmm``/``mv``: ``M*K*N``; linear = ``in*out`` per row) and attention:
  ``F.scaled_dot_product_attention`` counts its two matmuls ``batch*heads*Lq*Lk*(E + Ev)``, as do explicit
  ``q @ k.transpose(-2, -1)`` / ``attn @ v``. Bias adds, normalisation, activations, pooling, softmax, adds are 0.
  ``flops = 2*macs`` (what ``torch.utils.flop_counter.FlopCounterMode`` reports).
* ``"rethinking"``: exactly what rethinking-network-pruning's counter (``compute_flops.print_model_param_flops``,
  forward hooks on leaf modules) counts, so Scratch-B budgets equal the seed's: ``nn.Conv2d``
  ``(2*nnz(W) + [bias]*Cout)*Hout*Wout``, ``nn.Linear`` ``2*numel(W) + bias`` per row, ``nn.BatchNorm2d`` 2 per
  element, ``nn.ReLU`` 1 per element, ``nn.MaxPool2d``/``nn.AvgPool2d`` ``k^2`` per output element,
  ``nn.Upsample`` 12 per output element; a module called twice counts twice. What the hooks cannot see costs 0:
  functional ops (``F.relu``, residual ``out + x``, ``F.avg_pool2d``), adaptive pooling, other module types
  (``BatchNorm1d``, ``ReLU6``, attention, ...). Differences from the seed, none of which touch its models: a Linear
  on inputs with more than 2 dims counts every row (the seed: one), ``sparse=True`` counts a Linear's non-zero
  weights (the seed prunes and counts conv weights only; its dense count uses ``nnz`` of conv weights always).
* ``"all-ops"`` (prunekit's complete count at Rethinking's per-element prices): conv ``(2*nnz(W) + [bias]*Cout)*
  Hout*Wout``, linear ``2*nnz(W) + [bias]*out`` per row, other matmuls/attention ``2*MACs``, normalisation 2 per
  output element, activation (``nn.ReLU`` or ``F.relu`` alike) and every other pointwise op (residual ``add``,
  ``mul``, ``sub``, ``div``, ...) 1 per output element, pooling k^2 per output element (adaptive pooling: the
  actual window sizes, ``(Hin/Hout)*(Win/Wout)`` when they divide; a global ``x.mean((2, 3))`` 1 per input
  element), softmax 2 per element, fused attention 3 per attention score (scale + softmax; 4 with a mask).
  ``torch.cat``, padding, views and indexing are free. It sees every operator of the forward, module or functional.

With ``sparse=True`` only weight entries that are not exactly zero count: a convolution or matmul with a weight
operand costs ``nnz(W) x positions`` instead of ``numel(W) x positions`` (bias adds and everything else are
unchanged; products of two activations, such as attention, are dense).

A module in whose own forward an operator without a rule ran (e.g. ``aten.mkldnn_rnn_layer`` of ``nn.LSTM`` on
CPU) gets ``macs``/``flops`` ``None``, is left out of the totals and is listed in ``FlopsReport.unknown_modules``;
the operator names are in ``FlopsReport.uncounted_ops`` and in the row's note.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from ..errors import PrunekitError, UnknownNameError
from ._common import check_input_elements, check_shape, eval_mode, input_checks, model_device, model_dtype
from ._rules import ZERO, Cost, first_tensor, module_hook_cost, op_cost, op_name
from .params import count_nonzero_params, count_params

CONVENTIONS = ("macs", "rethinking", "all-ops")

NOTE_NOT_CALLED = "not called in forward"
NOTE_UNKNOWN = "no cost rule for {ops}: not counted"
NOTE_FREE = "no arithmetic: 0"
NOTE_CONTAINER = "functional ops of its own forward (children have their own rows)"


@dataclass
class FlopsReport:
    """Result of :func:`count_flops`; ``macs``/``flops`` are per sample and exclude ``unknown_modules``.

    ``uncounted_ops``: the ATen operators without a cost rule that made those modules unknown. ``per_op``: per
    ATen operator (``"aten.relu"``), its per-sample ``{"macs": ..., "flops": ...}`` over the counted modules
    (operators that cost nothing in this convention are left out).
    """

    macs: int
    flops: int
    per_layer: list[dict[str, Any]]
    convention: str
    sparse: bool
    unknown_modules: list[str] = field(default_factory=list)
    input_size: tuple[int, ...] = ()
    uncounted_ops: list[str] = field(default_factory=list)
    per_op: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary without the per-layer rows."""
        return {"macs": self.macs, "flops": self.flops, "convention": self.convention, "sparse": self.sparse,
                "unknown_modules": list(self.unknown_modules), "uncounted_ops": list(self.uncounted_ops),
                "input_size": list(self.input_size)}


@dataclass
class _Record:
    name: str
    module: nn.Module
    leaf: bool
    calls: int = 0
    output_shape: Optional[list[int]] = None
    cost: Optional[Cost] = ZERO
    unknown_ops: set[str] = field(default_factory=set)
    ops: dict[str, Cost] = field(default_factory=dict)
    note: str = ""


def _add(a: Cost, b: Cost) -> Cost:
    return Cost(*(x + y for x, y in zip(a, b)))


def _per_sample(cost: Cost, batch: int) -> Cost:
    return Cost(*((v + batch // 2) // batch for v in cost))


def _direct_params(m: nn.Module) -> list[torch.Tensor]:
    return list(m.parameters(recurse=False))


class _OpCounter(TorchDispatchMode):
    """Prices every ATen call on input-derived data and adds it to the innermost executing module's record."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._dynamo.disable unless this says no: that would
        # import torch._dynamo (seconds) on the first count in a process, for nothing (we never compile).
        return False

    def __init__(self, stack: list[_Record], activations: WeakIdKeyDictionary) -> None:
        super().__init__()
        self.stack = stack
        self.activations = activations

    def _is_weight(self, t: torch.Tensor) -> bool:
        return t not in self.activations

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not any(t in self.activations for t in inputs):
            return out  # parameters / buffers / constants only: precomputable, free
        cost = op_cost(func, args, kwargs, out, self._is_weight)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.activations[t] = True
        rec = self.stack[-1]
        if cost is None:
            rec.unknown_ops.add(op_name(func))
        elif cost != ZERO:
            rec.cost = _add(rec.cost, cost)
            name = op_name(func)
            rec.ops[name] = _add(rec.ops.get(name, ZERO), cost)
        return out


def _hooks(rec: _Record, stack: list[_Record], nnz: Optional[int]):
    def pre(module: nn.Module, inputs: tuple) -> None:
        if isinstance(module, nn.modules.conv._ConvNd):
            inp = first_tensor(inputs)
            if inp is not None and inp.dim() == module.weight.dim() - 1:
                raise PrunekitError(f"{type(module).__name__} got an unbatched input of shape {list(inp.shape)}: "
                                    "input_size must start with the batch dimension, e.g. (1, 3, 32, 32)")
        rec.calls += 1
        stack.append(rec)

    def post(module: nn.Module, inputs: tuple, output: Any) -> None:
        if stack and stack[-1] is rec:
            stack.pop()
        out = first_tensor(output)
        if out is not None:
            rec.output_shape = list(out.shape)
        if rec.leaf:  # the "rethinking" convention: what the seed's forward hooks count
            dense, sparse = module_hook_cost(module, inputs, output, nnz)
            if dense or sparse:
                hook = Cost(0, 0, 0, 0, dense, sparse)
                rec.cost = _add(rec.cost, hook)
                key = f"nn.{type(module).__name__}"
                rec.ops[key] = _add(rec.ops.get(key, ZERO), hook)

    return pre, post


def _profile(model: nn.Module, input_size: Sequence[int]) -> tuple[tuple[int, ...], list[_Record], dict[str, Cost]]:
    """Run one counted forward pass; return the checked input size and one finished record per reported module."""
    dims = check_shape("input_size", input_size, min_dims=2)
    check_input_elements(dims)
    records: list[_Record] = []
    stack: list[_Record] = []
    handles = []
    root: Optional[_Record] = None
    try:
        for name, m in model.named_modules():
            rec = _Record(name or "<model>", m, next(m.children(), None) is None)
            root = root or rec
            records.append(rec)
            weight = getattr(m, "weight", None) if isinstance(m, (nn.Conv2d, nn.Linear)) else None
            nnz = int(torch.count_nonzero(weight.detach())) if isinstance(weight, torch.Tensor) else None
            pre, post = _hooks(rec, stack, nnz)
            handles.append(m.register_forward_pre_hook(pre, prepend=True))
            handles.append(m.register_forward_hook(post, always_call=True))
        stack.append(root)  # operators run outside any module's forward (none, normally) go to the model
        x = torch.zeros(dims, device=model_device(model), dtype=model_dtype(model))
        activations = WeakIdKeyDictionary()
        activations[x] = True
        with eval_mode(model), torch.no_grad(), input_checks(model, dims), _OpCounter(stack, activations):
            model(x)
    finally:
        for h in handles:
            h.remove()
    done = _finish(records, dims[0])
    per_op: dict[str, Cost] = {}
    for rec in done:
        if rec.cost is not None:
            for name, cost in rec.ops.items():
                per_op[name] = _add(per_op.get(name, ZERO), cost)
    return dims, done, {k: _per_sample(v, dims[0]) for k, v in sorted(per_op.items())}


def _finish(records: list[_Record], batch: int) -> list[_Record]:
    done = []
    for rec in records:
        has_params = bool(_direct_params(rec.module))
        if rec.calls == 0:
            if not has_params:
                continue
            rec.cost, rec.note = ZERO, NOTE_NOT_CALLED
        elif rec.unknown_ops:
            rec.cost, rec.note = None, NOTE_UNKNOWN.format(ops=", ".join(sorted(rec.unknown_ops)))
        elif not any(rec.cost):
            if not (rec.leaf or has_params):
                continue
            rec.note = NOTE_FREE if not has_params else ""
        elif not rec.leaf:
            rec.note = NOTE_CONTAINER
        if rec.cost is not None:
            rec.cost = _per_sample(rec.cost, batch)
        done.append(rec)
    return done


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise UnknownNameError(f"unknown FLOPs convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
    return convention


def _macs_flops(cost: Optional[Cost], sparse: bool, convention: str) -> tuple[Optional[int], Optional[int]]:
    if cost is None:
        return None, None
    macs = cost.sparse_macs if sparse else cost.macs
    if convention == "macs":
        return macs, 2 * macs
    if convention == "rethinking":
        return macs, cost.sparse_hflops if sparse else cost.hflops
    return macs, cost.sparse_rflops if sparse else cost.rflops


def _base_row(rec: _Record) -> dict[str, Any]:
    params = _direct_params(rec.module)
    return {"name": rec.name, "type": type(rec.module).__name__, "output_shape": rec.output_shape,
            "calls": rec.calls, "params": int(sum(p.numel() for p in params)),
            "nonzero_params": int(sum(int(torch.count_nonzero(p.detach())) for p in params))}


def count_flops(model: nn.Module, input_size: Sequence[int] = (1, 3, 32, 32), *, sparse: bool = False,
                convention: str = "macs") -> FlopsReport:
    """Count MACs and FLOPs of ``model`` for one input of ``input_size`` (batch first; numbers per sample).

    ``sparse=True`` counts only non-zero weights of conv/linear/matmul weights. ``convention`` is ``"macs"``
    (``flops = 2*macs``), ``"rethinking"`` (the seed's module hooks) or ``"all-ops"`` (every operator at
    Rethinking's prices), see the module docstring. Rows in ``per_layer``: name, type,
    output_shape, calls, params, nonzero_params, macs, flops, note (``params`` = the module's own parameters,
    frozen ones included; a container's row holds only the operators of its own ``forward``). ``per_op`` maps
    each ATen operator (``"aten.relu"``; for ``"rethinking"``: each hooked module type, ``"nn.ReLU"``) to its
    per-sample ``{"macs", "flops"}`` over the counted modules.

    >>> import torch.nn as nn, prunekit
    >>> rep = prunekit.count_flops(nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 32, 32))
    >>> rep.macs, rep.flops                      # 8 * 32 * 32 outputs, 3 * 3 * 3 MACs each
    (221184, 442368)
    """
    _check_convention(convention)
    dims, records, per_op = _profile(model, input_size)
    rows, unknown, ops = [], [], set()
    total_macs = total_flops = 0
    for rec in records:
        macs, flops = _macs_flops(rec.cost, sparse, convention)
        if rec.cost is None:
            unknown.append(rec.name)
            ops |= rec.unknown_ops
        else:
            total_macs += macs
            total_flops += flops
        rows.append({**_base_row(rec), "macs": macs, "flops": flops, "note": rec.note})
    by_op = {}
    for name, cost in per_op.items():
        if name.startswith("nn.") != (convention == "rethinking"):
            continue  # module types for the hook convention, ATen operators for the others
        macs, flops = _macs_flops(cost, sparse, convention)
        if macs or flops:
            by_op[name] = {"macs": macs, "flops": flops}
    return FlopsReport(total_macs, total_flops, rows, convention, bool(sparse), unknown, dims, sorted(ops), by_op)


def layer_table(model: nn.Module, input_size: Sequence[int], *, convention: str = "macs") -> list[dict[str, Any]]:
    """One row per module with parameters or compute: name, type, output_shape, calls, params, nonzero_params,
    macs, sparse_macs, flops, sparse_flops (in ``convention``), note. Modules with uncounted ops have ``None``
    costs."""
    _check_convention(convention)
    _, records, _ = _profile(model, input_size)
    rows = []
    for rec in records:
        macs, flops = _macs_flops(rec.cost, False, convention)
        smacs, sflops = _macs_flops(rec.cost, True, convention)
        row = {**_base_row(rec), "macs": macs, "sparse_macs": smacs, "flops": flops, "sparse_flops": sflops,
               "note": rec.note}
        if row["params"] or rec.cost is None or any(rec.cost):
            rows.append(row)
    return rows


def summarize(model: nn.Module, input_size: Sequence[int], *, convention: str = "macs") -> dict[str, Any]:
    """Size and compute of ``model`` for ``summary.json``: params, nonzero_params (trainable), macs, flops,
    sparse_macs, sparse_flops (per sample, ``flops`` in ``convention``) and ``flops_convention``."""
    _check_convention(convention)
    _, records, _ = _profile(model, input_size)
    totals = {"macs": 0, "flops": 0, "sparse_macs": 0, "sparse_flops": 0}
    for rec in records:
        if rec.cost is None:
            continue
        macs, flops = _macs_flops(rec.cost, False, convention)
        smacs, sflops = _macs_flops(rec.cost, True, convention)
        totals["macs"] += macs
        totals["flops"] += flops
        totals["sparse_macs"] += smacs
        totals["sparse_flops"] += sflops
    return {"params": count_params(model), "nonzero_params": count_nonzero_params(model), **totals,
            "flops_convention": convention}
