"""Model size and cost: parameter counts, MACs / FLOPs (dense, sparse-aware, two conventions), latency.

See :mod:`prunekit.metrics.flops` for exactly what is and is not counted.
"""
from .flops import CONVENTIONS, FlopsReport, count_flops, layer_table, summarize
from .latency import LatencyReport, measure_latency
from .params import count_nonzero_params, count_params, format_count

__all__ = ["CONVENTIONS", "FlopsReport", "LatencyReport", "count_flops", "count_nonzero_params", "count_params",
           "format_count", "layer_table", "measure_latency", "summarize"]
