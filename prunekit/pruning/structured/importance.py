"""Channel importance of a group: one score per unit (the channels removed together), higher = keep.

Criteria (``criterion=``):

* ``"l1"`` / ``"l2"`` — norm of each producer's filter (Li et al. 2017: L1 of the conv weight over in×kh×kw);
* ``"bn"`` — |γ| of the norm layers over the channels (network slimming); for a ChannelSelection group, γ of the
  BatchNorm that feeds the selection;
* ``"taylor"`` — first-order Taylor (Molchanov et al. 2019): ``(Σ w·∂L/∂w)²`` over the group's producer and norm
  parameters of each unit, with gradients accumulated over a few batches (:func:`accumulate_gradients`);
* ``"activation"`` — activation-aware (Wanda-sp, An et al.'s FLAP family): for every consumer of the channels,
  ``Σ_i |W_ij| · ‖X_j‖₂`` over its output rows ``i``, ``X_j`` the channel's inputs over calibration batches
  (:func:`activation_norms`; the example inputs when no data is given);
* ``"random"`` — seeded uniform scores (the baseline).

A group with several sites of a kind (a residual stream: many convs and BNs) reduces the per-site scores with
``reduction="sum" | "mean" | "max"``. Groups without a producer fall back to their norm's |γ| for l1/l2, and to the
column norm of their consumers when they have no norm either.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn

from ...errors import PrunekitError, UnknownNameError
from .capture import call_model
from .graph import DependencyGraph, Group

CRITERIA = ("l1", "l2", "bn", "taylor", "activation", "random")
REDUCTIONS = ("sum", "mean", "max")


def _rows(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    t = t.detach().to("cpu", torch.float64)
    return t.view(-1, 1) if t.dim() == 1 else t.movedim(dim, 0).flatten(1)


def _per_unit(values: torch.Tensor, positions: list[list[int]], how: str = "sum") -> np.ndarray:
    """Reduce ``values`` over each unit's positions (vectorised: one gather and one ``reduceat``)."""
    v = values.numpy()
    lengths = np.fromiter((len(p) for p in positions), dtype=np.int64, count=len(positions))
    if lengths.size and (lengths == 1).all():
        return v[np.fromiter((p[0] for p in positions), dtype=np.int64, count=len(positions))]
    flat = np.fromiter((i for p in positions for i in p), dtype=np.int64, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    op = np.maximum if how == "max" else np.add
    return op.reduceat(v[flat], starts)


def _out_dim(m: nn.Module) -> int:
    """The weight dim of a producer's output channels (an embedding's vectors are its columns)."""
    return 1 if isinstance(m, (nn.Embedding, nn.modules.conv._ConvTransposeNd)) else 0


def _reduce(scores: list[np.ndarray], reduction: str) -> np.ndarray:
    stack = np.stack(scores)
    if reduction == "sum":
        return stack.sum(0)
    if reduction == "mean":
        return stack.mean(0)
    return stack.max(0)


def _norm_gamma(mod: nn.Module) -> torch.Tensor | None:
    w = getattr(mod, "weight", None)
    return None if w is None else w.detach().abs().to("cpu", torch.float64)


def group_scores(graph: DependencyGraph, g: Group, criterion: str = "l1", *, reduction: str = "sum",
                 generator: torch.Generator | None = None) -> np.ndarray:
    """Importance of every unit of ``g`` (float64, length ``g.size``). For ``taylor`` the gradients must already be
    in ``.grad`` (see :func:`accumulate_gradients`)."""
    if criterion not in CRITERIA:
        raise UnknownNameError(f"unknown importance criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    if reduction not in REDUCTIONS:
        raise UnknownNameError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    mods = graph.modules
    if criterion == "random":
        gen = generator or torch.Generator().manual_seed(0)
        return torch.rand(g.size, generator=gen, dtype=torch.float64).numpy()
    if criterion == "activation":
        return _consumer_scores(graph, g, "activation", reduction)
    scores: list[np.ndarray] = []
    if criterion in ("l1", "l2"):
        for p in g.producers:
            rows = _rows(mods[p].weight, _out_dim(mods[p]))
            per = rows.abs().sum(1) if criterion == "l1" else (rows ** 2).sum(1)
            s = _per_unit(per, g.positions[("out", p)])
            scores.append(np.sqrt(s) if criterion == "l2" else s)
        if not scores:
            return group_scores(graph, g, "bn", reduction=reduction) if _has_gamma(graph, g) else \
                _consumer_scores(graph, g, criterion, reduction)
    elif criterion == "bn":
        for b in g.norms:
            gamma = _norm_gamma(mods[b])
            if gamma is not None:
                scores.append(_per_unit(gamma, g.positions[("norm", b)], "max"))
        if g.select is not None and g.select in graph.select_scores:
            bn_name, kept = graph.select_scores[g.select]
            gamma = _norm_gamma(mods[bn_name])
            if gamma is not None:
                full = gamma[torch.tensor(kept, dtype=torch.long)]
                scores.append(_per_unit(full, g.positions[("select_out", g.select)], "max"))
        if not scores:
            raise PrunekitError(f"criterion 'bn' needs a BatchNorm over the channels of group {g.name}")
    else:  # taylor
        for kind, names in (("out", g.producers), ("norm", g.norms)):
            for n in names:
                m = mods[n]
                for attr in ("weight", "bias"):
                    w = getattr(m, attr, None)
                    if w is None:
                        continue
                    if w.grad is None:
                        raise PrunekitError("taylor importance needs gradients: pass a few batches (CLI: "
                                            "--taylor-batches) so they can be accumulated")
                    d = _out_dim(m) if attr == "weight" else 0
                    per = (_rows(w, d) * _rows(w.grad, d)).sum(1)
                    scores.append(_per_unit(per, g.positions[(kind, n)]))
        if not scores:
            raise PrunekitError(f"taylor importance: group {g.name} has no producer or norm parameters")
        return _reduce(scores, "sum") ** 2
    return _reduce(scores, reduction)


def _has_gamma(graph: DependencyGraph, g: Group) -> bool:
    return any(_norm_gamma(graph.modules[b]) is not None for b in g.norms) or g.select in graph.select_scores


def _consumer_scores(graph: DependencyGraph, g: Group, criterion: str, reduction: str) -> np.ndarray:
    scores = []
    for c in g.consumers:
        m = graph.modules[c]
        if isinstance(m, nn.Linear):
            cols = _rows(m.weight, 1)
        elif isinstance(m, nn.modules.conv._ConvNd) and m.groups == 1:
            cols = _rows(m.weight, 1)
        else:
            continue
        if criterion == "activation":
            norms = graph.activation_norms.get(c)
            if norms is None:
                continue
            per = cols.abs().sum(1) * norms.to(torch.float64).sqrt()
        else:
            per = cols.abs().sum(1) if criterion == "l1" else (cols ** 2).sum(1)
        scores.append(_per_unit(per, g.positions[("in", c)]))
    if not scores:
        if criterion == "activation":
            return group_scores(graph, g, "l1", reduction=reduction)  # nothing reads it in a Linear/Conv
        raise PrunekitError(f"no importance for group {g.name}: it has no producer, norm or plain consumer")
    return _reduce(scores, reduction)


@torch.no_grad()
def activation_norms(model: nn.Module, names: Iterable[str], batches: Iterable[Any],
                     means: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``‖X_j‖²`` of every input channel ``j`` of the Linear/Conv layers ``names`` over ``batches`` (model inputs:
    tensors, ``(x, y)`` pairs, tuples or dicts of keyword inputs). ``means``, if given, receives the mean of every
    input channel (for the bias compensation of :mod:`.compensate`)."""
    mods = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    firsts: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for n in names:
        m = mods.get(n)
        if not isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            continue

        def hook(mod: nn.Module, args: tuple, n: str = n) -> None:
            x = args[0].detach().to(torch.float64)
            per = (x ** 2).reshape(-1, x.shape[-1]).sum(0) if isinstance(mod, nn.Linear) else \
                (x ** 2).transpose(0, 1).reshape(x.shape[1], -1).sum(1)
            sums[n] = sums[n] + per.cpu() if n in sums else per.cpu()
            if means is not None:
                rows = x.reshape(-1, x.shape[-1]) if isinstance(mod, nn.Linear) else \
                    x.transpose(0, 1).reshape(x.shape[1], -1).T
                firsts[n] = firsts[n] + rows.sum(0).cpu() if n in firsts else rows.sum(0).cpu()
                counts[n] = counts.get(n, 0) + rows.shape[0]
        handles.append(m.register_forward_pre_hook(hook))
    was = model.training
    model.eval()
    try:
        for batch in batches:
            if isinstance(batch, (list, tuple)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
                batch = batch[0]  # an (x, y) pair
            call_model(model, batch)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    if means is not None:
        means.update({n: firsts[n] / counts[n] for n in firsts})
    return sums


def accumulate_gradients(model: nn.Module, batches: Iterable, loss_fn: Callable | None = None,
                         device: torch.device | str = "cpu") -> int:
    """Zero the gradients, then accumulate ``loss_fn(model(x), y)`` gradients over ``batches`` of ``(x, y)``
    (cross-entropy by default) in eval mode; return the number of batches used. For Taylor importance."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    was = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    n = 0
    try:
        with torch.enable_grad():
            for batch in batches:
                if isinstance(batch, Mapping):  # keyword inputs with labels: the model computes its loss
                    out = model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
                    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
                    if loss is None:
                        raise PrunekitError("taylor importance: keyword batches need 'labels' so the model returns "
                                            "a loss")
                else:
                    x, y = batch
                    loss = loss_fn(model(x.to(device)), y.to(device))
                loss.backward()
                n += 1
    finally:
        model.train(was)
    if n == 0:
        raise PrunekitError("taylor importance needs at least one batch of data")
    return n


def all_scores(graph: DependencyGraph, groups: Iterable[Group], criterion: str, *, reduction: str = "sum",
               seed: int = 0) -> Mapping[str, np.ndarray]:
    """Scores of every group in ``groups``, by group name (one generator for all, seeded by ``seed``)."""
    gen = torch.Generator().manual_seed(int(seed))
    return {g.name: group_scores(graph, g, criterion, reduction=reduction, generator=gen) for g in groups}
