"""Structured pruning with real channel removal: L1-norm filter pruning and network slimming.

Pruned models are physically smaller zoo models (rebuilt from their cfg); the channel plan (:mod:`.plan`) records
which original channels every layer keeps, relative to the unpruned base model.
"""
from .core import StructuredResult, zeroed_reference
from .l1_filter import NAMED_PLANS, iterative_round, prune_iterative, prune_l1_filter
from .plan import apply_plan, compose_plans, plan_from_json, plan_to_json
from .slimming import BNL1Hook, BNMaskHook, prune_slimming, prune_slimming_mask

__all__ = ["StructuredResult", "zeroed_reference", "NAMED_PLANS", "iterative_round", "prune_iterative",
           "prune_l1_filter", "apply_plan", "compose_plans", "plan_from_json", "plan_to_json", "BNL1Hook",
           "BNMaskHook", "prune_slimming", "prune_slimming_mask"]
