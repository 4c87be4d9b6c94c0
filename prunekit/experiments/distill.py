"""Ensemble distillation (Li et al. iterative pruning, kesi): a pruned student learns from frozen teachers.

Seed loss (``mode="per_teacher"``, ``alpha=0``): the mean over teachers of ``KL(softmax(t/T) || softmax(s/T))·T²``
with batch-mean KL, and no cross-entropy term. Variants: ``mode="mean_teacher"`` (KL against the averaged teacher
probabilities) and ``alpha > 0`` (``alpha·CE(s, y) + (1 − alpha)·KD``). Teachers see the same augmented inputs as
the student, in eval mode and without gradients.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.hooks import Hook
from ..errors import PrunekitError, check_range

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.trainer import FitResult, TrainConfig, Trainer

KD_MODES = ("per_teacher", "mean_teacher")


def check_kd_args(temperature: float, alpha: float, mode: str) -> None:
    """Raise a PrunekitError naming the first invalid distillation setting."""
    check_range("temperature", float(temperature), 0.0, 1e6, low_open=True)
    check_range("alpha", float(alpha), 0.0, 1.0)
    if mode not in KD_MODES:
        raise PrunekitError(f"unknown distillation mode {mode!r}; valid: {', '.join(KD_MODES)}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor], temperature: float = 5.0,
            mode: str = "per_teacher") -> torch.Tensor:
    """The KD term: ``KL(p_teacher || p_student)·T²`` at temperature ``T`` (batch-mean KL), in float32.

    ``"per_teacher"``: mean of the KL to each teacher. ``"mean_teacher"``: KL to the mean teacher distribution.
    """
    check_kd_args(temperature, 0.0, mode)
    if len(teacher_logits) == 0:
        raise PrunekitError("distillation needs at least one teacher")
    t = float(temperature)
    log_q = F.log_softmax(student_logits.float() / t, dim=1)
    probs = [F.softmax(tl.float() / t, dim=1) for tl in teacher_logits]
    if mode == "per_teacher":
        kl = torch.stack([F.kl_div(log_q, p, reduction="batchmean") for p in probs]).mean()
    else:
        kl = F.kl_div(log_q, torch.stack(probs).mean(dim=0), reduction="batchmean")
    return kl * (t * t)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor], targets: torch.Tensor,
                      temperature: float = 5.0, alpha: float = 0.0, mode: str = "per_teacher",
                      ce: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha·CE(student, targets) + (1 − alpha)·KD``; ``alpha = 0`` is the KD term alone (the seed).

    ``ce`` is a precomputed cross-entropy (e.g. the trainer's, with its label smoothing); default plain CE.
    """
    check_kd_args(temperature, alpha, mode)
    kd = kd_loss(student_logits, teacher_logits, temperature, mode)
    if alpha == 0:
        return kd
    if ce is None:
        ce = F.cross_entropy(student_logits.float(), targets)
    return alpha * ce + (1.0 - alpha) * kd


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with ``requires_grad=False`` on every parameter (in place); return it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class DistillationHook(Hook):
    """Replace the trainer's cross-entropy loss by the distillation loss (see :func:`distillation_loss`).

    Teachers are frozen at construction and moved to the student's device when training starts. The trainer's
    CE (with its label smoothing) is used as the ``alpha`` term; give this hook before any other loss-transforming
    hook, because it treats the incoming loss as the CE term.
    """

    def __init__(self, teachers: Sequence[nn.Module], temperature: float = 5.0, alpha: float = 0.0,
                 mode: str = "per_teacher") -> None:
        check_kd_args(temperature, alpha, mode)
        if len(teachers) == 0:
            raise PrunekitError("distillation needs at least one teacher")
        self.teachers = [freeze(t) for t in teachers]
        self.temperature, self.alpha, self.mode = float(temperature), float(alpha), mode

    def on_fit_start(self, trainer: "Trainer") -> None:
        student = trainer.module
        for i, t in enumerate(self.teachers):
            if t is student:
                raise PrunekitError(f"teacher {i + 1} is the student model itself; pass a copy "
                                    "(copy.deepcopy) to distil a model into itself")
        student_classes = getattr(student, "num_classes", None)
        for i, t in enumerate(self.teachers):
            c = getattr(t, "num_classes", None)
            if student_classes is not None and c is not None and int(c) != int(student_classes):
                raise PrunekitError(f"teacher {i + 1} has {c} classes, the student has {student_classes}")
        self.to(trainer.device)

    def to(self, device: str | torch.device) -> "DistillationHook":
        """Move the teachers to ``device`` (they stay frozen and in eval mode)."""
        self.teachers = [freeze(t.to(device)) for t in self.teachers]
        return self

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """The teachers' logits for ``inputs`` (eval mode, no gradients)."""
        first = next((p for t in self.teachers for p in t.parameters()), None)
        if first is not None and first.device != inputs.device:  # used outside fit(): follow the inputs
            self.to(inputs.device)
        outs = []
        for t in self.teachers:
            if t.training:
                t.eval()
            outs.append(t(inputs).float())
        return outs

    def transform_loss(self, trainer: "Trainer", loss: torch.Tensor, outputs: torch.Tensor,
                       inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return distillation_loss(outputs, self.teacher_logits(inputs), targets, self.temperature, self.alpha,
                                 self.mode, ce=loss)


def distill(student: nn.Module, teachers: Sequence[nn.Module], train_data: Any, val_data: Any,
            config: "TrainConfig", *, temperature: float = 5.0, alpha: float = 0.0, mode: str = "per_teacher",
            masks: Mapping[str, torch.Tensor] | None = None, out_dir: str | Path | None = None,
            resume: bool = False, resume_anyway: bool = False, extra_meta: Mapping[str, Any] | None = None
            ) -> "FitResult":
    """Train ``student`` (in place) against frozen ``teachers`` with :class:`DistillationHook`.

    ``masks`` (the student's, e.g. from its checkpoint) stay exactly enforced. Outputs in ``out_dir`` as for
    :func:`prunekit.engine.trainer.fit`; checkpoints record the distillation settings.
    """
    from ..engine.trainer import fit

    hook = DistillationHook(teachers, temperature=temperature, alpha=alpha, mode=mode)
    meta = dict(extra_meta or {})
    meta["distill"] = {"temperature": float(temperature), "alpha": float(alpha), "mode": mode,
                       "teachers": len(teachers)}
    return fit(student, train_data, val_data, config, masks=masks, hooks=[hook], out_dir=out_dir, resume=resume,
               resume_anyway=resume_anyway, extra_meta=meta)
