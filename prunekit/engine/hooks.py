"""Training hooks: how pruning features plug into the training loop without forking it.

A hook sees the :class:`~prunekit.engine.trainer.Trainer` at fixed points of every step:

``transform_loss`` (add a distillation or penalty term) → backward → ``after_backward`` (gradients are final and
unscaled: add a subgradient, mask gradients) → optimizer step → ``after_step`` (re-apply masks) → ...
"""
from __future__ import annotations

from typing import Any

import torch

#: A :class:`prunekit.engine.trainer.Trainer`. Not imported: this module is a leaf that pruning code (masks,
#: slimming, distillation) builds on, so it must not depend on the trainer, which depends on them.
Trainer = Any


class Hook:
    """Base class; override what you need. Hooks run in the order they were given."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch (also on resume)."""

    def transform_loss(self, trainer: Trainer, loss: torch.Tensor, outputs: torch.Tensor,
                       inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the loss to back-propagate (default: unchanged)."""
        return loss

    def after_backward(self, trainer: Trainer) -> None:
        """Gradients of ``trainer.module`` are ready (and unscaled under AMP)."""

    def after_step(self, trainer: Trainer) -> None:
        """The optimizer has just stepped."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after evaluation at the end of each epoch (``metrics`` can be extended)."""
