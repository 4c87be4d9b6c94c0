"""Pruning: weight-level masks (``unstructured``) and structured channel removal (``structured``)."""
from .masks import MaskHook, apply_masks, sparsity
from .nm import NMResult, nm_masks, to_semi_structured
from .schedules import AGP, Linear, OneShot, Rounds, Schedule
from .scope import Scope
from .sparsifier import Sparsifier, SparsifierHook
from .unstructured import METHODS, PruneResult, prune_unstructured

__all__ = ["AGP", "Linear", "MaskHook", "METHODS", "NMResult", "OneShot", "PruneResult", "Rounds", "Schedule",
           "Scope", "Sparsifier", "SparsifierHook", "apply_masks", "nm_masks", "prune_unstructured", "sparsity",
           "to_semi_structured"]
