"""prunekit inside the training loops people already use.

- :mod:`prunekit.integrations.lightning`: ``SparsityCallback`` (a :class:`~prunekit.pruning.sparsifier.Sparsifier`
  attached to the optimizers Lightning builds; state in Lightning checkpoints) and ``StructuredPruningCallback``
  (channels removed at a chosen epoch, optimizers rebuilt, one ``trainer.fit``). Needs ``pip install
  'prunekit[lightning]'``.
- :mod:`prunekit.integrations.transformers`: ``SparsityCallback`` for the Hugging Face ``Trainer`` (state in its
  checkpoint folders, sparsity in its logs) and ``prune_before_training``. Needs ``pip install
  'prunekit[transformers]'``.

This package imports nothing itself: the optional dependencies are imported by those modules, and a missing one is
one :class:`~prunekit.errors.PrunekitError` naming the extra to install.
"""
from __future__ import annotations

__all__: list[str] = []
