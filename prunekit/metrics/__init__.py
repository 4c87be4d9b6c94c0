"""Model size and cost: parameter counts, MACs / FLOPs (dense, sparse-aware, three conventions), latency
(one model, or several timed in turn within a budget).

See :mod:`prunekit.metrics.flops` for exactly what is and is not counted.
"""
from .flops import CONVENTIONS, FlopsReport, count_flops, layer_table, summarize
from .latency import LatencyComparison, LatencyReport, compare_latency, measure_latency
from .params import count_nonzero_params, count_params, format_count

__all__ = ["CONVENTIONS", "FlopsReport", "LatencyComparison", "LatencyReport", "compare_latency", "count_flops",
           "count_nonzero_params", "count_params", "format_count", "layer_table", "measure_latency", "summarize"]
