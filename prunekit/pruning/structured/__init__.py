"""Structured pruning with real removal of channels, attention heads and blocks, for any PyTorch model.

* :mod:`.capture`, :mod:`.rules`, :mod:`.graph` — the dependency graph discovered from one real run of the model:
  which channels must be removed together (groups), and every module dimension that slicing touches;
  :mod:`.multidim` and :mod:`.transformer_rules` — heads, GQA, embeddings and stream norms of transformers;
  :mod:`.heads`, :mod:`.depth`, :mod:`.hf` — head attributes, block removal, Hugging Face configs;
* :mod:`.importance` — l1, l2, bn, taylor, random scores per channel;
* :mod:`.pruner` — :func:`prune_structured` (uniform ratio, global ranking, MACs/params budgets), plans, slicing;
* :mod:`.l1_filter`, :mod:`.slimming` — Li et al.'s named plans and kesi rounds (kept filters by L1 norm or at
  random: the control), network slimming, on the graph;
* :mod:`.plan` — the JSON channel plan, :func:`apply_plan`, :func:`compose_plans`;
* :mod:`.latency_target` — :func:`prune_to_latency`: channels removed until the *measured* latency meets a target;
* :mod:`.verify` — exactness against the unpruned model whose consumers ignore the removed channels;
* :mod:`.api` — :func:`prune_and_report`: one method run end to end (rounds chained, verified, masks merged,
  params/MACs/FLOPs/latency before and after, accuracies through a callback) as a :class:`StructuredReport`.

Extension API: :func:`register_module_rule`, :func:`register_function_rule`, :func:`register_method_rule`.
"""
from . import zoo_rules  # noqa: F401  (registers the rules of prunekit's own layers)
from . import cnn_rules  # noqa: F401  (functional norms/convs/linears, transposed convs, detection ops)
from .api import StructuredReport, prune_and_report
from .graph import DependencyGraph, Group, build_graph
from .latency_target import prune_to_latency
from .l1_filter import NAMED_PLANS, iterative_round, prune_iterative, prune_l1_filter
from .plan import apply_plan, compose_plans, plan_from_json, plan_to_json
from .pruner import StructuredResult, graph_for, prune_structured
from .rules import (ELEMENTWISE, OPAQUE_RULE, Ch, RuleContext, register_function_rule, register_method_rule,
                    register_module_rule, single_op)
from .slimming import BNL1Hook, BNMaskHook, prune_slimming, prune_slimming_mask
from .verify import check_exact, zeroed_reference

__all__ = ["DependencyGraph", "Group", "build_graph", "NAMED_PLANS", "iterative_round", "prune_iterative",
           "prune_l1_filter", "apply_plan", "compose_plans", "plan_from_json", "plan_to_json", "StructuredResult",
           "graph_for", "prune_structured", "ELEMENTWISE", "OPAQUE_RULE", "Ch", "RuleContext",
           "register_function_rule", "register_method_rule", "register_module_rule", "single_op", "BNL1Hook",
           "BNMaskHook",
           "prune_slimming", "prune_slimming_mask", "check_exact", "zeroed_reference", "prune_to_latency",
           "StructuredReport", "prune_and_report"]
