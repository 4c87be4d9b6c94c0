"""Experiments built on the library: ensembles of pruned rounds ("E-x-y") and ensemble distillation."""
from .distill import DistillationHook, KD_MODES, distill, distillation_loss, kd_loss
from .ensemble import MODES as ENSEMBLE_MODES
from .ensemble import check_members, combine_outputs, ensemble_logits, evaluate_ensemble, load_members

__all__ = ["DistillationHook", "ENSEMBLE_MODES", "KD_MODES", "check_members", "combine_outputs", "distill",
           "distillation_loss", "ensemble_logits", "evaluate_ensemble", "kd_loss", "load_members"]
