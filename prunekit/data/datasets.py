"""Dataset registry: ``get_dataset(name, root, train)`` and ``list_datasets()``.

========================  ===================================================================================
name                      source, split, size, normalisation, training augmentation
========================  ===================================================================================
``digits``                scikit-learn's bundled ``load_digits`` (1,797 images 8x8, values 0..16 scaled to
                          uint8 ``round(v*255/16)``). Fixed split: ``numpy.random.RandomState(0).permutation(1797)``,
                          train = first 1,437 of that order, test = remaining 360. Mean/std of the train split:
                          0.3054 / 0.3757. Augment: pad-1 crop, no flip (digits are not mirror-symmetric).
``mnist``                 IDX files (gz or raw) in ``root`` (default ``/usr/share/datasets/mnist/``);
                          60k/10k 1x28x28; 0.1307 / 0.3081; pad-3 crop, no flip.
``fashion-mnist``         IDX files in ``root`` (default ``/usr/share/datasets/fashion-mnist/``, Debian package
                          ``dataset-fashion-mnist``); 60k/10k 1x28x28; 0.2860 / 0.3530; pad-3 crop + flip.
``cifar10``/``cifar100``  python batches in ``root`` or ``root/cifar-10-batches-py`` / ``root/cifar-100-python``
                          (default root ``$PRUNEKIT_DATA`` or ``./data``); 50k/10k 3x32x32; CIFAR mean/std (also
                          for CIFAR-100, as the seed codebases do); pad-4 crop + flip. CIFAR-100 uses fine labels.
``imagenet``              ``root/train/<class>/*`` and ``root/val/<class>/*``, decoded lazily with Pillow;
                          RandomResizedCrop 224 + flip for training, resize 256 + centre crop 224 for eval.
``synthetic``             deterministic random images for tests (see :func:`make_synthetic`).
========================  ===================================================================================

Options may be given as keyword arguments or as a name suffix: ``"synthetic:n=128,size=32,classes=4"``.
Padding of the random crop is ``max(1, H // 8)`` (:func:`prunekit.data.transforms.default_pad`).

Every dataset with the pad + random-crop augmentation (all but ``imagenet``) also takes ``pad=N`` (pixels per
side, 0 = no crop) and ``pad_mode=constant|reflect|replicate`` (default ``constant``, zero fill). GPMT's CIFAR
training pads with ``F.pad(x, (4, 4, 4, 4), mode='reflect')`` before ``RandomCrop(32)``:
``--dataset cifar10:pad_mode=reflect``. (Its MobileNet runs use no padding at all: ``cifar10:pad=0``.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import PrunekitError, UnknownNameError, check_number
from .base import Augment, ImageDataset, subset
from .disk import (FASHION_MEAN, FASHION_STD, MNIST_MEAN, MNIST_STD, load_cifar, load_idx_dataset,
                   load_image_folder)
from .transforms import PAD_MODES, CropPad, default_pad

__all__ = ["get_dataset", "list_datasets", "dataset_info", "make_synthetic", "subset", "parse_dataset_name",
           "DIGITS_MEAN", "DIGITS_STD"]

DIGITS_MEAN, DIGITS_STD = (0.3054,), (0.3757,)
DIGITS_TRAIN_SIZE = 1437
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
MNIST_ROOT = "/usr/share/datasets/mnist"


@dataclass(frozen=True)
class _Spec:
    build: Callable[..., ImageDataset]
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    description: str


def _digits(root: str | None, train: bool) -> ImageDataset:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.rint(np.asarray(raw.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.RandomState(0).permutation(images.shape[0])
    idx = order[:DIGITS_TRAIN_SIZE] if train else order[DIGITS_TRAIN_SIZE:]
    x = torch.from_numpy(np.ascontiguousarray(images[idx])).unsqueeze(1)
    y = torch.from_numpy(np.asarray(raw.target, dtype=np.int64)[idx])
    return ImageDataset(name="digits", train=train, num_classes=10, in_channels=1, image_size=(8, 8),
                        mean=DIGITS_MEAN, std=DIGITS_STD, images=x, labels=y,
                        augment=Augment(crop_pad=default_pad(8), hflip=False), root="sklearn:load_digits")


def _fashion(root: str | None, train: bool) -> ImageDataset:
    folder = Path(root) if root is not None else Path(FASHION_ROOT)
    how = (f"Install it with 'apt-get install dataset-fashion-mnist' (files land in {FASHION_ROOT}) or pass a "
           "folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
           "t10k-labels-idx1-ubyte.gz with --data-dir.")
    return load_idx_dataset("fashion-mnist", folder, train, FASHION_MEAN, FASHION_STD, hflip=True, how_to_get=how)


def _mnist(root: str | None, train: bool) -> ImageDataset:
    folder = Path(root) if root is not None else Path(MNIST_ROOT)
    how = ("Download the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
           "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into a folder and pass it with --data-dir.")
    return load_idx_dataset("mnist", folder, train, MNIST_MEAN, MNIST_STD, hflip=False, how_to_get=how)


def _cifar10(root: str | None, train: bool) -> ImageDataset:
    return load_cifar("cifar10", root, train)


def _cifar100(root: str | None, train: bool) -> ImageDataset:
    return load_cifar("cifar100", root, train)


def _imagenet(root: str | None, train: bool, crop_size: int = 224, resize_size: int = 256) -> ImageDataset:
    crop_size, resize_size = _imagenet_sizes(crop_size, resize_size)
    return load_image_folder("imagenet", root, train, crop_size=crop_size, resize_size=resize_size)


def _imagenet_sizes(crop_size: Any, resize_size: Any) -> tuple[int, int]:
    return (int(check_number("imagenet option crop_size", crop_size, low=1, high=4096, integer=True)),
            int(check_number("imagenet option resize_size", resize_size, low=1, high=8192, integer=True)))


def make_synthetic(train: bool = True, n: int = 64, channels: int = 3, size: int = 16, classes: int = 10,
                   seed: int = 0, noise: float = 24.0, augment: bool = True) -> ImageDataset:
    """Deterministic, learnable random images: class ``k`` has a fixed mean colour, images = colour + noise.

    Per channel the class colours are ``classes`` evenly spaced levels in [40, 215] in a seeded random order, so
    every class differs from every other in every channel. Labels are balanced (``i % classes``, shuffled).
    Train and test draw independent noise/labels around the same colours (same ``seed``). Mean/std are the
    nominal (0.5, 0.25) per channel. Augment (``augment=True``): pad-``max(1, size//8)`` crop + flip.
    """
    n, channels, size, classes, seed, noise, augment = _synthetic_options(
        {"n": n, "channels": channels, "size": size, "classes": classes, "seed": seed, "noise": noise,
         "augment": augment}).values()
    g = torch.Generator().manual_seed(int(seed))
    steps = torch.stack([torch.randperm(classes, generator=g) for _ in range(channels)], dim=1)  # [K, C]
    colours = 40.0 + 175.0 * steps.to(torch.float64) / (classes - 1)
    gs = torch.Generator().manual_seed(int(seed) * 2 + (0 if train else 1) + 1_000_003)
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=gs)]
    pix = colours[labels][:, :, None, None] + float(noise) * torch.randn(n, channels, size, size, generator=gs,
                                                                          dtype=torch.float64)
    images = pix.round().clamp(0, 255).to(torch.uint8)
    aug = Augment(crop_pad=default_pad(size), hflip=True, enabled=bool(augment))
    return ImageDataset(name="synthetic", train=train, num_classes=classes, in_channels=channels,
                        image_size=(size, size), mean=(0.5,) * channels, std=(0.25,) * channels, images=images,
                        labels=labels.to(torch.int64), augment=aug, root=None)


_SYNTHETIC_INTS = {"n": (1, 10_000_000), "channels": (1, 64), "size": (1, 4096), "classes": (2, 100_000),
                   "seed": (0, 2 ** 62)}
_SYNTHETIC_DEFAULTS = {"n": 64, "channels": 3, "size": 16, "classes": 10, "seed": 0, "noise": 24.0, "augment": True}
MAX_SYNTHETIC_ELEMENTS = 1 << 28  # n * channels * size**2 (built through a float64 buffer: 2 GiB at the bound)


def _synthetic_options(options: dict[str, Any]) -> dict[str, Any]:
    """The synthetic dataset's options (defaults filled in), validated: a bad one is a PrunekitError naming it."""
    out = dict(_SYNTHETIC_DEFAULTS)
    out.update(options)
    for key, (low, high) in _SYNTHETIC_INTS.items():
        out[key] = check_number(f"synthetic dataset option {key}", out[key], low=low, high=high, integer=True)
    out["noise"] = float(check_number("synthetic dataset option noise", out["noise"], low=0, high=1000))
    if not isinstance(out["augment"], bool):
        raise PrunekitError(f"synthetic dataset option augment must be true or false, got {out['augment']!r}")
    elements = out["n"] * out["channels"] * out["size"] ** 2
    if elements > MAX_SYNTHETIC_ELEMENTS:
        raise PrunekitError(f"synthetic dataset of n={out['n']} images {out['channels']}x{out['size']}x{out['size']} "
                            f"has {elements:,} pixels, more than {MAX_SYNTHETIC_ELEMENTS:,}")
    return out


def _synthetic(root: str | None, train: bool, **options: Any) -> ImageDataset:
    return make_synthetic(train=train, **options)


_SPECS: dict[str, _Spec] = {
    "digits": _Spec(_digits, 10, 1, (8, 8), "scikit-learn digits, 1,437/360 fixed split"),
    "mnist": _Spec(_mnist, 10, 1, (28, 28), f"MNIST IDX files (default {MNIST_ROOT})"),
    "fashion-mnist": _Spec(_fashion, 10, 1, (28, 28), f"Fashion-MNIST IDX files (default {FASHION_ROOT})"),
    "cifar10": _Spec(_cifar10, 10, 3, (32, 32), "CIFAR-10 python batches"),
    "cifar100": _Spec(_cifar100, 100, 3, (32, 32), "CIFAR-100 python batches (fine labels)"),
    "imagenet": _Spec(_imagenet, 1000, 3, (224, 224), "ImageNet class-per-folder train/ and val/"),
    "synthetic": _Spec(_synthetic, 10, 3, (16, 16), "deterministic learnable random images (tests)"),
}
_OPTIONS = {"imagenet": {"crop_size", "resize_size"},
            "synthetic": {"n", "channels", "size", "classes", "seed", "noise", "augment"}}
# options of the pad + random-crop augmentation, applied after the dataset is built (not for imagenet)
_PAD_OPTIONS = {"pad", "pad_mode"}
_NO_PAD_CROP = {"imagenet"}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`, sorted."""
    return sorted(_SPECS)


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(low)
        except ValueError:
            pass
    return text.strip()


def parse_dataset_name(name: str) -> tuple[str, dict[str, Any]]:
    """Split ``"synthetic:n=64,size=16"`` into ``("synthetic", {"n": 64, "size": 16})``; validates the name."""
    base, _, suffix = str(name).strip().partition(":")
    base = base.strip().lower()
    if base not in _SPECS:
        raise UnknownNameError(f"unknown dataset {name!r}; valid datasets: {', '.join(list_datasets())}")
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in suffix.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise PrunekitError(f"dataset option {part!r} in {name!r} must look like key=value")
        options[key.strip()] = _parse_value(value)
    return base, options


def _check_options(base: str, options: dict[str, Any]) -> None:
    allowed = _OPTIONS.get(base, set()) | (set() if base in _NO_PAD_CROP else _PAD_OPTIONS)
    bad = sorted(set(options) - allowed)
    if bad:
        valid = ", ".join(sorted(allowed)) or "none"
        raise PrunekitError(f"dataset {base!r} has no option {', '.join(bad)} (valid options: {valid})")


def get_dataset(name: str, root: str | None = None, train: bool = True, **options: Any) -> ImageDataset:
    """Load split ``train`` (else test/val) of dataset ``name`` from ``root`` (None = the dataset's default).

    Raises :class:`UnknownNameError` for an unknown name and :class:`PrunekitError` when the data is missing
    (the message says where it looked and how to get it).

    >>> import prunekit
    >>> test = prunekit.get_dataset("digits", train=False)          # bundled 8x8 digits; no download
    >>> len(test), test.num_classes, test.in_channels, tuple(test.image_size)
    (360, 10, 1, (8, 8))
    """
    base, parsed = parse_dataset_name(name)
    parsed.update(options)
    _check_options(base, parsed)
    pad_options = {k: parsed.pop(k) for k in sorted(_PAD_OPTIONS & set(parsed))}
    if pad_options:
        _pad_setting(base, pad_options, default=0)  # validate the values before loading anything
    ds = _SPECS[base].build(None if root is None else str(root), bool(train), **parsed)
    if pad_options:
        crop_pad = _pad_setting(base, pad_options, default=int(ds.augment.crop_pad))
        if crop_pad.mode == "reflect" and crop_pad >= min(ds.image_size):
            raise PrunekitError(f"dataset {base!r}: pad_mode=reflect needs pad ({int(crop_pad)}) smaller than the "
                                f"images ({ds.image_size[0]}x{ds.image_size[1]})")
        ds = dataclasses.replace(ds, augment=dataclasses.replace(ds.augment, crop_pad=crop_pad))
    return ds


def _pad_setting(base: str, options: dict[str, Any], default: int) -> CropPad:
    """The :class:`CropPad` that the ``pad`` / ``pad_mode`` dataset options ask for (``default`` padding)."""
    pad = options.get("pad", default)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise PrunekitError(f"dataset {base!r}: option pad must be a non-negative integer, got {pad!r}")
    mode = options.get("pad_mode", "constant")
    if mode not in PAD_MODES:
        raise PrunekitError(f"dataset {base!r}: option pad_mode must be one of {', '.join(PAD_MODES)}, got {mode!r}")
    return CropPad(pad, mode)


def dataset_info(name: str, **options: Any) -> dict[str, Any]:
    """Static facts about dataset ``name`` without loading it: num_classes, in_channels, image_size.

    ImageNet's ``num_classes`` is the nominal 1000 (the loaded dataset counts its class folders).
    """
    base, parsed = parse_dataset_name(name)
    parsed.update(options)
    _check_options(base, parsed)
    spec = _SPECS[base]
    info = {"name": base, "num_classes": spec.num_classes, "in_channels": spec.in_channels,
            "image_size": spec.image_size, "description": spec.description}
    if base == "synthetic":
        opts = _synthetic_options({k: v for k, v in parsed.items() if k not in _PAD_OPTIONS})
        info.update(num_classes=opts["classes"], in_channels=opts["channels"], image_size=(opts["size"],) * 2)
    elif base == "imagenet" and "crop_size" in parsed:
        info["image_size"] = (_imagenet_sizes(parsed["crop_size"], parsed.get("resize_size", 256))[0],) * 2
    return info
