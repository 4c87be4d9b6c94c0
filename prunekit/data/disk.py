"""Datasets read from a user's directory: MNIST / Fashion-MNIST (IDX), CIFAR-10/100 (python batches), ImageNet
(class-per-folder trees). Each ``load_*`` returns an :class:`ImageDataset` or raises a
:class:`~prunekit.errors.PrunekitError` saying where it looked and how to get the data.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import PrunekitError
from ..utils.io import path_problem
from .base import Augment, ImageDataset
from .formats import IMAGE_EXTENSIONS, dict_get, load_pickle, read_idx
from .transforms import IMAGENET_CROP, IMAGENET_RESIZE, default_pad

log = logging.getLogger(__name__)
DATA_ENV = "PRUNEKIT_DATA"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)

_CIFAR_URL = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}
_CIFAR_DIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def default_data_root() -> Path:
    """Parent folder searched when no root is given: ``$PRUNEKIT_DATA`` or ``./data``."""
    return Path(os.environ.get(DATA_ENV) or "data")


# ------------------------------------------------------------------------------------------------ IDX

_IDX_STEMS = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_idx(root: Path, stem: str) -> Path | None:
    alt = stem.replace("-idx", ".idx")  # the original MNIST site names files "train-images.idx3-ubyte"
    for name in (stem + ".gz", stem, alt + ".gz", alt):
        if (root / name).is_file():
            return root / name
    return None


def _folder_state(root: Path, missing: str) -> str:
    """Why ``missing`` was not found in ``root``: the folder is absent, cannot be read, or lacks the file."""
    problem = path_problem(root)
    if problem is not None:
        return "does not exist" if problem.startswith("not found") else f"cannot be accessed ({problem})"
    if not root.is_dir():
        return "is not a folder"
    if not os.access(root, os.R_OK | os.X_OK):
        return "cannot be read (permission denied)"
    return f"has no {missing}"


def load_idx_dataset(name: str, root: Path, train: bool, mean: Sequence[float], std: Sequence[float],
                     hflip: bool, how_to_get: str) -> ImageDataset:
    """MNIST-format dataset (gzipped or raw IDX files in ``root``), 10 classes, 1x28x28 (or the files' size)."""
    img_stem, lab_stem = _IDX_STEMS[train]
    img_path, lab_path = _find_idx(root, img_stem), _find_idx(root, lab_stem)
    if img_path is None or lab_path is None:
        missing = img_stem if img_path is None else lab_stem
        state = _folder_state(root, f"{missing}[.gz]")
        raise PrunekitError(f"{name} data not found: {root} {state}. {how_to_get}")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8 or 0 in images.shape:
        raise PrunekitError(f"{img_path}: expected uint8 images [N, H, W] (none of them 0), got {images.dtype} "
                            f"{images.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise PrunekitError(f"{lab_path}: labels must be integers, got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise PrunekitError(f"{lab_path}: {labels.shape[0] if labels.ndim == 1 else labels.shape} labels for "
                            f"{images.shape[0]} images in {img_path}")
    y = torch.from_numpy(labels.astype(np.int64))
    _check_labels(y, 10, lab_path)
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    h, w = int(x.shape[2]), int(x.shape[3])
    return ImageDataset(name=name, train=train, num_classes=10, in_channels=1, image_size=(h, w), mean=mean,
                        std=std, images=x, labels=y, augment=Augment(crop_pad=default_pad(h), hflip=hflip),
                        root=str(root))


def _check_labels(labels: torch.Tensor, num_classes: int, path: Path) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise PrunekitError(f"{path}: labels must lie in [0, {num_classes}), found "
                            f"[{int(labels.min())}, {int(labels.max())}]")


# ------------------------------------------------------------------------------------------------ CIFAR

def _cifar_files(name: str, train: bool) -> list[str]:
    if name == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return ["train"] if train else ["test"]


def resolve_cifar_root(name: str, root: str | Path | None, train: bool) -> Path:
    """The folder holding the CIFAR batches: ``root`` itself or its ``cifar-10-batches-py``/``cifar-100-python``."""
    base = Path(root) if root is not None else default_data_root()
    candidates = [base, base / _CIFAR_DIR[name]]
    files = _cifar_files(name, train)
    for cand in candidates:
        if all((cand / f).is_file() for f in files):
            return cand
    for cand in candidates:
        state = _folder_state(cand, "")
        if state.startswith("cannot"):
            raise PrunekitError(f"{name}: {cand} {state}")
    looked = " and ".join(str(c) for c in candidates)
    raise PrunekitError(
        f"{name} {'train' if train else 'test'} batches ({', '.join(files)}) not found in {looked}. Download "
        f"{_CIFAR_URL[name]}, extract it, and pass the extracted folder (or its parent) with --data-dir "
        f"(or set ${DATA_ENV}).")


def load_cifar(name: str, root: str | Path | None, train: bool) -> ImageDataset:
    """CIFAR-10 (``labels``) or CIFAR-100 (``fine_labels``) from the python batches; 3x32x32, CIFAR mean/std."""
    folder = resolve_cifar_root(name, root, train)
    classes = _cifar_num_classes(name)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    xs, ys = [], []
    for fname in _cifar_files(name, train):
        path = folder / fname
        batch = load_pickle(path)
        data = dict_get(batch, "data", path)
        if not isinstance(data, np.ndarray):  # np.asarray of a nest of shared lists could build 1e9 entries
            raise PrunekitError(f"{path}: 'data' must be a numpy array, got {type(data).__name__}")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] == 0:
            raise PrunekitError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
        labels = _flat_ints(dict_get(batch, label_key, path), data.shape[0], label_key, path)
        xs.append(data.reshape(-1, 3, 32, 32))  # each row: 1024 R, 1024 G, 1024 B bytes, row-major 32x32
        ys.append(labels.astype(np.int64))
    y = torch.from_numpy(np.concatenate(ys))
    _check_labels(y, classes, folder)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)))
    return ImageDataset(name=name, train=train, num_classes=classes, in_channels=3, image_size=(32, 32),
                        mean=CIFAR_MEAN, std=CIFAR_STD, images=x, labels=y,
                        classes=_cifar_classes(name, folder), augment=Augment(crop_pad=4, hflip=True),
                        root=str(folder))


def _cifar_classes(name: str, folder: Path) -> tuple[str, ...] | None:
    meta_name, key = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    path = folder / meta_name
    if not path.is_file():
        return None
    names = dict_get(load_pickle(path), key, path)
    if not isinstance(names, (list, tuple)) or len(names) != _cifar_num_classes(name) or \
            not all(isinstance(n, (str, bytes)) and len(n) <= 200 for n in names):
        raise PrunekitError(f"{path}: {key!r} must list {_cifar_num_classes(name)} class names (strings)")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def _cifar_num_classes(name: str) -> int:
    """Classes of a CIFAR dataset name."""
    return 10 if name == "cifar10" else 100


def _flat_ints(values: object, n: int, key: str, path: Path) -> np.ndarray:
    """``values`` (a list of ints or a 1-D integer array, as in CIFAR batches) as an array of ``n`` labels."""
    if isinstance(values, (list, tuple)):
        if len(values) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise PrunekitError(f"{path}: {key!r} must be a list of {n} integer labels")
        values = np.asarray(values)
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.shape[0] != n or \
            not np.issubdtype(values.dtype, np.integer):
        got = f"{values.dtype} {values.shape}" if isinstance(values, np.ndarray) else type(values).__name__
        raise PrunekitError(f"{path}: {key!r} must hold {n} integer labels, got {got}")
    return values


# ------------------------------------------------------------------------------------------------ ImageNet

def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except PermissionError:
        raise PrunekitError(f"cannot list {folder}: permission denied") from None
    except OSError as exc:
        raise PrunekitError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop (ELOOP) or an unreadable link: not a folder we can use
        return False


def _class_dirs(folder: Path) -> list[str]:
    """Sorted names of the class folders of ``folder`` (links to folders allowed, hidden names skipped)."""
    return [e.name for e in _scan(folder) if not e.name.startswith(".") and _is_dir(e)]


def _image_files(folder: Path, skipped: list[str]) -> list[str]:
    """Image files under ``folder``, sorted, folder by folder (top-down). Links to files are followed, links to folders are not (a
    ``loop -> .`` link would repeat or never end the walk): they are appended to ``skipped``."""
    out = []
    pending = [folder]
    while pending:
        d = pending.pop()
        subdirs = []
        for e in _scan(d):
            if e.name.startswith("."):
                continue
            if e.is_symlink() and _is_dir(e):
                skipped.append(e.path)
            elif _is_dir(e):
                subdirs.append(Path(e.path))
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                out.append(e.path)
        pending.extend(reversed(subdirs))  # depth-first, sorted: the order os.walk gave
    return out


def _check_distinct(split: Path, names: list[str], dataset: str) -> None:
    """Class folders that are the same folder (links), or contain the split itself, are refused."""
    seen: dict[str, str] = {}
    top = os.path.realpath(split)
    for c in names:
        real = os.path.realpath(split / c)
        if top == real or top.startswith(real.rstrip(os.sep) + os.sep):
            raise PrunekitError(f"{dataset}: class folder {split / c} links back to {real}, which contains the whole "
                                f"split {split}: remove the link")
        if real in seen:
            raise PrunekitError(f"{dataset}: class folders {split / seen[real]} and {split / c} are the same folder "
                                f"({real})")
        seen[real] = c


def load_image_folder(name: str, root: str | Path | None, train: bool, crop_size: int = IMAGENET_CROP,
                      resize_size: int = IMAGENET_RESIZE) -> ImageDataset:
    """ImageNet-style tree ``root/{train,val}/<class>/<image>``; classes = sorted folder names of ``train/``
    (of ``val/`` when there is no ``train/``), labels = index in that list. Images decode lazily."""
    base = Path(root) if root is not None else default_data_root() / "imagenet"
    split = base / ("train" if train else "val")
    hint = (f"Expected {base}/train/<class>/*.JPEG and {base}/val/<class>/*.JPEG (validation images sorted into "
            f"class folders); pass the folder holding train/ and val/ with --data-dir.")
    if not split.is_dir():
        raise PrunekitError(f"{name} data not found: {split} does not exist. {hint}")
    class_root = base / "train" if (base / "train").is_dir() else split
    classes = _class_dirs(class_root)
    if not classes:
        raise PrunekitError(f"{name}: no class folders in {class_root}. {hint}")
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    skipped: list[str] = []
    present = _class_dirs(split)
    _check_distinct(split, present, name)
    for c in present:
        if c not in index:
            raise PrunekitError(f"{name}: class folder {split / c} is not among the {len(classes)} classes of "
                                f"{class_root}")
        files = _image_files(split / c, skipped)
        if not files:
            raise PrunekitError(f"{name}: class folder {split / c} holds no image files "
                                f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add its images")
        samples.extend((p, index[c]) for p in files)
    if skipped:
        log.warning("%s: not following %d linked folder(s) inside class folders (e.g. %s)", name, len(skipped),
                    skipped[0])
    if not samples:
        raise PrunekitError(f"{name}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {split}. {hint}")
    if resize_size < crop_size:
        raise PrunekitError(f"{name}: resize_size {resize_size} must be >= crop_size {crop_size}")
    return ImageDataset(name=name, train=train, num_classes=len(classes), in_channels=3,
                        image_size=(crop_size, crop_size), mean=IMAGENET_MEAN, std=IMAGENET_STD, samples=samples,
                        classes=tuple(classes), root=str(base),
                        augment=Augment(hflip=True, resized_crop=True, crop_size=crop_size,
                                        resize_size=resize_size))
