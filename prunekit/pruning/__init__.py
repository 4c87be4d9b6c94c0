"""Pruning: weight-level masks (``unstructured``) and structured channel removal (``structured``)."""
from .masks import MaskHook, apply_masks, sparsity
from .scope import Scope
from .unstructured import METHODS, PruneResult, prune_unstructured

__all__ = ["MaskHook", "METHODS", "PruneResult", "Scope", "apply_masks", "prune_unstructured", "sparsity"]
