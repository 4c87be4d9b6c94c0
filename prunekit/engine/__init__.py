"""Training engine: one loop with hooks, optimizers and schedules, evaluation, DDP."""
from .evaluate import evaluate
from .hooks import Hook
from .trainer import FitResult, TrainConfig, Trainer, fit

__all__ = ["evaluate", "fit", "FitResult", "Hook", "TrainConfig", "Trainer"]
