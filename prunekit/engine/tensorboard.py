"""Optional TensorBoard scalars for training (``pip install prunekit[tensorboard]``); ``log.csv`` stays the record.

Per epoch (step = the epoch number, 1-based): ``train/loss``, ``train/top1``, ``val/loss``, ``val/top1``,
``val/top5``, ``lr`` and, when the run has masks, ``sparsity/overall`` and ``sparsity/<tensor name>`` (fraction of
masked-out entries).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import PrunekitError

_SCALARS = {"train_loss": "train/loss", "train_top1": "train/top1", "val_loss": "val/loss", "val_top1": "val/top1",
            "val_top5": "val/top5", "lr": "lr"}


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PrunekitError("TensorBoard logging needs the tensorboard package: pip install "
                            "'prunekit[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter


class TensorBoardWriter:
    """Writes one epoch's metrics (a :class:`~prunekit.engine.trainer.Trainer` log row) as TensorBoard scalars.

    >>> tb = TensorBoardWriter("runs/a/tensorboard")  # doctest: +SKIP
    >>> tb.log_epoch({"epoch": 1, "train_loss": 0.7, "lr": 0.1}, masks=None); tb.close()  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self._cls = _summary_writer_class()  # fail before training starts, not after the first epoch
        self._writer: Any = None

    def log_epoch(self, row: Mapping[str, Any], masks: Mapping[str, torch.Tensor] | None = None) -> None:
        """Write the scalars of ``row`` (and the masks' sparsity) at step ``row["epoch"]``, then flush."""
        from ..pruning.masks import layer_sparsity, sparsity

        if self._writer is None:
            self._writer = self._cls(log_dir=str(self.log_dir))
        step = int(row["epoch"])
        for key, tag in _SCALARS.items():
            if row.get(key) is not None:
                self._writer.add_scalar(tag, float(row[key]), step)
        if masks:
            self._writer.add_scalar("sparsity/overall", sparsity(masks), step)
            for name, value in layer_sparsity(masks).items():
                self._writer.add_scalar(f"sparsity/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (no-op if nothing was written)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
