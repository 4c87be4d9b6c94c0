"""The model zoo: CIFAR-style pruning benchmarks and torchvision-compatible ImageNet models."""
from .registry import create_model, list_models, register_model

# Importing the family modules registers their models.
from . import densenet, imagenet, lenet, preresnet, resnet_cifar, vgg, wrn  # noqa: F401,E402

__all__ = ["create_model", "list_models", "register_model"]
