"""prunekit: neural-network pruning for PyTorch.

Unstructured magnitude pruning (layer-wise, global, per-kind, GP, GPMT), L1-norm filter pruning and network
slimming with real channel removal, retraining regimes, and honest measurements (accuracy, params, FLOPs, latency).
"""
from .checkpoint import load_checkpoint, load_model, save_model
from .errors import PrunekitError
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "load_model", "load_checkpoint", "save_model", "PrunekitError",
           "__version__"]
