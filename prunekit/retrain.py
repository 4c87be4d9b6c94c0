"""Retraining a pruned model: finetune (masks kept), Scratch-E and Scratch-B (REFERENCE §3).

* :func:`finetune`: continue training the pruned weights; masks (if any) are enforced exactly.
* :func:`scratch_model`: the pruned architecture with fresh weights. Structured checkpoints rebuild
  ``create_model(name, cfg)`` (+ plan) with the zoo's init; weight-level checkpoints additionally re-initialise every
  masked conv with the density-scaled He init ``n = mask.sum() / in_channels``, ``w ~ N(0, sqrt(2/n))``,
  ``w *= mask`` (Linear and BN keep their default init).
* :func:`scratch_budget`: Scratch-E trains the base epochs; Scratch-B ``int(E_base * FLOPs_dense / FLOPs_pruned)``
  with sparse-aware FLOPs (only non-zero weights count), LR milestones at 50 % / 75 %; ImageNet style: step
  schedule with ``step = E / 3``, and ``2 * E_base`` (180 for 90) when the ratio is >= 2.
* :func:`flops_pair` / :func:`plan_scratch`: the one rule for the FLOPs of the ratio, used by the library and the
  CLI alike: Rethinking-convention FLOPs of the dense and of the pruned model, both measured now (pruned:
  sparse-aware), never numbers stored in the checkpoint.

The seed's weight-level Scratch-B measured FLOPs before loading the mask (ratio 1): here the pruned FLOPs are
measured on the masked model.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from .checkpoint import Checkpoint, build_from_meta
from .errors import PrunekitError
from .pruning.masks import Masks, apply_masks

BUDGETS = ("E", "B")
DEFAULT_CONVENTION = "rethinking"


@dataclass
class ScratchBudget:
    """How long Scratch-E/B trains and why. FLOPs are per sample in ``convention``."""

    budget: str
    base_epochs: int
    epochs: int
    flops_dense: int
    flops_pruned: int
    convention: str
    schedule: str
    milestones: tuple[float, ...] | None = None
    step_size: int | None = None
    capped: bool = False
    dense_flops_source: str = "measured"

    @property
    def ratio(self) -> float:
        """FLOPs_dense / FLOPs_pruned."""
        return self.flops_dense / self.flops_pruned

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        d["milestones"] = list(self.milestones) if self.milestones is not None else None
        return d


def scratch_budget(base_epochs: int, flops_dense: int, flops_pruned: int, *, budget: str = "B",
                   imagenet_style: bool = False, convention: str = DEFAULT_CONVENTION,
                   milestones: Sequence[float] = (0.5, 0.75), dense_flops_source: str = "measured") -> ScratchBudget:
    """Epochs and LR schedule of Scratch-E (``budget="E"``) or Scratch-B (``"B"``).

    ``milestones``: fractions of the scratch epochs for the multistep schedule (CIFAR style).
    """
    if budget not in BUDGETS:
        raise PrunekitError(f"--budget must be E or B, got {budget!r}")
    if base_epochs < 1:
        raise PrunekitError(f"base epochs must be positive, got {base_epochs}")
    if flops_pruned <= 0 or flops_dense <= 0:
        raise PrunekitError(f"cannot compute a Scratch-B budget from FLOPs dense={flops_dense}, "
                            f"pruned={flops_pruned}")
    ratio = flops_dense / flops_pruned
    epochs, capped = base_epochs, False
    if budget == "B":
        epochs = max(1, int(base_epochs * ratio))
        if imagenet_style and ratio >= 2:
            epochs, capped = 2 * base_epochs, True
    if imagenet_style:
        return ScratchBudget(budget, base_epochs, epochs, int(flops_dense), int(flops_pruned), convention, "step",
                             step_size=max(1, epochs // 3), capped=capped, dense_flops_source=dense_flops_source)
    return ScratchBudget(budget, base_epochs, epochs, int(flops_dense), int(flops_pruned), convention, "multistep",
                         milestones=tuple(float(m) for m in milestones), dense_flops_source=dense_flops_source)


@torch.no_grad()
def density_scaled_init_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Re-initialise every masked conv weight with He init scaled to its density; return the layers touched.

    ``n = mask.sum() / in_channels``; ``w ~ N(0, sqrt(2 / n))``; ``w *= mask``. A fully pruned conv stays zero.
    Draws from the global torch RNG (:func:`scratch_model` forks and seeds it).
    """
    touched = []
    for mname, module in model.named_modules():
        if not isinstance(module, nn.modules.conv._ConvNd):
            continue
        pname = f"{mname}.weight" if mname else "weight"
        if pname not in masks:
            continue
        mask = masks[pname].to(device=module.weight.device, dtype=torch.bool)
        n = float(mask.sum()) / module.in_channels
        if n > 0:
            module.weight.normal_(0.0, math.sqrt(2.0 / n))
        module.weight.masked_fill_(~mask, 0.0)
        touched.append(pname)
    return touched


def scratch_model(ckpt: Checkpoint, seed: int = 0) -> tuple[nn.Module, Masks | None]:
    """The checkpoint's (pruned) architecture with fresh weights, and its masks (None for structured ones).

    The weights are drawn from torch's global CPU generator seeded with ``seed`` inside ``torch.random.fork_rng``:
    the same numbers as ``torch.manual_seed(seed)`` would give, and the caller's RNG state is left as it was."""
    if not ckpt.meta or "model" not in ckpt.meta:
        raise PrunekitError("Scratch-E/B needs a pruned checkpoint (--checkpoint), not a fresh model")
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        model = build_from_meta(ckpt.meta)
        masks = {k: v.to(torch.bool) for k, v in ckpt.masks.items()} if ckpt.masks else None
        if masks:
            density_scaled_init_(model, masks)
            apply_masks(model, masks)
    return model, masks


def _flops(model: nn.Module, input_size: Sequence[int], *, sparse: bool, convention: str) -> int:
    from .metrics import count_flops

    return int(count_flops(model, (1, *input_size), sparse=sparse, convention=convention).flops)


def flops_pair(ckpt: Checkpoint, pruned_model: nn.Module, input_size: Sequence[int], *,
               convention: str = DEFAULT_CONVENTION) -> tuple[int, int, str, str, tuple[int, ...]]:
    """``(flops_dense, flops_pruned, convention, dense_source, input_size)`` for Scratch-B.

    One rule for every caller (the library, ``prunekit scratch``, recipes): both numbers are measured now, with
    the same counter, ``convention`` (Rethinking FLOPs by default) and ``input_size``. Dense = the unpruned
    architecture counted densely: for a weight-level checkpoint (with masks) the same model with all its weights,
    for a structured one the unpruned ``create_model(name)`` (same classes and input channels). Pruned = the pruned
    model counted sparse-aware (only non-zero conv/linear weights). Numbers stored in the checkpoint by ``prune``
    (``extra["dense_flops"]``, in the MACs convention) are deliberately not used: they would mix conventions.
    """
    meta = ckpt.meta or {}
    size = tuple(int(s) for s in input_size)
    pruned = _flops(pruned_model, size, sparse=True, convention=convention)
    if ckpt.masks:
        return (_flops(pruned_model, size, sparse=False, convention=convention), pruned, convention,
                "measured: same architecture, all weights", size)
    return (_flops(_unpruned(meta), size, sparse=False, convention=convention), pruned, convention,
            f"measured: unpruned {meta['model']}", size)


def _unpruned(meta: Mapping[str, Any]) -> nn.Module:
    from .models import create_model

    return create_model(meta["model"], num_classes=meta["num_classes"], in_channels=meta["in_channels"])


def _fraction_milestones(config: Any) -> tuple[float, ...]:
    ms = tuple(float(m) for m in config.milestones)
    if ms and all(m < 1 for m in ms):
        return ms
    return tuple(m / config.epochs for m in ms)


def finetune(model: nn.Module, masks: Masks | None, train_data: Any, val_data: Any, config: Any, *,
             out_dir: Any = None, resume: bool = False, resume_anyway: bool = False, hooks: Sequence[Any] = (),
             extra_meta: Mapping[str, Any] | None = None):
    """Finetune ``model`` with ``masks`` kept exactly (``prunekit.engine.trainer.fit``); returns FitResult."""
    from .engine.trainer import fit

    if masks:
        apply_masks(model, masks)
    return fit(model, train_data, val_data, config, masks=masks, hooks=hooks, out_dir=out_dir, resume=resume,
               resume_anyway=resume_anyway, extra_meta=dict(extra_meta or {}, regime="finetune"))


def plan_scratch(ckpt: Checkpoint, model: nn.Module, config: Any, *, budget: str = "B",
                 input_size: Sequence[int], imagenet_style: bool = False,
                 convention: str = DEFAULT_CONVENTION) -> tuple[ScratchBudget, Any]:
    """The Scratch-E/B budget of ``model`` (the checkpoint's fresh architecture, see :func:`scratch_model`) and the
    training config that runs it; ``config.epochs`` is the base budget E_base.

    :func:`train_scratch` and ``prunekit scratch`` (``--plan-only`` too) both call this, so they agree.
    """
    dense, pruned, conv, source, _ = flops_pair(ckpt, model, input_size, convention=convention)
    plan = scratch_budget(config.epochs, dense, pruned, budget=budget, imagenet_style=imagenet_style,
                          convention=conv, milestones=_fraction_milestones(config), dense_flops_source=source)
    if plan.schedule == "step":
        cfg = dataclasses.replace(config, epochs=plan.epochs, schedule="step", step_size=plan.step_size)
    else:
        sched = config.schedule if config.schedule != "step" else "multistep"
        cfg = dataclasses.replace(config, epochs=plan.epochs, schedule=sched, milestones=plan.milestones)
        plan = dataclasses.replace(plan, schedule=sched)  # report the schedule that actually runs
    return plan, cfg


def train_scratch(ckpt: Checkpoint, train_data: Any, val_data: Any, config: Any, *, budget: str = "B",
                  input_size: Sequence[int], imagenet_style: bool = False, out_dir: Any = None,
                  resume: bool = False, resume_anyway: bool = False, convention: str = DEFAULT_CONVENTION,
                  extra_meta: Mapping[str, Any] | None = None):
    """Scratch-E/B: fresh init of the pruned architecture, ``config.epochs`` = the *base* epochs E_base.

    Returns ``(FitResult, ScratchBudget, model)``.
    """
    from .engine.trainer import fit

    model, masks = scratch_model(ckpt, seed=config.seed)
    plan, cfg = plan_scratch(ckpt, model, config, budget=budget, input_size=input_size,
                             imagenet_style=imagenet_style, convention=convention)
    meta = dict(extra_meta or {}, regime=f"scratch-{budget}", scratch_budget=plan.to_dict())
    result = fit(model, train_data, val_data, cfg, masks=masks, out_dir=out_dir, resume=resume,
                 resume_anyway=resume_anyway, extra_meta=meta)
    return result, plan, model
