"""Pruning: weight-level masks (``unstructured``) and structured channel removal (``structured``)."""
from .masks import apply_masks, sparsity
from .nm import NMResult, nm_masks, to_semi_structured
from .schedules import AGP, Cubic, Linear, OneShot, Rounds, Schedule
from .scope import Scope
from .sparsifier import MaskHook, Sparsifier, SparsifierHook
from .unstructured import METHODS, PruneResult, prune_unstructured

__all__ = ["AGP", "Cubic", "Linear", "MaskHook", "METHODS", "NMResult", "OneShot", "PruneResult", "Rounds", "Schedule",
           "Scope", "Sparsifier", "SparsifierHook", "apply_masks", "nm_masks", "prune_unstructured", "sparsity",
           "to_semi_structured"]
