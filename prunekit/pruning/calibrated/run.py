"""Calibrated one-shot pruning, one block at a time: :func:`prune_calibrated` (Wanda, SparseGPT).

Sequential calibration (the papers' procedure): run the calibration batches to the first block and keep its
inputs (``args`` and ``kwargs``: attention masks, position embeddings ...); then for each block, hooks collect
every layer's ``XᵀX``, the block's layers are pruned, and the *pruned* block is re-run on the stored inputs to give
the next block's inputs. Nothing after the first block is computed before pruning starts, so the activations held
are one block's. ``sequential=False`` computes the same thing the plain way: for each block, full forward passes
of the whole model (earlier blocks already pruned) with hooks on that block; it gives the same masks and weights
and serves as the reference (and the memory baseline) for the sequential path.

Layers outside the blocks (embeddings, ``lm_head``, a CNN's stem and classifier) are left dense, as in the papers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn as nn

from ...errors import EmptyLayerError, PrunekitError, UnknownNameError, check_number
from ..masks import Masks
from ..reports import LayerReport, PruneReport
from ..scope import Layer, Scope, select_layers
from .blocks import (BlockChain, as_call, call_model, capture_inputs, find_blocks, first_tensor, replace_hidden,
                     verify_chain, whole_model)
from .memory import PeakRSS
from .selection import check_nm_divides, count_pruned
from .sparsegpt import sparsegpt_prune
from .stats import GramCollector, matrix_to_mask, matrix_to_weight, reconstruction_error, unsupported_reason
from .stats import weight_matrix
from .wanda import wanda_mask

log = logging.getLogger(__name__)

CALIBRATED_METHODS = ("wanda", "sparsegpt")


@dataclass
class CalibratedReport(PruneReport):
    """A :class:`PruneReport` plus what calibration measured: ``layer_errors`` (parameter name -> ‖WX − ŴX‖/‖WX‖
    on the calibration inputs), ``seconds``, ``peak_rss`` / ``rss_rise`` (bytes: peak resident memory of the
    process during the prune, and its rise over the start), the ``blocks`` used, ``nm`` and the settings."""

    nm: tuple[int, int] | None = None
    layer_errors: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss: int = 0
    rss_rise: int = 0
    blocks: list[str] = field(default_factory=list)
    sequential: bool = True
    calibration_batches: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_error(self) -> float:
        """Mean reconstruction error over the pruned layers."""
        return sum(self.layer_errors.values()) / len(self.layer_errors) if self.layer_errors else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update({"nm": None if self.nm is None else f"{self.nm[0]}:{self.nm[1]}",
                  "layer_errors": dict(self.layer_errors), "mean_error": self.mean_error, "seconds": self.seconds,
                  "peak_rss": self.peak_rss, "rss_rise": self.rss_rise, "blocks": list(self.blocks),
                  "sequential": self.sequential, "calibration_batches": self.calibration_batches,
                  "settings": dict(self.settings)})
        return d


@dataclass
class CalibratedResult:
    """``masks``: parameter name -> bool tensor (True = kept); ``report``: :class:`CalibratedReport`."""

    masks: Masks
    report: CalibratedReport


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _check_pattern(method: str, ratio: float | None, n: int | None, m: int | None
                   ) -> tuple[float, tuple[int, int] | None]:
    if method not in CALIBRATED_METHODS:
        raise UnknownNameError(f"unknown calibrated method {method!r}; valid: {', '.join(CALIBRATED_METHODS)}")
    if n is None and m is None:
        if ratio is None:
            raise PrunekitError(f"method {method} needs a ratio (fraction of weights to prune) or n and m")
        return float(check_number("ratio", ratio, low=0.0, high=1.0)), None
    if n is None or m is None:
        raise PrunekitError("N:M sparsity needs both n and m (e.g. n=2, m=4)")
    n = int(check_number("n", n, low=1, integer=True))
    m = int(check_number("m", m, low=2, integer=True))
    if n >= m:
        raise PrunekitError(f"N:M sparsity needs 1 <= n < m, got {n}:{m}")
    nm_ratio = 1.0 - n / m
    if ratio is not None and abs(float(ratio) - nm_ratio) > 1e-9:
        raise PrunekitError(f"ratio {ratio:g} contradicts {n}:{m} sparsity (which prunes {nm_ratio:g}); give one")
    return nm_ratio, (n, m)


def _block_layers(chain: BlockChain, layers: list[Layer]) -> tuple[list[list[Layer]], list[str]]:
    owner: dict[int, int] = {}
    for b, mod in enumerate(chain.modules):
        for sub in mod.modules():
            owner.setdefault(id(sub), b)
    per_block: list[list[Layer]] = [[] for _ in chain.modules]
    outside = []
    for lay in layers:
        b = owner.get(id(lay.module))
        if b is None:
            outside.append(lay.name)
        else:
            per_block[b].append(lay)
    return per_block, outside


def _prune_layer(lay: Layer, col: GramCollector, method: str, ratio: float, nm: tuple[int, int] | None,
                 blocksize: int, damp: float) -> tuple[torch.Tensor, float, int]:
    """Prune one layer in place; returns its keep mask (weight-shaped), error and target count."""
    w = weight_matrix(lay.module)
    if method == "wanda":
        keep = wanda_mask(w, col.column_norms(), ratio=ratio, nm=nm)
        w_new = w * keep
        target = w.shape[0] * (w.shape[1] - w.shape[1] // nm[1] * nm[0] if nm else count_pruned(ratio, w.shape[1]))
    else:
        w_new, keep = sparsegpt_prune(w, col.hessian(), ratio=ratio, nm=nm, blocksize=blocksize, damp=damp,
                                      name=lay.name)
        target = w.numel() - w.shape[0] * (w.shape[1] // nm[1]) * nm[0] if nm else count_pruned(ratio, w.numel())
    err = reconstruction_error(w, w_new, col.gram)
    with torch.no_grad():
        lay.weight.copy_(matrix_to_weight(w_new, lay.weight))
    return matrix_to_mask(keep, lay.weight), err, target


def prune_calibrated(model: nn.Module, method: str, ratio: float | None = None, *, data: Iterable[Any] | None,
                     n: int | None = None, m: int | None = None, scope: Scope | None = None,
                     blocks: str | list[str] | None = None, sequential: bool = True, blocksize: int = 128,
                     damp: float = 0.01, allow_empty_layers: bool = False, apply: bool = True) -> CalibratedResult:
    """Prune the Linear/Conv2d layers inside ``model``'s blocks by ``method`` (``"wanda"`` | ``"sparsegpt"``).

    ``data``: calibration batches, each a model input (a tensor, a tuple of arguments, or a dict of keyword
    arguments). ``ratio``: fraction pruned (per row for Wanda, per layer for SparseGPT, exact counts), or ``n``,
    ``m``: keep ``n`` of every ``m`` consecutive input weights. ``blocks``: module path(s) of the block chain
    (default: found from the structure; a model without repeated blocks is one block). ``sequential``: one block
    at a time (default) or whole-model forwards (same result, more memory). SparseGPT: ``blocksize`` columns per
    lazy batch, ``damp`` fraction of the mean Hessian diagonal. With ``apply=False`` the weights are restored.
    """
    ratio_f, nm = _check_pattern(method, ratio, n, m)
    blocksize = int(check_number("blocksize", blocksize, low=1, integer=True))
    damp = float(check_number("damp", damp, low=0.0))
    if data is None:
        raise PrunekitError(f"method {method} needs calibration data (data=...: batches of model inputs)")
    scope = scope if scope is not None else Scope(kinds=("conv", "linear"))
    started = time.perf_counter()
    with PeakRSS() as mem:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            raise PrunekitError("the model has no parameters to prune") from None
        batches = [_to_device(b, device) for b in data]
        if not batches:
            raise PrunekitError("no calibration data: the calibration iterable is empty")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                masks, reports, errors, targets, notes, chain = _run(model, method, ratio_f, nm, batches, scope, blocks,
                                                            sequential, blocksize, damp, apply)
        finally:
            model.train(was_training)
    report = CalibratedReport(method=method, ratio=ratio_f, scope=scope.to_dict(), layers=reports, thresholds={},
                              target_pruned=sum(r.pruned for r in reports), nm=nm, layer_errors=errors,
                              seconds=time.perf_counter() - started, peak_rss=mem.peak, rss_rise=mem.rise,
                              blocks=chain.names, sequential=sequential, calibration_batches=len(batches),
                              settings={"blocksize": blocksize, "damp": damp} if method == "sparsegpt" else {},
                              notes=notes)
    report.target_pruned = sum(targets.values())
    empty = [r.name for r in reports if r.kept == 0]
    report.empty_layers = empty
    if empty:
        msg = f"{method} pruning removes every weight of layer(s) {', '.join(empty)}"
        if not allow_empty_layers:
            raise EmptyLayerError(msg + "; lower the ratio or pass allow_empty_layers")
        report.notes.append(msg)
    return CalibratedResult(masks=masks, report=report)


def _run(model: nn.Module, method: str, ratio: float, nm: tuple[int, int] | None, batches: list[Any],
         scope: Scope, blocks: str | list[str] | None, sequential: bool, blocksize: int, damp: float, apply: bool):
    notes: list[str] = [f"{nm[0]}:{nm[1]} sparsity: {nm[0]} of every {nm[1]} consecutive input weights kept"] \
        if nm is not None else []
    chain = find_blocks(model, blocks)
    if not chain.whole:
        reason = verify_chain(model, chain, batches[0])
        if reason is not None:
            if blocks is not None:
                raise PrunekitError(f"blocks {blocks}: {reason}")
            notes.append(f"the repeated blocks found ({chain.names[0]} ...) are not a chain ({reason}); the whole "
                         "model is calibrated as one block")
            chain = whole_model(model)
    layers = select_layers(model, scope)
    per_block, outside = _block_layers(chain, layers)
    if outside:
        notes.append(f"{len(outside)} layer(s) outside the blocks left dense: {', '.join(outside[:6])}"
                     + (" ..." if len(outside) > 6 else ""))
    for b, lays in enumerate(per_block):
        kept = []
        for lay in lays:
            why = unsupported_reason(lay.module)
            if why is not None:
                notes.append(f"{lay.name} left dense: {why}")
                continue
            if nm is not None:
                cols = lay.module.in_features if isinstance(lay.module, nn.Linear) else lay.module.in_channels
                check_nm_divides(lay.name, cols, nm[1])
            kept.append(lay)
        per_block[b] = kept
    if not any(per_block):
        raise PrunekitError("no Linear/Conv2d layer of the scope lies inside the model's blocks; name the blocks "
                            "with blocks=... or widen the scope")
    originals = {lay.name: lay.weight.detach().clone() for lays in per_block for lay in lays} if not apply else {}
    masks: Masks = {}
    reports: list[LayerReport] = []
    errors: dict[str, float] = {}
    targets: dict[str, int] = {}
    inputs = (capture_inputs(model, chain.modules[0], batches) if not chain.whole
              else [as_call(b) for b in batches]) if sequential else []
    for b, (bname, block) in enumerate(zip(chain.names, chain.modules)):
        lays = per_block[b]
        t0 = time.perf_counter()
        cols = {lay.name: GramCollector(lay.module) for lay in lays}
        handles = [lay.module.register_forward_hook(cols[lay.name].hook) for lay in lays]
        try:
            if sequential:
                for args, kwargs in inputs:
                    call_model(block, args, kwargs, f"block {bname or 'model'}")
            else:
                for batch in batches:
                    args, kwargs = as_call(batch)
                    call_model(model, args, kwargs, "model")
        finally:
            for h in handles:
                h.remove()
        for lay in lays:
            col = cols.pop(lay.name)
            if col.n == 0:
                notes.append(f"{lay.name} left dense: it saw no calibration input")
                continue
            mask, err, target = _prune_layer(lay, col, method, ratio, nm, blocksize, damp)
            masks[lay.name] = mask
            errors[lay.name] = err
            targets[lay.name] = target
            reports.append(LayerReport(name=lay.name, kind=lay.kind, shape=tuple(lay.weight.shape),
                                       weights=lay.numel, pruned=lay.numel - int(mask.sum())))
        if sequential and b + 1 < len(chain.modules):
            inputs = [replace_hidden(inp, first_tensor(call_model(block, inp[0], inp[1], f"block {bname}")))
                      for inp in inputs]
        log.info("block %d/%d %s: %d layer(s) pruned in %.2fs", b + 1, len(chain.modules), bname or "(model)",
                 len(lays), time.perf_counter() - t0)
    if originals:
        params = dict(model.named_parameters())
        for name, w in originals.items():
            params[name].data.copy_(w)
    return masks, reports, errors, targets, notes, chain
