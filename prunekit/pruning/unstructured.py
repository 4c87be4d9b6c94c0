"""Weight-level (unstructured) pruning: layerwise, global, per-kind, gp, gpmt and random.

Every method prunes *exactly* ``round(p * N)`` weights over its scope (per layer for ``layerwise``; round half
up on the decimal value of ``p``). Weights are ranked by ``|w|``; ties are broken deterministically by position:
layers in module order, then flat index, lower positions pruned first. The threshold reported for a group is the
largest pruned magnitude (the k-th smallest ``|w|``).

Entry point: :func:`prune_unstructured` -> :class:`PruneResult` ``(masks, report)``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import EmptyLayerError, PrunekitError, UnknownNameError, check_range
from .masks import Masks, apply_masks
from .reports import LayerReport, PruneReport
from .scope import Layer, Scope, select_layers

METHODS = ("layerwise", "global", "per-kind", "gp", "gpmt", "random")
#: Methods that calibrate on data (``prune_unstructured(..., data=...)``); not in :data:`METHODS` (which the
#: Sparsifier and the sweep take: they have no calibration data).
CALIBRATED_METHODS = ("wanda", "sparsegpt")
DEFAULT_KINDS: dict[str, tuple[str, ...]] = {
    "layerwise": ("conv", "linear"), "global": ("conv",), "per-kind": ("conv", "linear"),
    "gp": ("conv", "linear"), "gpmt": ("conv", "linear"), "random": ("conv", "linear"),
}
_EXACT_LIMIT = 1 << 16  # below this many scores, one kthvalue over the concatenation is fastest
_SAMPLE = 1 << 17  # largest strided sample used to bracket the k-th value


@dataclass
class PruneResult:
    """``masks``: parameter name -> bool tensor (True = kept); ``report``: :class:`PruneReport`."""

    masks: Masks
    report: PruneReport


def count_to_prune(ratio: float, n: int) -> int:
    """``round(ratio * n)``, half up, computed exactly from the decimal value of ``ratio``."""
    return int(math.floor(Fraction(repr(float(ratio))) * n + Fraction(1, 2)))


# ----------------------------------------------------------------------------------------------- selection core
def _kth_smallest(scores: Sequence[torch.Tensor], k: int) -> float:
    """Value of the k-th smallest (1-based) entry over all flat ``scores``, without sorting everything.

    Large inputs: a strided sample brackets the answer, one counting pass finds how many entries lie below the
    bracket and extracts the few inside it, and kthvalue runs on those only. Falls back to the exact kthvalue
    of the concatenation if the bracket misses (never wrong, only slower).
    """
    total = sum(s.numel() for s in scores)
    if total <= _EXACT_LIMIT:
        return _exact_kth(scores, k)
    stride = max(1, total // min(_SAMPLE, max(1 << 14, total >> 6)))
    sample = torch.cat([s[::stride] for s in scores])
    ns = sample.numel()
    q = k / total
    delta = 6.0 * math.sqrt(max(q * (1 - q), 1.0 / ns) / ns) + 2.0 / ns
    lo_rank, hi_rank = math.floor((q - delta) * ns), math.ceil((q + delta) * ns)
    lo = float(torch.kthvalue(sample, lo_rank).values) if lo_rank >= 1 else -math.inf
    hi = float(torch.kthvalue(sample, hi_rank).values) if hi_rank <= ns else math.inf
    below = 0
    cands = []
    for s in scores:
        lt = s < lo
        below += int(lt.sum())
        cands.append(s[~lt & (s <= hi)])
    cand = torch.cat(cands)
    r = k - below
    if 1 <= r <= cand.numel():
        return float(torch.kthvalue(cand, r).values)
    return _exact_kth(scores, k)  # the bracket missed: exact fallback


def _exact_kth(scores: Sequence[torch.Tensor], k: int) -> float:
    return float(torch.kthvalue(torch.cat(list(scores)), k).values)


def select_smallest(scores: Sequence[torch.Tensor], k: int) -> tuple[list[torch.Tensor], float | None]:
    """Drop exactly ``k`` of the entries of the flat ``scores`` (smallest first, ties by position).

    Returns keep masks (True = kept, same shapes as ``scores``) and the threshold (the largest dropped score,
    None when ``k == 0``).
    """
    total = sum(s.numel() for s in scores)
    if k <= 0:
        return [torch.ones_like(s, dtype=torch.bool) for s in scores], None
    if k >= total:
        return [torch.zeros_like(s, dtype=torch.bool) for s in scores], max(float(s.max()) for s in scores
                                                                             if s.numel())
    t = _kth_smallest(scores, k)
    keeps = [s > t for s in scores]
    surplus = k - (total - sum(int(m.sum()) for m in keeps))  # <= 0: ties at t to give back (the last ones)
    for s, keep in zip(reversed(scores), reversed(keeps)):
        if surplus >= 0:
            break
        tied = (s == t).nonzero().flatten()
        give = tied[max(0, tied.numel() + surplus):]
        keep[give] = True
        surplus += give.numel()
    return keeps, t


# ------------------------------------------------------------------------------------------------------ helpers
def _scores(layers: Sequence[Layer], method: str, seed: int) -> list[torch.Tensor]:
    if method == "random":
        gen = torch.Generator().manual_seed(int(seed))
        return [torch.rand(lay.numel, generator=gen).to(lay.weight.device) for lay in layers]
    out = []
    for lay in layers:
        s = lay.weight.detach().abs().flatten()
        if not bool(torch.isfinite(s).all()):
            raise PrunekitError(f"layer {lay.name} has non-finite weights (NaN or inf); cannot rank them")
        out.append(s.float() if s.dtype in (torch.float16, torch.bfloat16) else s)
    return out


def gpmt_allocation(gp_pruned: Sequence[int], sizes: Sequence[int], k: int, min_weights: int) -> list[int]:
    """Per-layer prune counts of GPMT (REFERENCE §2), in exact integers.

    Every layer keeps at least ``min(min_weights, W_i)`` weights (cap ``c_i = max(0, W_i - m)``); layers below
    their cap are scaled by one common factor from their GP counts until the total is ``k`` (the fixed point of
    the seed's rescale-and-clamp loop, clamped to [0, 1]). Fractions are rounded by largest remainder (ties by
    layer index) so that the counts sum to exactly ``k``.
    """
    caps = [max(0, w - min_weights) for w in sizes]
    if k > sum(caps):
        raise PrunekitError(f"gpmt cannot prune {k:,} weights while every layer keeps at least {min_weights:,}: "
                            f"at most {sum(caps):,} are prunable; lower --min-threshold or the ratio")
    clamped = {i for i, c in enumerate(caps) if c == 0}
    free = [i for i in range(len(sizes)) if i not in clamped and gp_pruned[i] > 0]
    while True:
        rest = k - sum(caps[i] for i in clamped)
        g = sum(gp_pruned[i] for i in free)
        if rest > 0 and g == 0:
            raise PrunekitError("gpmt cannot reach the target: every layer that GP prunes is at its minimum; "
                                "lower --min-threshold")
        alpha = Fraction(rest, g) if g else Fraction(0)
        over = [i for i in free if alpha * gp_pruned[i] > caps[i]]
        if not over:
            break
        clamped.update(over)
        free = [i for i in free if i not in clamped]
    counts = [caps[i] if i in clamped else 0 for i in range(len(sizes))]
    exact = {i: alpha * gp_pruned[i] for i in free}
    for i, x in exact.items():
        counts[i] = math.floor(x)
    left = k - sum(counts)
    order = sorted(free, key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    for i in order:
        if left <= 0:
            break
        if counts[i] < caps[i]:
            counts[i] += 1
            left -= 1
    if left != 0:  # pragma: no cover - impossible by construction
        raise RuntimeError("gpmt allocation did not reach the target")
    return counts


def _layer_reports(layers: Sequence[Layer], keeps: Sequence[torch.Tensor],
                   thresholds: Sequence[float | None]) -> list[LayerReport]:
    return [LayerReport(name=lay.name, kind=lay.kind, shape=tuple(lay.weight.shape), weights=lay.numel,
                        pruned=lay.numel - int(keep.sum()), threshold=t)
            for lay, keep, t in zip(layers, keeps, thresholds)]


# --------------------------------------------------------------------------------------------------- entry point
def prune_unstructured(model: nn.Module, method: str, ratio: float | None, *, scope: Scope | None = None,
                       min_threshold: float | None = None, seed: int = 0, allow_empty_layers: bool = False,
                       apply: bool = True, data: Iterable[Any] | None = None, n: int | None = None,
                       m: int | None = None, blocks: str | list[str] | None = None, sequential: bool = True,
                       blocksize: int = 128, damp: float = 0.01) -> PruneResult:
    """Weight-level pruning of ``model`` by ``method`` (one of :data:`METHODS` or :data:`CALIBRATED_METHODS`).

    Calibrated methods (``"wanda"``, ``"sparsegpt"``) need ``data`` (calibration batches: tensors, tuples of
    arguments or dicts of keyword arguments), prune the Linear/Conv2d layers inside the model's repeated blocks one
    block at a time, and take ``ratio`` or ``n``/``m`` (N:M: keep ``n`` of every ``m``), ``blocks``,
    ``sequential``, ``blocksize`` and ``damp``: see :func:`prunekit.pruning.calibrated.prune_calibrated`. Their
    report (a ``CalibratedReport``) adds per-layer reconstruction errors, time and peak memory.

    ``scope`` defaults to :data:`DEFAULT_KINDS` of the method (``global``: conv weights only, as Rethinking).
    ``min_threshold`` (gpmt only): percent of all in-scope weights that every layer keeps at least.
    ``seed``: for ``random``. A layer left with no weight raises :class:`EmptyLayerError` naming it, or warns
    when ``allow_empty_layers``. With ``apply`` the pruned weights are zeroed in place. The masks are plain bool
    tensors: keep them exact while training with :class:`~prunekit.pruning.sparsifier.Sparsifier` or ``fit(...,
    masks=res.masks)``, save them with ``save_model(model, path, masks=res.masks)``.

    >>> import prunekit
    >>> model = prunekit.create_model("resnet20")
    >>> res = prunekit.prune_unstructured(model, "global", 0.5)  # the 267,696 conv weights, one threshold
    >>> res.report.total_pruned, res.report.total_weights, res.report.sparsity
    (133848, 267696, 0.5)
    >>> all(bool((model.get_parameter(n)[~m] == 0).all()) for n, m in res.masks.items())
    True
    >>> import torch
    >>> lm_layer = torch.nn.Linear(8, 4)  # calibrated: every output row keeps its 4 best |w|·‖x‖
    >>> res = prunekit.prune_unstructured(lm_layer, "wanda", 0.5, data=[torch.randn(16, 8)])
    >>> res.report.total_pruned, [int(r.sum()) for r in res.masks["weight"]]
    (16, [4, 4, 4, 4])
    """
    if method in CALIBRATED_METHODS:
        if min_threshold is not None:
            raise PrunekitError(f"--min-threshold only applies to gpmt, not to {method}")
        from .calibrated.run import prune_calibrated

        res = prune_calibrated(model, method, ratio, data=data, n=n, m=m, scope=scope, blocks=blocks,
                               sequential=sequential, blocksize=blocksize, damp=damp,
                               allow_empty_layers=allow_empty_layers, apply=apply)
        return PruneResult(masks=res.masks, report=res.report)
    if method not in METHODS:
        valid = ", ".join(METHODS + CALIBRATED_METHODS)
        raise UnknownNameError(f"unknown weight-level method {method!r}; valid: {valid}")
    if data is not None or n is not None or m is not None:
        raise PrunekitError(f"data=, n= and m= apply to the calibrated methods ({', '.join(CALIBRATED_METHODS)}), "
                            f"not to {method}")
    check_range("ratio", float(ratio), 0.0, 1.0)
    if method == "gpmt":
        if min_threshold is None:
            raise PrunekitError("method gpmt needs --min-threshold (percent of prunable weights, e.g. 0.05)")
        check_range("min_threshold", float(min_threshold), 0.0, 100.0)
    elif min_threshold is not None:
        raise PrunekitError(f"--min-threshold only applies to gpmt, not to {method}")
    scope = scope if scope is not None else Scope(kinds=DEFAULT_KINDS[method])
    layers = select_layers(model, scope)
    ratio = float(ratio)
    with torch.no_grad():
        scores = _scores(layers, method, seed)
        sizes = [s.numel() for s in scores]
        n = sum(sizes)
        thresholds: dict[str, float | None] = {}
        gp_reports = None
        min_weights = None
        if method == "layerwise":
            k = sum(count_to_prune(ratio, w) for w in sizes)
            picked = [select_smallest([s], count_to_prune(ratio, s.numel())) for s in scores]
            keeps = [p[0][0] for p in picked]
            per_layer = [p[1] for p in picked]
        elif method == "per-kind":
            keeps = [torch.empty(0)] * len(layers)
            per_layer = [None] * len(layers)
            k = 0
            for kind in scope.kinds:
                idx = [i for i, lay in enumerate(layers) if lay.kind == kind]
                if not idx:
                    continue
                kk = count_to_prune(ratio, sum(sizes[i] for i in idx))
                k += kk
                ks, t = select_smallest([scores[i] for i in idx], kk)
                thresholds[kind] = t
                for i, m in zip(idx, ks):
                    keeps[i], per_layer[i] = m, t
        else:
            k = count_to_prune(ratio, n)
            keeps, t = select_smallest(scores, k)
            per_layer = [None if method == "random" else t] * len(layers)
            if method in ("global", "gp"):
                thresholds["global"] = t
            if method == "gpmt":
                thresholds["gp"] = t
                gp_reports = _layer_reports(layers, keeps, per_layer)
                min_weights = int(n * Fraction(repr(float(min_threshold))) / 100)
                counts = gpmt_allocation([r.pruned for r in gp_reports], sizes, k, min_weights)
                picked = [select_smallest([s], c) for s, c in zip(scores, counts)]
                keeps = [p[0][0] for p in picked]
                per_layer = [p[1] for p in picked]
    masks = {lay.name: keep.view_as(lay.weight) for lay, keep in zip(layers, keeps)}
    reports = _layer_reports(layers, keeps, per_layer)
    empty = [r.name for r in reports if r.kept == 0]
    report = PruneReport(method=method, ratio=ratio, scope=scope.to_dict(), layers=reports, thresholds=thresholds,
                         target_pruned=k, min_threshold=None if min_threshold is None else float(min_threshold),
                         min_weights=min_weights, gp_layers=gp_reports,
                         seed=int(seed) if method == "random" else None, empty_layers=empty)
    if empty:
        msg = (f"{method} pruning at ratio {ratio:g} removes every weight of layer(s) {', '.join(empty)}")
        if not allow_empty_layers:
            raise EmptyLayerError(msg + "; lower the ratio, narrow the scope, or pass --allow-empty-layers")
        warnings.warn(msg, stacklevel=2)
        report.notes.append(msg)
    if apply:
        apply_masks(model, masks)
    return PruneResult(masks=masks, report=report)
