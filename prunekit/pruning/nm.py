"""N:M semi-structured sparsity: of every ``m`` consecutive weights along the input dimension keep the ``n`` largest.

The *input dimension* is dim 1 of a weight: ``in_features`` of a ``Linear`` and the input channels of a conv
(``[out, in/groups, kh, kw]``: the blocks run along ``in`` at each ``(out, kh, kw)`` position, as NVIDIA's ASP does).
Every block keeps exactly ``n`` weights; ties in ``|w|`` are broken by position as in
:func:`~prunekit.pruning.unstructured.prune_unstructured` (the lower position is pruned first). A layer whose input
dimension is not a multiple of ``m`` is **skipped** (left dense, not padded) and named in ``NMResult.skipped``.

2:4 is what sparse tensor cores run: :func:`to_semi_structured` converts eligible ``Linear`` weights with
``torch.sparse.to_sparse_semi_structured`` on a CUDA GPU of compute capability 8.0 or newer (inference only). Elsewhere
(CPU, older GPUs) it raises a :class:`~prunekit.errors.PrunekitError` saying so; the masks themselves work anywhere
(as ordinary zeros, with no speed-up).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import PrunekitError
from .masks import Masks, apply_masks, mask_counts
from .scope import Scope, select_layers

__all__ = ["NMResult", "check_nm", "nm_block_counts", "nm_masks", "to_semi_structured"]

DEFAULT_KINDS = ("conv", "linear")


@dataclass
class NMResult:
    """``masks``: parameter name -> bool tensor (True = kept) for every eligible layer; ``skipped``: name ->
    reason for the in-scope layers left dense; ``notes``: the same as sentences."""

    n: int
    m: int
    masks: Masks
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def pruned(self) -> int:
        return mask_counts(self.masks)[0]

    @property
    def total(self) -> int:
        return mask_counts(self.masks)[1]


def check_nm(n: int, m: int) -> tuple[int, int]:
    """Validate an N:M pattern (``1 <= n < m``)."""
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or int(v) != v:
            raise PrunekitError(f"N:M sparsity needs integer {name}, got {v!r}")
    n, m = int(n), int(m)
    if not 1 <= n < m:
        raise PrunekitError(f"N:M sparsity needs 1 <= n < m, got {n}:{m}")
    return n, m


def _blocks(t: torch.Tensor, m: int) -> torch.Tensor:
    """``t`` ([out, in, *k]) as blocks ``[-1, m]`` running along dim 1."""
    return t.movedim(1, -1).reshape(-1, m)


def _unblocks(b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    moved = (shape[0], *shape[2:], shape[1])
    return b.reshape(moved).movedim(-1, 1)


def nm_block_counts(mask: torch.Tensor, m: int) -> torch.Tensor:
    """Kept entries per block of ``m`` along dim 1 (flat int64 tensor, one value per block)."""
    return _blocks(mask.to(torch.bool), m).sum(dim=1)


def _layer_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    s = _blocks(w.detach().abs(), m)
    s = s.float() if s.dtype in (torch.float16, torch.bfloat16) else s
    order = torch.sort(s, dim=1, stable=True).indices  # ascending |w|; equal values keep position order
    keep = torch.ones_like(s, dtype=torch.bool)
    keep.scatter_(1, order[:, : m - n], False)
    return _unblocks(keep, w.shape)


def nm_masks(model: nn.Module, n: int = 2, m: int = 4, scope: Scope | None = None, *,
             apply: bool = False) -> NMResult:
    """N:M masks of every in-scope layer (default scope: conv and linear weights).

    Layers whose input dimension (dim 1) is not a multiple of ``m`` are skipped (left dense, no padding) and
    reported. Raises :class:`PrunekitError` if no in-scope layer is eligible or a weight is not finite. With
    ``apply`` the pruned weights are zeroed in place. ``Sparsifier(model, method="2:4")`` keeps them in training.

    >>> import torch.nn as nn, prunekit
    >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> res = prunekit.nm_masks(model, 2, 4, apply=True)
    >>> sorted(res.masks), res.pruned, res.total      # 2 of every 4 inputs kept
    (['0.weight', '2.weight'], 22, 44)
    >>> res.skipped
    {'4.weight': 'input dimension 3 is not a multiple of 4'}
    """
    n, m = check_nm(n, m)
    scope = scope if scope is not None else Scope(kinds=DEFAULT_KINDS)
    layers = select_layers(model, scope)
    masks: Masks = {}
    skipped: dict[str, str] = {}
    with torch.no_grad():
        for lay in layers:
            w = lay.weight
            if w.dim() < 2 or w.shape[1] % m:
                skipped[lay.name] = (f"input dimension {w.shape[1] if w.dim() > 1 else w.numel()} is not a "
                                     f"multiple of {m}")
                continue
            if not bool(torch.isfinite(w).all()):
                raise PrunekitError(f"layer {lay.name} has non-finite weights (NaN or inf); cannot rank them")
            masks[lay.name] = _layer_mask(w, n, m)
    if not masks:
        raise PrunekitError(f"no layer in scope {scope.to_dict()} has an input dimension that is a multiple of "
                            f"{m}; {n}:{m} sparsity has nothing to prune")
    notes = [f"{name} left dense: {why} ({n}:{m} blocks run along the input dimension; not padded)"
             for name, why in skipped.items()]
    if apply:
        apply_masks(model, masks)
    return NMResult(n=n, m=m, masks=masks, skipped=skipped, notes=notes)


def _semi_structured_unsupported(device: torch.device) -> str | None:
    """Why the 2:4 sparse kernels cannot run for weights on ``device`` (None when they can)."""
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"this torch ({torch.__version__}) has no torch.sparse.to_sparse_semi_structured"
    if device.type != "cuda":
        return (f"semi-structured (2:4) sparse kernels run only on CUDA GPUs of compute capability >= 8.0; the "
                f"weights are on {device.type}. The 2:4 masks still hold as ordinary zeros (no speed-up)")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"semi-structured (2:4) sparse kernels need compute capability >= 8.0, this GPU has {major}.{minor}"
    return None


def to_semi_structured(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> dict:
    """Replace the 2:4-sparse ``Linear`` weights of ``model`` by ``torch.sparse`` semi-structured tensors, in place.

    ``masks`` (e.g. ``nm_masks(model).masks``) name the layers to convert (default: every ``Linear`` whose weight
    already is 2:4 sparse); masks are applied first. The converted weights are frozen (inference only). Returns
    ``{"converted": [names], "skipped": {name: reason}}`` (wrong pattern, dtype or shape the kernels refuse).

    Raises :class:`PrunekitError` where the runtime has no such kernels: on CPU (always), on GPUs older than
    compute capability 8.0, or without ``torch.sparse.to_sparse_semi_structured``; the message says which.

    >>> import torch.nn as nn, prunekit
    >>> model = nn.Sequential(nn.Linear(64, 64))
    >>> res = prunekit.nm_masks(model, 2, 4, apply=True)
    >>> try:
    ...     prunekit.to_semi_structured(model, res.masks)     # on a CPU
    ... except prunekit.PrunekitError as e:
    ...     print(str(e)[:80])
    semi-structured (2:4) sparse kernels run only on CUDA GPUs of compute capability
    """
    linears = {f"{name}.weight" if name else "weight": mod for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear)}
    names = [k for k in (masks.keys() if masks is not None else linears.keys())]
    if not names:
        raise PrunekitError("no Linear weight to convert to a semi-structured sparse tensor")
    devices = {linears[k].weight.device for k in names if k in linears} or {torch.device("cpu")}
    for dev in devices:
        why = _semi_structured_unsupported(dev)
        if why:
            raise PrunekitError(why)
    from torch.sparse import to_sparse_semi_structured

    converted: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        mod = linears.get(name)
        if mod is None:
            skipped[name] = "not the weight of a Linear layer (only Linear weights are converted)"
            continue
        w = mod.weight
        with torch.no_grad():
            if masks is not None:
                w.masked_fill_(~masks[name].to(device=w.device, dtype=torch.bool), 0.0)
            if w.shape[1] % 4:
                skipped[name] = f"in_features {w.shape[1]} is not a multiple of 4"
                continue
            if int((nm_block_counts(w != 0, 4) > 2).sum()):
                skipped[name] = "not 2:4 sparse (a block of 4 has more than 2 non-zero weights)"
                continue
            try:
                sparse = to_sparse_semi_structured(w.detach())
            except (RuntimeError, ValueError, TypeError) as e:  # dtype / shape the kernels do not take
                skipped[name] = str(e).splitlines()[0]
                continue
        mod.weight = nn.Parameter(sparse, requires_grad=False)
        converted.append(name)
    return {"converted": converted, "skipped": skipped}
