"""Datasets, batched on-device augmentation and deterministic (DDP-shardable) batch loading.

>>> from prunekit.data import get_dataset, BatchLoader
>>> train = get_dataset("digits", train=True)             # 1,437 images 1x8x8, 10 classes
>>> loader = BatchLoader(train, batch_size=64, shuffle=True, seed=0)
>>> loader.set_epoch(0)
>>> inputs, targets = next(iter(loader))                   # float32 [64, 1, 8, 8], int64 [64]

Module map: ``datasets`` (registry, digits, synthetic), ``disk`` (MNIST/Fashion-MNIST IDX, CIFAR batches,
ImageNet folders), ``formats`` (IDX reader, safe unpickler, image decoding), ``base`` (``ImageDataset``,
``Augment``, ``subset``), ``transforms`` (batched augmentation), ``loader`` (``BatchLoader``).
"""
from __future__ import annotations

from .base import Augment, ImageDataset, subset
from .datasets import dataset_info, get_dataset, list_datasets, make_synthetic, parse_dataset_name
from .disk import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from .loader import BatchLoader, derive_seed
from .transforms import Shard

__all__ = ["Augment", "BatchLoader", "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ImageDataset",
           "Shard", "dataset_info", "derive_seed", "get_dataset", "list_datasets", "make_synthetic",
           "parse_dataset_name", "subset"]
