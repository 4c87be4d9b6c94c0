"""Structured pruning with real channel removal: L1-norm filter pruning and network slimming.

Pruned models are physically smaller zoo models (rebuilt from their cfg); the channel plan
(:mod:`.plan`) records which original channels every layer keeps.
"""
from .core import StructuredResult, zeroed_reference
from .l1_filter import NAMED_PLANS, iterative_round, prune_iterative, prune_l1_filter
from .plan import apply_plan, compose_plans, plan_from_json, plan_to_json

__all__ = ["StructuredResult", "zeroed_reference", "NAMED_PLANS", "iterative_round", "prune_iterative",
           "prune_l1_filter", "apply_plan", "compose_plans", "plan_from_json", "plan_to_json"]
