"""The model zoo: CIFAR-style pruning benchmarks, the seeds' own CIFAR models (docs/SEED_MODELS.md) and
torchvision-compatible ImageNet models."""
from .registry import (ModelInfo, NamedPlan, create_model, list_models, model_info, model_options, named_plan,
                       named_plans, natural_input_size, register_model)

# Importing the family modules registers their models.
from . import densenet, imagenet, lenet, preresnet, resnet_cifar, vgg, wrn  # noqa: F401,E402
from . import efficientnet, gpmt, mcts_resnet, weight_level  # noqa: F401,E402

__all__ = ["ModelInfo", "NamedPlan", "create_model", "list_models", "model_info", "model_options", "named_plan",
           "named_plans", "natural_input_size", "register_model"]
