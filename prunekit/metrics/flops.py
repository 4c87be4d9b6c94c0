"""FLOPs and MACs, dense and sparse-aware, measured with forward hooks on one forward pass.

What is counted: one forward pass of the model on a zero input of ``input_size`` (batch dimension first), on the
model's device and dtype, in eval mode (every submodule's ``training`` flag is restored afterwards). A forward
hook on every leaf module (and on every module that holds parameters directly) records each call; a module called
several times (a ReLU reused inside a block) is counted once per call. All numbers are **per sample**: the
batch-size total divided by ``input_size[0]``.

Conventions (always say which one a number uses):

* ``"macs"`` (ptflops / thop / most papers): conv ``Cin/groups*kh*kw*Cout*Hout*Wout``, linear ``in*out``; bias adds,
  BN, activations, pooling and dropout are 0. ``flops = 2*macs``.
* ``"rethinking"`` (rethinking-network-pruning): conv ``(2*nnz(W) + [bias]*Cout)*Hout*Wout``, linear
  ``2*nnz(W) + [bias]*out``, normalisation 2 per output element, activation 1 per element, pooling k^2 per output
  element (adaptive pooling: the actual window sizes, ``(Hin/Hout)*(Win/Wout)`` when they divide).

With ``sparse=True`` only weight entries that are not exactly zero count (``nnz(W)`` instead of ``numel(W)``).

Not counted: functional operations inside ``forward`` (``F.relu``, ``torch.cat``, residual additions, ``x.mean()``),
because they are not modules. Parameter-free modules without a formula (a channel-selection layer, ``Softmax``)
are reported as 0 with a note; so are the own parameters of a container module (e.g. a learned scale applied
functionally). A leaf module with parameters whose type has no formula (``nn.LSTM``) gets ``macs``/``flops``
``None``, is left out of the totals and is listed in ``FlopsReport.unknown_modules``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import PrunekitError, UnknownNameError
from ._common import check_shape, eval_mode, model_device, model_dtype
from ._rules import _OPAQUE, ZERO, Cost, first_tensor, module_cost
from .params import count_nonzero_params, count_params

CONVENTIONS = ("macs", "rethinking")

NOTE_NOT_CALLED = "not called in forward"
NOTE_UNKNOWN = "no formula for this module type: not counted"
NOTE_FREE = "parameter-free module without a formula: counted as 0"
NOTE_CONTAINER = "container with its own parameters: its functional arithmetic is not counted (0)"


@dataclass
class FlopsReport:
    """Result of :func:`count_flops`; ``macs``/``flops`` are per sample and exclude ``unknown_modules``."""

    macs: int
    flops: int
    per_layer: list[dict[str, Any]]
    convention: str
    sparse: bool
    unknown_modules: list[str] = field(default_factory=list)
    input_size: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary without the per-layer rows."""
        return {"macs": self.macs, "flops": self.flops, "convention": self.convention, "sparse": self.sparse,
                "unknown_modules": list(self.unknown_modules), "input_size": list(self.input_size)}


@dataclass
class _Record:
    name: str
    module: nn.Module
    leaf: bool
    calls: int = 0
    output_shape: Optional[list[int]] = None
    cost: Optional[Cost] = None
    unknown: bool = False
    note: str = ""


def _direct_params(m: nn.Module) -> list[torch.Tensor]:
    return list(m.parameters(recurse=False))


def _make_hook(rec: _Record):
    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        rec.calls += 1
        out = first_tensor(output)
        if out is not None:
            rec.output_shape = list(out.shape)
        cost = module_cost(module, inputs, output)
        if cost is None:
            rec.unknown = True
        elif not rec.unknown:
            prev = rec.cost or ZERO
            rec.cost = Cost(*(a + b for a, b in zip(prev, cost)))
    return hook


def _profile(model: nn.Module, input_size: Sequence[int]) -> tuple[tuple[int, ...], list[_Record]]:
    """Run one hooked forward pass; return the checked input size and one finished record per reported module."""
    dims = check_shape("input_size", input_size, min_dims=2)
    records: list[_Record] = []
    handles = []
    try:
        for name, m in model.named_modules():
            leaf = next(m.children(), None) is None
            if leaf or _direct_params(m) or isinstance(m, _OPAQUE):
                rec = _Record(name or "<model>", m, leaf)
                records.append(rec)
                handles.append(m.register_forward_hook(_make_hook(rec)))
        x = torch.zeros(dims, device=model_device(model), dtype=model_dtype(model))
        with eval_mode(model), torch.no_grad():
            try:
                model(x)
            except (RuntimeError, ValueError, IndexError) as e:
                raise PrunekitError(f"forward pass of {type(model).__name__} on an input of shape {list(dims)} "
                                    f"failed (wrong input_size?): {e}") from e
    finally:
        for h in handles:
            h.remove()
    return dims, _finish(records, dims[0])


def _finish(records: list[_Record], batch: int) -> list[_Record]:
    done = []
    for rec in records:
        has_params = bool(_direct_params(rec.module))
        if rec.calls == 0:
            if not has_params:
                continue
            rec.cost, rec.unknown, rec.note = ZERO, False, NOTE_NOT_CALLED
        elif rec.unknown:
            if has_params and (rec.leaf or isinstance(rec.module, _OPAQUE)):
                rec.cost, rec.note = None, NOTE_UNKNOWN
            else:
                rec.cost, rec.unknown = ZERO, False
                rec.note = NOTE_FREE if rec.leaf else NOTE_CONTAINER
        if rec.cost is not None:
            rec.cost = Cost(*((v + batch // 2) // batch for v in rec.cost))
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
    return macs, cost.sparse_rflops if sparse else cost.rflops


def _base_row(rec: _Record) -> dict[str, Any]:
    params = _direct_params(rec.module)
    return {"name": rec.name, "type": type(rec.module).__name__, "output_shape": rec.output_shape,
            "calls": rec.calls, "params": int(sum(p.numel() for p in params)),
            "nonzero_params": int(sum(int(torch.count_nonzero(p.detach())) for p in params))}


def count_flops(model: nn.Module, input_size: Sequence[int] = (1, 3, 32, 32), *, sparse: bool = False,
                convention: str = "macs") -> FlopsReport:
    """Count MACs and FLOPs of ``model`` for one input of ``input_size`` (batch first; numbers per sample).

    ``sparse=True`` counts only non-zero weights of conv/linear layers. ``convention`` is ``"macs"``
    (``flops = 2*macs``) or ``"rethinking"`` (see the module docstring). Rows in ``per_layer``: name, type,
    output_shape, calls, params, nonzero_params, macs, flops, note (``params`` = the module's own parameters,
    frozen ones included).
    """
    _check_convention(convention)
    dims, records = _profile(model, input_size)
    rows, unknown = [], []
    total_macs = total_flops = 0
    for rec in records:
        macs, flops = _macs_flops(rec.cost, sparse, convention)
        if rec.cost is None:
            unknown.append(rec.name)
        else:
            total_macs += macs
            total_flops += flops
        rows.append({**_base_row(rec), "macs": macs, "flops": flops, "note": rec.note})
    return FlopsReport(total_macs, total_flops, rows, convention, bool(sparse), unknown, dims)


def layer_table(model: nn.Module, input_size: Sequence[int], *, convention: str = "macs") -> list[dict[str, Any]]:
    """One row per module with parameters or compute: name, type, output_shape, calls, params, nonzero_params,
    macs, sparse_macs, flops, sparse_flops (in ``convention``), note. Unknown types have ``None`` costs."""
    _check_convention(convention)
    _, records = _profile(model, input_size)
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
    _, records = _profile(model, input_size)
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
