"""Optimizers and learning-rate schedules.

Schedules are pure functions of training progress (epoch, step), so resuming needs no scheduler state and the
learning rate after a resume is exactly the uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from ..errors import PrunekitError, UnknownNameError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "step", "cosine", "linear", "onecycle", "constant")


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, *, momentum: float = 0.9,
                    nesterov: bool = False, weight_decay: float = 1e-4,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov, weight decay on all parameters, as the seeds), Adam or AdamW."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise UnknownNameError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def resolve_milestones(milestones: Sequence[float], epochs: int) -> list[int]:
    """Milestones given as fractions of ``epochs`` (all < 1) or as epoch numbers -> sorted epoch numbers.

    Fractions become ``int(epochs * m)`` (truncation, as every seed writes it: ``[int(E*0.5), int(E*0.75)]``;
    E = 178 gives ``[89, 133]``, not Python's half-to-even ``round`` ``[89, 134]``).

    The result is strictly increasing: milestones that coincide (E = 2 gives ``int(1.0) == int(1.5) == 1``;
    ``--milestones 20,20``) count **once**, because the seeds decay with ``if epoch in [m1, m2]: lr *= gamma``, a
    membership test that multiplies by ``gamma`` once however many milestones name that epoch. A milestone of 0
    (E = 1 gives ``[0]``) decays from the first epoch, again as the seeds do. Milestones at or past ``epochs`` are
    kept and never reached.
    """
    ms = list(milestones)
    if ms and all(0 < m < 1 for m in ms):
        return sorted({int(epochs * m) for m in ms})
    if any(m < 0 for m in ms):
        raise PrunekitError(f"milestones must be non-negative, got {ms}")
    return sorted({int(m) for m in ms})


def lr_factor(schedule: str, epoch: int, step: int, steps_per_epoch: int, epochs: int, *,
              milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1, step_size: int = 30,
              warmup_epochs: float = 0.0, per_step: bool = False, final_factor: float = 0.0) -> float:
    """Multiplier of the base LR at ``(epoch, step within epoch)``.

    ``multistep``/``step`` change at epoch boundaries; ``cosine``/``linear`` are evaluated per epoch (as the seeds)
    unless ``per_step``; ``onecycle`` is per step (linear warm-up over 30% then cosine down). A linear warm-up over
    ``warmup_epochs`` (per step) multiplies any schedule.
    """
    t_epoch = epoch + (step / steps_per_epoch if per_step or schedule == "onecycle" else 0.0)
    if schedule == "constant":
        f = 1.0
    elif schedule == "multistep":
        f = gamma ** sum(epoch >= m for m in resolve_milestones(milestones, epochs))
    elif schedule == "step":
        if step_size <= 0:
            raise PrunekitError(f"step_size must be positive, got {step_size}")
        f = gamma ** (epoch // step_size)
    elif schedule == "cosine":
        f = final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * t_epoch / epochs))
    elif schedule == "linear":
        f = 1.0 - (1 - final_factor) * t_epoch / epochs
    elif schedule == "onecycle":
        t = (epoch * steps_per_epoch + step) / max(1, epochs * steps_per_epoch)
        if t < 0.3:
            f = 0.04 + 0.96 * t / 0.3
        else:
            f = 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))
    else:
        raise UnknownNameError(f"unknown LR schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if warmup_epochs > 0:
        t = epoch + step / steps_per_epoch
        if t < warmup_epochs:
            f *= (t + 1.0 / steps_per_epoch) / warmup_epochs
    return f
