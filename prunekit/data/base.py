"""``ImageDataset``: one split of an image-classification dataset plus its preprocessing policy.

Two storage kinds:

* **tensor-backed** (digits, MNIST, Fashion-MNIST, CIFAR, synthetic): ``images`` uint8 ``[N, C, H, W]`` and
  ``labels`` int64 ``[N]`` in memory; batches are gathered by indexing these tensors.
* **folder-backed** (ImageNet): ``samples`` is a list of ``(path, label)``; images are decoded lazily by
  ``dataset[i]`` (a uint8 ``[3, H, W]`` tensor of the file's own size).

``train_transform(batch, generator)`` and ``eval_transform(batch)`` turn a uint8 batch (tensor, or list of
tensors for folder datasets) into the normalised float32 model input, on the batch's device.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..errors import PrunekitError
from . import transforms as T
from .formats import decode_image


@dataclass(frozen=True)
class Augment:
    """Training augmentation policy of a dataset.

    ``crop_pad`` > 0: zero-pad + random crop back to the input size. ``hflip``: random horizontal flip (p=0.5).
    ``resized_crop``: ImageNet RandomResizedCrop to ``crop_size`` (train) and resize-``resize_size`` + centre
    crop (eval); with it ``crop_pad`` is ignored. ``enabled=False`` makes training use the eval transform.
    """

    crop_pad: int = 0
    hflip: bool = False
    resized_crop: bool = False
    crop_size: int = T.IMAGENET_CROP
    resize_size: int = T.IMAGENET_RESIZE
    enabled: bool = True

    def describe(self) -> str:
        """Short human-readable summary, e.g. ``"pad-4 crop + hflip"``."""
        if not self.enabled:
            return "none"
        if self.resized_crop:
            parts = [f"random-resized-crop {self.crop_size}"]
        else:
            parts = [f"pad-{self.crop_pad} crop"] if self.crop_pad > 0 else []
        if self.hflip:
            parts.append("hflip")
        return " + ".join(parts) if parts else "none"


@dataclass(eq=False)
class ImageDataset:
    """One split of a dataset. See the module docstring for the two storage kinds."""

    name: str
    train: bool
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    images: Optional[torch.Tensor] = field(default=None, repr=False)
    labels: Optional[torch.Tensor] = field(default=None, repr=False)
    samples: Optional[list[tuple[str, int]]] = field(default=None, repr=False)
    classes: Optional[tuple[str, ...]] = field(default=None, repr=False)
    augment: Augment = field(default_factory=Augment)
    root: Optional[str] = None

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise PrunekitError(f"dataset {self.name}: mean/std need {self.in_channels} entries")
        if (self.images is None) == (self.samples is None):
            raise PrunekitError(f"dataset {self.name}: give either images+labels or samples")
        if self.images is not None:
            if self.labels is None:
                raise PrunekitError(f"dataset {self.name}: images given without labels")
            if self.images.dtype != torch.uint8 or self.images.dim() != 4:
                raise PrunekitError(f"dataset {self.name}: images must be uint8 [N, C, H, W], got "
                                    f"{self.images.dtype} {tuple(self.images.shape)}")
            if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (self.images.shape[0],):
                raise PrunekitError(f"dataset {self.name}: labels must be int64 [{self.images.shape[0]}], got "
                                    f"{self.labels.dtype} {tuple(self.labels.shape)}")

    # ----------------------------------------------------------------------------------------- access
    @property
    def is_tensor(self) -> bool:
        """True for in-memory (tensor-backed) datasets."""
        return self.images is not None

    def __len__(self) -> int:
        return int(self.images.shape[0]) if self.images is not None else len(self.samples or [])

    @property
    def targets(self) -> torch.Tensor:
        """All labels as an int64 tensor (no image decoding)."""
        if self.labels is not None:
            return self.labels
        return torch.tensor([lab for _, lab in self.samples or []], dtype=torch.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(uint8 [C, H, W] image, label)``; folder datasets decode the file here."""
        if self.images is not None:
            return self.images[index], int(self.labels[index])
        path, label = self.samples[index]
        return decode_image(path), label

    # ----------------------------------------------------------------------------------------- transforms
    def train_transform(self, batch: T.Batch, generator: torch.Generator, *,
                        shard: T.Shard | None = None) -> torch.Tensor:
        """Augment and normalise a uint8 batch for training (randomness from ``generator``; see ``Shard``)."""
        aug = self.augment
        if not aug.enabled:
            return self.eval_transform(batch)
        if aug.resized_crop:
            x = T.random_resized_crop(batch, generator, size=aug.crop_size, shard=shard)
        else:
            x = _stack(batch)
            if aug.crop_pad > 0:
                x = T.random_crop_with_padding(x, aug.crop_pad, generator, shard=shard)
        if aug.hflip:
            x = T.random_hflip(x, generator, shard=shard)
        return T.normalize(x, self.mean, self.std)

    def eval_transform(self, batch: T.Batch) -> torch.Tensor:
        """Normalise a uint8 batch for evaluation (ImageNet: resize + centre crop first)."""
        if self.augment.resized_crop:
            x = T.resize_center_crop(batch, resize=self.augment.resize_size, crop=self.augment.crop_size)
        else:
            x = _stack(batch)
        return T.normalize(x, self.mean, self.std)

    def without_augmentation(self) -> "ImageDataset":
        """A copy (sharing the data) whose ``train_transform`` equals ``eval_transform``."""
        return dataclasses.replace(self, augment=dataclasses.replace(self.augment, enabled=False))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (for ``summary.json``)."""
        return {"name": self.name, "split": "train" if self.train else "test", "size": len(self),
                "num_classes": self.num_classes, "in_channels": self.in_channels,
                "image_size": list(self.image_size), "mean": list(self.mean), "std": list(self.std),
                "augment": self.augment.describe(), "root": self.root}


def _stack(batch: T.Batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    items = list(batch)
    if not items:
        raise PrunekitError("empty batch")
    try:
        return torch.stack(items)
    except RuntimeError as exc:
        raise PrunekitError(f"batch images differ in size: {exc}") from None


def subset(dataset: ImageDataset, n: int, seed: int | None = None) -> ImageDataset:
    """The first ``n`` samples of ``dataset`` (``seed=None``), or ``n`` samples drawn without replacement by a
    ``torch.randperm`` seeded with ``seed`` (kept in ascending index order). Shares the underlying storage."""
    total = len(dataset)
    if n < 1 or n > total:
        raise PrunekitError(f"subset size must be in [1, {total}] for dataset {dataset.name}, got {n}")
    if seed is None:
        idx = torch.arange(n)
    else:
        g = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(total, generator=g)[:n].sort().values
    if dataset.images is not None:
        return dataclasses.replace(dataset, images=dataset.images[idx], labels=dataset.labels[idx])
    samples = dataset.samples or []
    return dataclasses.replace(dataset, samples=[samples[i] for i in idx.tolist()])
