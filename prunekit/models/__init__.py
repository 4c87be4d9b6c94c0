"""The model zoo: CIFAR-style pruning benchmarks and torchvision-compatible ImageNet models."""
from .registry import ModelInfo, create_model, list_models, model_info, register_model

# Importing the family modules registers their models.
from . import densenet, imagenet, lenet, preresnet, resnet_cifar, vgg, wrn  # noqa: F401,E402

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
