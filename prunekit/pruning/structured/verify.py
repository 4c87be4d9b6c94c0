"""Exactness of channel removal, checked against an independent reference.

The reference is the *unpruned* model in which every consumer of a removed channel ignores it: the input
columns of that channel are zeroed in every conv/linear that reads it (per group for grouped convs). Removing the
channels for real must give the same outputs; a wrong coupling shows up as a shape error or a difference. The
zeroing uses only the plan's positions, never the pruned model.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ...errors import PrunekitError
from .capture import call_model, flat_tensors


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0, *, gamma_scale: float = 1.0) -> nn.Module:
    """Give every BatchNorm random γ ~ U(0, gamma_scale), β ~ N(0, 0.1²), running mean ~ N(0, 0.1²) and running
    variance ~ U(0.5, 1.5), in place (a fake "sparsity-trained" model with distinct |γ| and tame activations)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * gamma_scale)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


class KeptStatsNorm(nn.Module):
    """A norm over the last dim that takes its statistics over the ``kept`` channels only and outputs 0 elsewhere:
    what a stream norm computes once the other channels are gone. ``norm`` is the dense norm; its kept
    parameters are taken by index here, never from a pruned model."""

    def __init__(self, norm: nn.Module, kept: list[int], full: int) -> None:
        super().__init__()
        self.full = full
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.long), persistent=False)
        self.inner = copy.deepcopy(norm)
        idx = self.kept.to(norm.weight.device)
        self.inner.weight = nn.Parameter(norm.weight.detach().index_select(0, idx).clone())
        if isinstance(getattr(norm, "bias", None), torch.Tensor):
            self.inner.bias = nn.Parameter(norm.bias.detach().index_select(0, idx).clone())
        if getattr(norm, "normalized_shape", None) is not None:
            self.inner.normalized_shape = (len(kept),)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = self.inner(x.index_select(-1, self.kept), *args, **kwargs)
        out = x.new_zeros(*x.shape[:-1], self.full, dtype=y.dtype)
        return out.index_copy(-1, self.kept, y)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _stream_norm(m: nn.Module) -> bool:
    """A norm over the channels of the last dim (LayerNorm, RMSNorm, a library's ``*RMSNorm``): a plan slices one
    only where it lies on a pruned residual stream."""
    plain = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, nn.modules.batchnorm._NormBase, nn.GroupNorm,
             nn.PReLU)
    return not isinstance(m, plain) and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 1


@torch.no_grad()
def zeroed_reference(model: nn.Module, step_plan: Mapping[str, Any]) -> nn.Module:
    """A copy of ``model`` (the model ``step_plan`` was made for) whose conv/linear layers ignore every input
    channel the plan removes (those weight columns set to 0). Depthwise convs are not mixers: their removed
    channels are removed from their outputs too, and later consumers ignore them.

    Transformers: linear layers output 0 on the channels the plan removes (attention projections meet in
    ``q @ kᵀ``, not in a consumer's columns), and norms over the channels of a pruned residual stream take their
    statistics over the kept channels (:class:`KeptStatsNorm`)."""
    ref = copy.deepcopy(model)
    mods = dict(ref.named_modules())
    for name, entry in step_plan.get("modules", {}).items():
        m = mods.get(name)
        if "out" not in entry or len(entry["out"]) == entry["out_full"]:
            continue
        if isinstance(m, nn.Linear):
            gone = sorted(set(range(entry["out_full"])) - set(entry["out"]))
            m.weight[gone] = 0.0
            if m.bias is not None:
                m.bias[gone] = 0.0
        elif m is not None and _stream_norm(m):
            _replace(ref, name, KeptStatsNorm(m, list(entry["out"]), int(entry["out_full"])))
    for entry in step_plan.get("params", {}).values():  # free parameters: removed positions read as 0
        owner, _, attr = entry["param"].rpartition(".")
        t = getattr(ref.get_submodule(owner) if owner else ref, attr, None)
        if isinstance(t, torch.Tensor):
            gone = sorted(set(range(entry["full"])) - set(entry["kept"]))
            if gone:
                t.data.index_fill_(int(entry["dim"]), torch.tensor(gone, dtype=torch.long, device=t.device), 0.0)
    for name, entry in step_plan.get("modules", {}).items():
        if "in" not in entry or name not in mods:
            continue
        m = mods[name]
        full = entry["in_full"]
        removed = sorted(set(range(full)) - set(entry["in"]))
        if not removed:
            continue
        if isinstance(m, nn.Linear):
            group = int(entry.get("in_group", 1))
            cols = [c * group + k for c in removed for k in range(group)]
            m.weight[:, cols] = 0.0
        elif isinstance(m, nn.modules.conv._ConvNd):
            g = m.groups
            if isinstance(m, nn.modules.conv._ConvTransposeNd):  # weight (in, out, ...), groups=1
                m.weight[removed] = 0.0
            elif g == 1:
                m.weight[:, removed] = 0.0
            elif m.weight.shape[1] > 1:  # grouped: input p is local p % n_in of group p // n_in
                n_in, n_out = m.in_channels // g, m.out_channels // g
                for p in removed:
                    grp, local = divmod(p, n_in)
                    m.weight[grp * n_out:(grp + 1) * n_out, local] = 0.0
    return ref


@torch.no_grad()
def output_gap(a: nn.Module, b: nn.Module, example: Sequence[torch.Tensor],
               details: dict[str, Any] | None = None) -> tuple[float, float]:
    """``(max |a(x) − b(x)|, max |a(x)|)`` over all outputs, both models in eval mode (their modes restored).

    The one exactness helper: structured pruning compares against :func:`zeroed_reference` with it, export's BN
    folding against the unfolded model. Outputs of other shapes are a :class:`PrunekitError`.

    Models whose final outputs depend on data (detections chosen by ``topk``/NMS) may name the outputs to compare:
    ``a.prunekit_compare(output)`` returns the tensors before post-processing (the head outputs); only those must
    match, and ``details`` (a dict, when given) gets ``"compared"`` (which outputs) and ``"final_outputs"``
    (whether the post-processed outputs are equal too).

    >>> a = nn.Linear(3, 2)
    >>> output_gap(a, a, (torch.ones(1, 3),))[0]
    0.0
    """
    wa, wb = a.training, b.training
    a.eval()
    b.eval()
    try:
        oa, ob = call_model(a, example), call_model(b, example)
    finally:
        a.train(wa)
        b.train(wb)
    pick = getattr(a, "prunekit_compare", None)
    ya, yb = (flat_tensors(pick(oa)), flat_tensors(pick(ob))) if pick is not None else \
        (flat_tensors(oa), flat_tensors(ob))
    if details is not None:
        details["compared"] = "outputs before post-processing (prunekit_compare)" if pick else "all outputs"
        if pick is not None:
            fa, fb = flat_tensors(oa), flat_tensors(ob)
            same = len(fa) == len(fb) and all(x.shape == y.shape and torch.allclose(x.float(), y.float(),
                                                                                    rtol=1e-5, atol=1e-5)
                                              for x, y in zip(fa, fb))
            details["final_outputs"] = "equal" if same else "differ (data-dependent post-processing)"
    if len(ya) != len(yb) or any(x.shape != y.shape for x, y in zip(ya, yb)):
        raise PrunekitError("the pruned model's outputs have other shapes than the original's")
    diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(ya, yb)) if ya else 0.0
    scale = max(float(x.float().abs().max()) for x in ya) if ya else 0.0
    return diff, scale


def output_difference(a: nn.Module, b: nn.Module, example: Sequence[torch.Tensor],
                      details: dict[str, Any] | None = None) -> tuple[float, float]:
    """``(max |a(x) − b(x)|, that divided by max |a(x)|)`` over all outputs (see :func:`output_gap`)."""
    diff, scale = output_gap(a, b, example, details)
    return diff, diff / scale if scale > 0 else diff


def step_plan_of(result: Any) -> Mapping[str, Any]:
    """The plan of this step alone (relative to the model that was pruned)."""
    return getattr(result, "step_plan", None) or {}


def check_exact(original: nn.Module, result: Any, example: Sequence[torch.Tensor], *,
                tolerance: float = 1e-5) -> tuple[float, float]:
    """Compare ``result.model`` with :func:`zeroed_reference` of ``original``; record ``max_abs_diff`` and
    ``rel_diff`` in ``result.info``; raise if the relative difference exceeds ``tolerance`` (a bug, not a user
    error: it keeps its traceback)."""
    ref = zeroed_reference(original, step_plan_of(result))
    diff, rel = output_difference(ref, result.model, example, result.info)
    result.info["max_abs_diff"] = diff
    result.info["rel_diff"] = rel
    if rel > tolerance:
        raise AssertionError(f"structured pruning is not exact: max |pruned - reference| = {diff:.3g} "
                             f"(relative {rel:.3g} > {tolerance:g})")
    return diff, rel


def removal_error(original: nn.Module, result: Any, input_size: Sequence[int], batch: int = 2,
                  seed: int = 0) -> float:
    """Max |pruned(x) − reference(x)| over a random batch (see :func:`zeroed_reference`)."""
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed))
    ref = zeroed_reference(original, step_plan_of(result))
    return output_difference(ref, result.model, (x,))[0]
