"""prunekit: neural-network pruning for PyTorch.

Unstructured magnitude pruning (layer-wise, global, per-kind, GP, GPMT), structured pruning of any traceable model
with real channel removal (L1-filter, network slimming, global/budgeted channel pruning), retraining regimes, and
honest measurements (accuracy, params, FLOPs, latency).
"""
from . import metrics  # noqa: F401  (prunekit.metrics.count_params, count_flops, measure_latency)
from .checkpoint import load_checkpoint, load_model, save_model
from .errors import PrunekitError
from .deploy import export
from .factory import build_model
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["create_model", "build_model", "list_models", "load_model", "load_checkpoint", "save_model",
           "PrunekitError", "export", "metrics", "__version__"]
