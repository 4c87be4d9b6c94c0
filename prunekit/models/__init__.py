"""The model zoo: CIFAR-style pruning benchmarks and torchvision-compatible ImageNet models."""
import importlib as _importlib

from .registry import create_model, list_models, register_model

# Importing the family modules registers their models.  (TEMPORARY while the zoo is written: skip missing files.)
for _fam in ("vgg", "resnet_cifar", "preresnet", "densenet", "wrn", "lenet", "imagenet"):
    try:
        _importlib.import_module(f"{__name__}.{_fam}")
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_fam}":
            raise

__all__ = ["create_model", "list_models", "register_model"]
