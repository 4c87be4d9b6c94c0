"""Calibrated one-shot pruning (Wanda, SparseGPT), one block at a time: :func:`prune_calibrated`.

``prunekit.prune_unstructured(model, "wanda" | "sparsegpt", ratio, data=...)`` calls it.
"""
from .blocks import BlockChain, find_blocks
from .run import CALIBRATED_METHODS, CalibratedReport, CalibratedResult, prune_calibrated
from .sparsegpt import sparsegpt_prune
from .wanda import wanda_mask, wanda_scores

__all__ = ["BlockChain", "CALIBRATED_METHODS", "CalibratedReport", "CalibratedResult", "find_blocks",
           "prune_calibrated", "sparsegpt_prune", "wanda_mask", "wanda_scores"]
