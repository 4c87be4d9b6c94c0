"""Dataset loaders: digits, IDX (MNIST family), CIFAR python batches, ImageNet folders, synthetic, errors."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.data import BatchLoader, dataset_info, get_dataset, list_datasets, subset
from prunekit.data.formats import decode_image, load_pickle
from prunekit.errors import PrunekitError, UnknownNameError

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------- digits
def test_digits_split_sizes_and_fixed_permutation():
    from sklearn.datasets import load_digits

    train, test = get_dataset("digits", train=True), get_dataset("digits", train=False)
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert (train.num_classes, train.in_channels, train.image_size) == (10, 1, (8, 8))
    raw = load_digits()
    order = np.random.RandomState(0).permutation(1797)
    expected = np.rint(raw.images * 255 / 16).astype(np.uint8)
    assert np.array_equal(train.images[:, 0].numpy(), expected[order[:1437]])
    assert np.array_equal(test.labels.numpy(), raw.target[order[1437:]])
    again = get_dataset("digits", train=True)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def test_digits_normalisation_constants_match_train_split():
    train = get_dataset("digits")
    x = train.images.double() / 255
    assert train.mean == (round(float(x.mean()), 4),)
    assert train.std == (round(float(x.std(unbiased=False)), 4),)


# ---------------------------------------------------------------------------------------------- IDX
def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    code = {np.dtype("uint8"): 0x08}[arr.dtype]
    payload = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_round_trip(tmp_path, gz):
    rng = np.random.RandomState(1)
    ext = ".gz" if gz else ""
    splits = {}
    for split, n in (("train", 7), ("t10k", 3)):
        imgs = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labs = rng.randint(0, 10, size=n).astype(np.uint8)
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{ext}", imgs, gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{ext}", labs, gz)
        splits[split] = (imgs, labs)
    for name in ("fashion-mnist", "mnist"):
        train = get_dataset(name, root=str(tmp_path), train=True)
        test = get_dataset(name, root=str(tmp_path), train=False)
        assert (len(train), len(test)) == (7, 3)
        assert np.array_equal(train.images[:, 0].numpy(), splits["train"][0])
        assert np.array_equal(test.labels.numpy(), splits["t10k"][1].astype(np.int64))
        assert train.images.shape[1:] == (1, 28, 28)
    assert get_dataset("fashion-mnist", root=str(tmp_path)).augment.hflip is True
    assert get_dataset("mnist", root=str(tmp_path)).augment.hflip is False


def test_idx_truncated_file_is_refused(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), gz=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((4,), np.uint8), gz=False)
    data = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data[:-5])
    with pytest.raises(PrunekitError, match="train-images-idx3-ubyte"):
        get_dataset("mnist", root=str(tmp_path))


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} missing (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_full_from_debian_package():
    train, test = get_dataset("fashion-mnist", train=True), get_dataset("fashion-mnist", train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    x = train.images.double() / 255
    assert abs(float(x.mean()) - 0.2860) < 5e-5 and abs(float(x.std()) - 0.3530) < 5e-5


# ---------------------------------------------------------------------------------------------- CIFAR
def _cifar_row(img: np.ndarray) -> np.ndarray:
    """One CIFAR row built by hand: 1024 R bytes, then 1024 G, then 1024 B (each plane row-major 32x32)."""
    return np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()])


def _write_batch(path: Path, obj: dict, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _make_cifar(folder: Path, name: str, rng: np.random.RandomState) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True)
    files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]) if name == "cifar10" else ["train", "test"]
    key, k = ("labels", 10) if name == "cifar10" else ("fine_labels", 100)
    out = {}
    for j, f in enumerate(files):
        imgs = rng.randint(0, 256, size=(2 + j % 2, 3, 32, 32)).astype(np.uint8)
        labels = rng.randint(0, k, size=imgs.shape[0])
        rows = np.stack([_cifar_row(im) for im in imgs])
        batch = {"batch_label": f"batch {f}", "data": rows, key: labels.tolist(),
                 "filenames": [f"img{i}.png" for i in range(len(imgs))]}
        if name == "cifar100":
            batch["coarse_labels"] = (labels // 5).tolist()
        _write_batch(folder / f, batch, protocol=2 if j % 2 == 0 else pickle.HIGHEST_PROTOCOL)
        out[f] = (imgs, labels)
    if name == "cifar10":
        _write_batch(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 2})
    else:
        _write_batch(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                                       "coarse_label_names": [f"g{i}" for i in range(20)]})
    return out


def test_cifar10_batches_round_trip_with_channel_layout(tmp_path):
    written = _make_cifar(tmp_path / "cifar-10-batches-py", "cifar10", np.random.RandomState(2))
    train = get_dataset("cifar10", root=str(tmp_path), train=True)  # parent folder
    test = get_dataset("cifar10", root=str(tmp_path / "cifar-10-batches-py"), train=False)  # the folder itself
    imgs = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert train.images.shape == (len(imgs), 3, 32, 32) and len(train) == 12
    assert np.array_equal(train.images.numpy(), imgs) and np.array_equal(train.labels.numpy(), labels)
    assert np.array_equal(test.images.numpy(), written["test_batch"][0])
    # layout: byte 1024*c + 32*y + x of a row is channel c, row y, column x
    row = _cifar_row(written["test_batch"][0][1])
    assert int(test.images[1, 2, 5, 7]) == int(row[2 * 1024 + 5 * 32 + 7])
    assert int(test.images[1, 0, 31, 0]) == int(row[31 * 32])
    assert train.classes == tuple(f"c{i}" for i in range(10))
    assert (train.num_classes, train.mean, train.std) == (10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert train.augment.crop_pad == 4 and train.augment.hflip


def test_cifar100_fine_labels_round_trip(tmp_path):
    written = _make_cifar(tmp_path / "cifar-100-python", "cifar100", np.random.RandomState(3))
    train = get_dataset("cifar100", root=str(tmp_path), train=True)
    test = get_dataset("cifar100", root=str(tmp_path), train=False)
    assert np.array_equal(train.images.numpy(), written["train"][0])
    assert np.array_equal(train.labels.numpy(), written["train"][1])
    assert np.array_equal(test.labels.numpy(), written["test"][1])
    assert train.num_classes == 100 and train.classes[:2] == ("f0", "f1") and len(train.classes) == 100


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_hostile_pickle_is_refused_without_running_code(tmp_path, payload):
    folder = tmp_path / "cifar-10-batches-py"
    _make_cifar(folder, "cifar10", np.random.RandomState(4))
    marker = tmp_path / "pwned"
    evil = _Evil(marker) if payload == "system" else _EvilEval()
    _write_batch(folder / "test_batch", {"data": evil, "labels": [0]})
    with pytest.raises(PrunekitError, match="refusing to unpickle") as info:
        get_dataset("cifar10", root=str(tmp_path), train=False)
    assert "test_batch" in str(info.value)
    assert not marker.exists()


def test_pickle_reader_keeps_plain_data(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    obj = {"a": arr, "b": [1, 2.5, "x", b"y"], "c": (True, None), "d": {1, 2}}
    (tmp_path / "p").write_bytes(pickle.dumps(obj, protocol=2))
    back = load_pickle(tmp_path / "p")
    assert np.array_equal(back["a"], arr) and back["b"] == [1, 2.5, "x", b"y"] and back["d"] == {1, 2}


# ---------------------------------------------------------------------------------------------- ImageNet
def _make_imagenet(root: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    rng = np.random.RandomState(5)
    sizes = {"train/n02_dog/a.png": (30, 40), "train/n02_dog/b.jpg": (50, 36), "train/n01_cat/c.png": (20, 20),
             "val/n01_cat/d.png": (24, 31), "val/n02_dog/e.JPEG": (40, 28)}
    written = {}
    for rel, (h, w) in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
        Image.fromarray(arr).save(path, format="PNG" if rel.endswith(".png") else "JPEG")
        written[rel] = arr
    (root / "train" / "n01_cat" / "notes.txt").write_text("not an image")
    return written


def test_imagenet_folder_classes_decoding_and_eval_size(tmp_path):
    written = _make_imagenet(tmp_path)
    train = get_dataset("imagenet", root=str(tmp_path), train=True)
    val = get_dataset("imagenet", root=str(tmp_path), train=False)
    assert train.classes == ("n01_cat", "n02_dog") and val.classes == train.classes
    assert [(Path(p).name, lab) for p, lab in train.samples] == [("c.png", 0), ("a.png", 1), ("b.jpg", 1)]
    assert train.targets.tolist() == [0, 1, 1] and (len(train), len(val)) == (3, 2)
    img, label = train[1]
    assert label == 1 and torch.equal(img, torch.from_numpy(written["train/n02_dog/a.png"]).permute(2, 0, 1))
    assert decode_image(tmp_path / "train/n02_dog/b.jpg").shape == (3, 50, 36)
    loader = BatchLoader(val, batch_size=2, shuffle=False, seed=0, train=False)
    (x, y), = list(loader)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32 and y.tolist() == [0, 1]
    tl = BatchLoader(train, batch_size=3, shuffle=True, seed=1, train=True)
    (a, _), = list(tl)
    (b, _), = list(tl)
    assert a.shape == (3, 3, 224, 224) and torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- errors
def test_missing_directories_name_the_path(tmp_path):
    gone = tmp_path / "nowhere"
    with pytest.raises(PrunekitError, match="apt-get install dataset-fashion-mnist") as info:
        get_dataset("fashion-mnist", root=str(gone))
    assert str(gone) in str(info.value)
    with pytest.raises(PrunekitError, match="--data-dir") as info:
        get_dataset("cifar10", root=str(gone))
    assert str(gone / "cifar-10-batches-py") in str(info.value) and "cifar-10-python.tar.gz" in str(info.value)
    with pytest.raises(PrunekitError, match="cifar-100-python"):
        get_dataset("cifar100", root=str(gone), train=False)
    with pytest.raises(PrunekitError) as info:
        get_dataset("imagenet", root=str(gone))
    assert str(gone / "train") in str(info.value)


def test_unknown_dataset_and_option():
    with pytest.raises(UnknownNameError, match="valid datasets: cifar10, cifar100, digits, fashion-mnist, "
                                               "imagenet, mnist, synthetic"):
        get_dataset("cifar11")
    with pytest.raises(PrunekitError, match="no option colour"):
        get_dataset("synthetic:colour=3")
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "imagenet", "mnist", "synthetic"]


# ---------------------------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_and_learnable():
    tr = get_dataset("synthetic:n=200,size=8,channels=1,classes=5", train=True)
    te = get_dataset("synthetic", train=False, n=100, size=8, channels=1, classes=5)
    assert tr.images.shape == (200, 1, 8, 8) and tr.num_classes == 5
    assert torch.bincount(tr.labels).tolist() == [40] * 5
    again = get_dataset("synthetic:n=200,size=8,channels=1,classes=5")
    assert torch.equal(tr.images, again.images) and torch.equal(tr.labels, again.labels)
    assert not torch.equal(tr.images[:100], te.images)
    means = torch.stack([tr.images[tr.labels == k].double().mean(0) for k in range(5)])  # nearest class mean
    dist = ((te.images.double()[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (dist.argmin(1) == te.labels).double().mean().item() == 1.0
    assert dataset_info("synthetic:size=8,channels=1,classes=5")["image_size"] == (8, 8)


def test_subset_first_n_and_seeded():
    ds = get_dataset("digits", train=False)
    first = subset(ds, 10)
    assert torch.equal(first.images, ds.images[:10]) and len(first) == 10
    a, b = subset(ds, 50, seed=3), subset(ds, 50, seed=3)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.images, ds.images[:50])
    with pytest.raises(PrunekitError, match="subset size"):
        subset(ds, 361)
