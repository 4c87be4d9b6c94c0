"""Depth pruning: whole residual blocks removed, chosen by block influence on calibration data.

Block influence (ShortGPT, Men et al. 2024): ``BI_i = 1 − E_tokens[cos(x_in_i, x_out_i)]``, where ``x_in`` and
``x_out`` are the hidden states a block reads and writes (for a conv block, per spatial position over the
channels); the blocks that change their input least go first. Only blocks whose output has their input's shape can
be skipped. The exactness reference is the unpruned model in which forward hooks make the removed blocks return
their input.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import PrunekitError
from ..calibrated.blocks import find_blocks
from .capture import as_inputs, call_model
from .plan import apply_plan, new_plan
from .result import StructuredResult, carry_identity
from .verify import output_difference

log = logging.getLogger(__name__)


def _first(v: Any) -> torch.Tensor | None:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)) and v and isinstance(v[0], torch.Tensor):
        return v[0]
    return None


def _hidden_in(args: tuple, kwargs: dict) -> torch.Tensor | None:
    return _first(args) if args else kwargs.get("hidden_states", kwargs.get("x"))


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """Rows of channels: ``(..., C)`` for token tensors, ``(N·H·W, C)`` for feature maps."""
    x = x.float()
    return x.movedim(1, -1).reshape(-1, x.shape[1]) if x.dim() == 4 else x.reshape(-1, x.shape[-1])


@torch.no_grad()
def block_influence(model: nn.Module, names: Sequence[str], batches: Iterable[Any]) -> list[float]:
    """``BI`` of every block (``inf`` for a block that changes its input's shape: it cannot be skipped)."""
    mods = dict(model.named_modules())
    sums = [0.0] * len(names)
    counts = [0] * len(names)
    shape_changes = [False] * len(names)
    handles = []
    for i, n in enumerate(names):
        def hook(m: nn.Module, args: tuple, kwargs: dict, out: Any, i: int = i) -> None:
            x, y = _hidden_in(args, kwargs), _first(out)
            if x is None or y is None or x.shape != y.shape:
                shape_changes[i] = True
                return
            cos = F.cosine_similarity(_tokens(x), _tokens(y), dim=-1)
            sums[i] += float(cos.sum())
            counts[i] += cos.numel()
        handles.append(mods[n].register_forward_hook(hook, with_kwargs=True))
    was = model.training
    model.eval()
    try:
        for batch in batches:
            call_model(model, batch)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return [float("inf") if shape_changes[i] or not counts[i] else 1.0 - sums[i] / counts[i]
            for i in range(len(names))]


def skip_reference(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of ``model`` whose blocks at ``names`` return their input (the depth prune's exactness reference)."""
    ref = copy.deepcopy(model)
    mods = dict(ref.named_modules())

    def skip(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
        x = _hidden_in(args, kwargs)
        if isinstance(out, torch.Tensor):
            return x
        return (x, *out[1:]) if isinstance(out, tuple) else out

    for n in names:
        mods[n].register_forward_hook(skip, with_kwargs=True)
    return ref


def _batches(example: Any, data: Iterable | None, limit: int = 8) -> list[Any]:
    if data is None:
        return [example]
    out = []
    for b in data:
        if isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(t, torch.Tensor) for t in b):
            b = b[0]  # an (x, y) batch
        out.append(as_inputs(b))
        if len(out) >= limit:
            break
    return out or [example]


def prune_depth(model: nn.Module, example: Any, n: int, *, data: Iterable | None = None,
                blocks: str | None = None, tolerance: float = 1e-5, verify: bool = True) -> Any:
    """Remove the ``n`` blocks of least influence; a :class:`~.pruner.StructuredResult`-like result whose
    ``info["depth"]`` lists them with every block's influence."""
    chain = find_blocks(model, blocks)
    if chain.whole:
        raise PrunekitError("depth: the model has no repeated blocks to remove (name their container with blocks=)")
    if n >= len(chain.names):
        raise PrunekitError(f"depth {n} would remove every one of the model's {len(chain.names)} blocks")
    bi = block_influence(model, chain.names, _batches(example, data))
    order = sorted((i for i in range(len(bi)) if bi[i] != float("inf")), key=lambda i: (bi[i], i))
    if len(order) < n:
        raise PrunekitError(f"depth {n}: only {len(order)} blocks keep their input's shape and can be removed")
    gone = sorted(order[:n])
    containers: dict[str, dict[str, Any]] = {}
    for i in gone:
        box, _, idx = chain.names[i].rpartition(".")
        full = len(list(model.get_submodule(box).children()))
        containers.setdefault(box, {"removed": [], "full": full})["removed"].append(int(idx))
    plan = new_plan(getattr(model, "prunekit_name", None), method="depth")
    plan["depth"] = containers
    pruned = apply_plan(copy.deepcopy(model), plan)
    carry_identity(model, pruned)
    info = {"depth": {"removed": [chain.names[i] for i in gone], "blocks": len(chain.names),
                      "influence": {chain.names[i]: round(bi[i], 6) for i in range(len(bi))}}}
    res = StructuredResult(model=pruned, plan=plan, keep={}, rows=[], info=info, step_plan=plan)
    if verify:
        diff, rel = output_difference(skip_reference(model, [chain.names[i] for i in gone]), pruned, example)
        res.info["depth"]["rel_diff"] = rel
        if rel > tolerance:
            raise AssertionError(f"depth pruning is not exact: relative difference {rel:.3g} > {tolerance:g}")
    log.info("depth: removed %s", ", ".join(res.info["depth"]["removed"]))
    return res
