"""Small hostile and broken files for the bad-input corpus, generated once per session under one folder.

Every builder writes into the session fixture folder and returns nothing; :func:`build_all` returns the map
``name -> path`` that case command lines reach as ``{f[name]}``. Files that would run code when unpickled or
imported create the folder :data:`MARKER_NAME` in the session root, so a test can prove no code ran.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

MARKER_NAME = "CODE-RAN-MARKER"


class Evil:
    """Unpickling this object calls ``os.mkdir(marker)``: the proof that code from a file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return os.mkdir, (self.marker,)


def quiet_main(argv: list[str]) -> int:
    """Run the CLI with stdout/stderr swallowed (fixture building only)."""
    import contextlib

    from prunekit.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"fixture command {argv} failed: {err.getvalue()}")
    return rc


# ------------------------------------------------------------------------------------------------ checkpoints

def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["prunekit"])
        return {k: fh.get_tensor(k) for k in fh.keys()}, meta


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: Any, raw: str | None = None) -> None:
    from safetensors.torch import save_file

    md = None if meta is None and raw is None else {"prunekit": raw if raw is not None else json.dumps(meta)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=md)


def _write_consistent(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write damaged tensors with a checksum that matches them, so the load gets past the checksum to the
    key/shape checks (an older file without a checksum reaches them the same way)."""
    meta = {k: v for k, v in meta.items() if k != "checksum"}
    _write(path, tensors, meta)
    try:
        from prunekit.pruning.sparse_format import file_payload_digest
    except ImportError:
        return
    _write(path, tensors, {**meta, "checksum": file_payload_digest(path)})


def _meta_variants(meta: dict[str, Any]) -> dict[str, Any]:
    """name -> metadata object (or ('raw', text)) for hostile/corrupt checkpoint metadata."""
    def edit(**kw: Any) -> dict[str, Any]:
        m = dict(meta)
        for k, v in kw.items():
            if v is _DEL:
                m.pop(k, None)
            else:
                m[k] = v
        return m

    return {
        "meta-json-list": ("raw", "[1, 2, 3]"),
        "meta-json-string": ("raw", '"prunekit/1"'),
        "meta-json-number": ("raw", "42"),
        "meta-json-null": ("raw", "null"),
        "meta-not-json": ("raw", "{not json"),
        "meta-missing-model": edit(model=_DEL),
        "meta-missing-num-classes": edit(num_classes=_DEL),
        "meta-missing-in-channels": edit(in_channels=_DEL),
        "meta-missing-format": edit(format=_DEL),
        "meta-format-future": edit(format="prunekit/99"),
        "meta-num-classes-ten": edit(num_classes="ten"),
        "meta-num-classes-neg": edit(num_classes=-5),
        "meta-num-classes-zero": edit(num_classes=0),
        "meta-num-classes-huge": edit(num_classes=1e11),
        "meta-num-classes-float": edit(num_classes=10.5),
        "meta-num-classes-bool": edit(num_classes=True),
        "meta-in-channels-zero": edit(in_channels=0),
        "meta-in-channels-neg": edit(in_channels=-3),
        "meta-in-channels-huge": edit(in_channels=10 ** 9),
        "meta-model-unknown": edit(model="no_such_model"),
        "meta-model-list": edit(model=["lenet5"]),
        "meta-model-null": edit(model=None),
        "meta-options-list": edit(options=[1, 2]),
        "meta-options-unknown": edit(options={"bogus_option": 1}),
        "meta-plan-string": edit(plan="garbage"),
        "meta-plan-list": edit(plan=[1, 2, 3]),
        "meta-plan-bad-groups": edit(plan={"format": "prunekit-plan/1", "groups": "zz"}),
        "meta-cfg-string": edit(cfg="16,M,32"),
        "meta-storage-bogus": edit(storage="weird"),
        "meta-storage-sparse-lie": edit(storage="sparse"),
        "meta-factory-not-mapping": edit(factory="os:mkdir"),
        "meta-checksum-garbage": edit(checksum="md5:1234"),
    }


class EvalEvil:
    """Unpickling this object calls ``builtins.eval`` on code that creates the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return eval, (f"__import__('os').mkdir({self.marker!r})",)


class _Del:
    pass


_DEL = _Del()


def build_checkpoints(root: Path, marker: Path) -> dict[str, Path]:
    """Train the tiny reference runs via the CLI, then write corrupt/hostile copies of their model file."""
    f: dict[str, Path] = {}
    common = ["--dataset", "digits", "--limit", "16", "--epochs", "1", "--batch-size", "16"]
    f["lenet"] = root / "lenet-run"
    quiet_main(["train", "--model", "lenet5", *common, "--out", str(f["lenet"])])
    f["resnet"] = root / "resnet-run"
    quiet_main(["train", "--model", "resnet20", *common, "--out", str(f["resnet"])])
    f["lenet-pruned"] = root / "lenet-pruned"
    quiet_main(["prune", "--checkpoint", str(f["lenet"]), "--method", "global", "--ratio", "0.5",
                "--out", str(f["lenet-pruned"])])
    model_file = f["lenet"] / "model.safetensors"
    f["lenet-file"] = model_file
    tensors, meta = _read(model_file)
    ck = root / "ck"
    ck.mkdir(parents=True)
    for name, m in _meta_variants(meta).items():
        path = ck / f"{name}.safetensors"
        if isinstance(m, tuple):
            _write(path, tensors, None, raw=m[1])
        else:
            _write(path, tensors, m)
        f[name] = path
    # a vgg whose cfg would allocate ~130 GB: 60,000-wide conv layers
    from prunekit import create_model, save_model

    vgg = create_model("vgg11", num_classes=10, in_channels=1, cfg=[4, "M", 4, "M", 4, 4, "M", 4, 4, "M", 4, 4])
    f["vgg-small"] = save_model(vgg, root / "vgg-small")
    vt, vmeta = _read(f["vgg-small"])
    for name, cfg in (("meta-cfg-60000-wide", [60000, "M", 60000, "M", 60000, 60000, "M", 60000, 60000, "M",
                                                60000, 60000]),
                      ("meta-cfg-garbage", ["x", {"a": 1}, None, "M", 4, 4, "M", 4, 4, "M", 4, 4])):
        f[name] = ck / f"{name}.safetensors"
        _write(f[name], vt, {**vmeta, "cfg": cfg})
    # a factory entry that would run os.mkdir(marker) if prunekit trusted a file
    f["meta-factory-os-mkdir"] = ck / "meta-factory-os-mkdir.safetensors"
    _write(f["meta-factory-os-mkdir"], tensors,
           {**meta, "model": None, "factory": {"target": "os:mkdir", "kwargs": {"path": str(marker)}}})
    # tensor-level damage
    first = next(iter(tensors))
    for name, t in (("tensor-missing", {k: v for k, v in tensors.items() if k != first}),
                    ("tensor-extra", {**tensors, "bogus.weight": torch.zeros(3)}),
                    ("tensor-shape", {**tensors, first: torch.zeros(tensors[first].numel() + 1)}),
                    ("mask-shape", {**tensors, "__mask__/" + first: torch.ones(2, dtype=torch.bool)}),
                    ("mask-unknown-param", {**tensors, "__mask__/nope.weight": torch.ones(2, dtype=torch.bool)})):
        f[name] = ck / f"{name}.safetensors"
        _write_consistent(f[name], t, meta)
    raw = model_file.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    flipped = bytearray(raw)
    pos = 8 + hlen + (len(raw) - 8 - hlen) // 2
    flipped[pos] ^= 0x40
    f["bitflip"] = ck / "bitflip.safetensors"
    f["bitflip"].write_bytes(bytes(flipped))
    f["truncated-half"] = ck / "truncated-half.safetensors"
    f["truncated-half"].write_bytes(raw[: len(raw) // 2])
    f["truncated-header"] = ck / "truncated-header.safetensors"
    f["truncated-header"].write_bytes(raw[: 8 + hlen // 2])
    f["header-len-huge"] = ck / "header-len-huge.safetensors"
    f["header-len-huge"].write_bytes(struct.pack("<Q", 1 << 60) + raw[8:64])
    f["empty-file"] = ck / "empty.safetensors"
    f["empty-file"].write_bytes(b"")
    f["random-bytes"] = ck / "random.safetensors"
    f["random-bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    f["no-metadata"] = ck / "no-metadata.safetensors"
    _write(f["no-metadata"], tensors, None)
    f["zip-as-safetensors"] = ck / "zip.safetensors"
    with zipfile.ZipFile(f["zip-as-safetensors"], "w") as z:
        z.writestr("data.pkl", pickle.dumps({"a": 1}))
    f["pickle-code-pth"] = ck / "evil.pth"
    f["pickle-code-pth"].write_bytes(pickle.dumps(Evil(str(marker)), protocol=2))
    f["torchsave-code-pt"] = ck / "evil-torchsave.pt"
    torch.save({"conv1.weight": Evil(str(marker))}, f["torchsave-code-pt"])
    f["pickle-code-as-safetensors"] = ck / "evil-pickle.safetensors"
    f["pickle-code-as-safetensors"].write_bytes(pickle.dumps(Evil(str(marker))))
    f["pt-not-state-dict"] = ck / "notstate.pt"
    torch.save({"epoch": 3, "note": "hello"}, f["pt-not-state-dict"])
    f["pt-truncated"] = ck / "truncated.pt"
    buf = io.BytesIO()
    torch.save({k: v for k, v in tensors.items()}, buf)
    f["pt-truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    # folders
    f["dir-empty"] = root / "dir-empty"
    f["dir-empty"].mkdir()
    f["dir-model-is-dir"] = root / "dir-model-is-dir"
    (f["dir-model-is-dir"] / "model.safetensors").mkdir(parents=True)
    f["symlink-loop"] = root / "loop.safetensors"
    os.symlink(f["symlink-loop"].name, f["symlink-loop"])
    f["through-file"] = model_file / "x"
    f["missing"] = root / "does-not-exist"
    f["fifo"] = root / "pipe.safetensors"  # opening it blocks until a writer comes: a hang unless refused
    os.mkfifo(f["fifo"])
    f["fifo-yaml"] = root / "pipe.yaml"
    os.mkfifo(f["fifo-yaml"])
    f["a-file"] = root / "plain-file.txt"
    f["a-file"].write_text("I am a file\n")
    f["folder-with-code-state"] = root / "folder-with-code-state"
    shutil.copytree(f["lenet"], f["folder-with-code-state"])
    torch.save({"x": Evil(str(marker))}, f["folder-with-code-state"] / "train_state.pt")
    f["state-garbage"] = root / "state-garbage"
    shutil.copytree(f["lenet"], f["state-garbage"])
    (f["state-garbage"] / "train_state.pt").write_bytes(b"garbage, not a torch file" * 20)
    pruned = ["--checkpoint", str(f["lenet-pruned"]), *common[:-2]]
    for cmd, extra in (("finetune", []), ("scratch", []), ("distill", ["--teachers", str(f["lenet"])])):
        f[f"{cmd}-run"] = root / f"{cmd}-run"
        quiet_main([cmd, *pruned, "--batch-size", "16", *extra, "--out", str(f[f"{cmd}-run"])])
    return f


# ------------------------------------------------------------------------------------------------ IDX (MNIST)

def _idx(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def _mnist_dir(path: Path, train_images: bytes | None = None, train_labels: bytes | None = None,
               gz: bool = True) -> Path:
    path.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    labs = (np.arange(16) % 10).astype(np.uint8)
    files = {"train-images-idx3-ubyte": train_images if train_images is not None else _idx(imgs),
             "train-labels-idx1-ubyte": train_labels if train_labels is not None else _idx(labs),
             "t10k-images-idx3-ubyte": _idx(imgs), "t10k-labels-idx1-ubyte": _idx(labs)}
    for stem, data in files.items():
        if gz:
            (path / (stem + ".gz")).write_bytes(gzip.compress(data, 1))
        else:
            (path / stem).write_bytes(data)
    return path


def _gzip_bomb(header: bytes, gib: int) -> bytes:
    """A multi-member gzip file that expands to ``gib`` GiB of zeros after ``header``: ~5 MB on disk."""
    member = gzip.compress(bytes(16 << 20), 9)
    return gzip.compress(header, 9) + member * (gib * 64)


def build_idx(root: Path) -> dict[str, Path]:
    """MNIST folders with one broken file each (the others valid, 16 images)."""
    f: dict[str, Path] = {}
    imgs = np.zeros((16, 28, 28), dtype=np.uint8)
    n_bomb = (5 << 30) // 784
    f["idx-gzip-bomb"] = root / "mnist-bomb"
    f["idx-gzip-bomb"].mkdir(parents=True)
    _mnist_dir(root / "mnist-bomb-base")
    for p in (root / "mnist-bomb-base").iterdir():
        shutil.move(str(p), f["idx-gzip-bomb"] / p.name)
    (f["idx-gzip-bomb"] / "train-images-idx3-ubyte.gz").write_bytes(
        _gzip_bomb(bytes([0, 0, 8, 3]) + struct.pack(">III", n_bomb, 28, 28), 5))
    f["idx-bad-magic"] = _mnist_dir(root / "mnist-bad-magic", b"\x12\x34\x56\x78" + imgs.tobytes())
    f["idx-dims-mismatch"] = _mnist_dir(root / "mnist-dims", bytes([0, 0, 8, 3]) +
                                        struct.pack(">III", 100, 28, 28) + imgs.tobytes())
    f["idx-ndim-zero"] = _mnist_dir(root / "mnist-ndim0", bytes([0, 0, 8, 0]))
    f["idx-ndim-255"] = _mnist_dir(root / "mnist-ndim255", bytes([0, 0, 8, 255]) + b"\x00\x00\x00\x02" * 255)
    f["idx-dims-overflow"] = _mnist_dir(root / "mnist-overflow", bytes([0, 0, 8, 3]) +
                                        struct.pack(">III", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
    f["idx-labels-range"] = _mnist_dir(root / "mnist-labels", None, _idx(np.full(16, 200, dtype=np.uint8)))
    f["idx-label-count"] = _mnist_dir(root / "mnist-count", None, _idx(np.zeros(5, dtype=np.uint8)))
    f["idx-float-images"] = _mnist_dir(root / "mnist-float", _idx(imgs.astype(">f4"), 0x0D))
    f["idx-images-2d"] = _mnist_dir(root / "mnist-2d", _idx(np.zeros((16, 784), dtype=np.uint8)))
    f["idx-empty-file"] = _mnist_dir(root / "mnist-empty", b"")
    d = _mnist_dir(root / "mnist-truncated-gz")
    gzp = d / "train-images-idx3-ubyte.gz"
    gzp.write_bytes(gzp.read_bytes()[:40])
    f["idx-truncated-gz"] = d
    d = _mnist_dir(root / "mnist-not-gzip")
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all" * 10)
    f["idx-not-gzip"] = d
    f["idx-missing-files"] = root / "mnist-missing"
    f["idx-missing-files"].mkdir()
    return f


# ------------------------------------------------------------------------------------------------ CIFAR

def _cifar_batch(n: int = 16, labels_key: str = "labels", classes: int = 10) -> dict[str, Any]:
    return {"data": np.random.default_rng(1).integers(0, 256, (n, 3072), dtype=np.uint8),
            labels_key: [i % classes for i in range(n)]}


def _cifar10_dir(path: Path, bad: bytes | None) -> Path:
    path.mkdir(parents=True)
    good = pickle.dumps(_cifar_batch(), protocol=2)
    for i in range(1, 6):
        (path / f"data_batch_{i}").write_bytes(bad if (bad is not None and i == 1) else good)
    (path / "test_batch").write_bytes(good)
    return path


def _nested_dicts(depth: int) -> bytes:
    """A pickle of ``depth`` dicts nested in one another, written by hand (pickling it would recurse)."""
    out = bytearray(b"\x80\x02")
    for _ in range(depth):
        out += b"}q\x00X\x01\x00\x00\x00k"  # EMPTY_DICT, BINPUT, key 'k'
    out += b"N"
    out += b"s" * depth  # SETITEM for each level
    out += b"."
    return bytes(out)


def build_cifar(root: Path, marker: Path) -> dict[str, Path]:
    """CIFAR-10/100 folders whose first training batch is broken or hostile."""
    f: dict[str, Path] = {}
    bads = {
        "cifar-nested-dicts": _nested_dicts(20000),
        "cifar-code-pickle": pickle.dumps(Evil(str(marker)), protocol=2),
        "cifar-eval-global": pickle.dumps(EvalEvil(str(marker)), protocol=2),
        "cifar-list-not-dict": pickle.dumps([1, 2, 3]),
        "cifar-missing-data": pickle.dumps({"labels": [0] * 16}),
        "cifar-data-float": pickle.dumps({"data": np.zeros((16, 3072), np.float32), "labels": [0] * 16}),
        "cifar-data-shape": pickle.dumps({"data": np.zeros((16, 100), np.uint8), "labels": [0] * 16}),
        "cifar-labels-count": pickle.dumps({"data": np.zeros((16, 3072), np.uint8), "labels": [0] * 3}),
        "cifar-labels-range": pickle.dumps({"data": np.zeros((16, 3072), np.uint8), "labels": [50] * 16}),
        "cifar-labels-strings": pickle.dumps({"data": np.zeros((16, 3072), np.uint8), "labels": ["a"] * 16}),
        "cifar-truncated": pickle.dumps(_cifar_batch(), protocol=2)[:500],
        "cifar-empty-file": b"",
        "cifar-persistent-id": b"\x80\x02X\x01\x00\x00\x00xQ.",
        "cifar-object-array": pickle.dumps({"data": np.array([[1, "a"]], dtype=object), "labels": [0]}),
        "cifar-not-pickle": b"\x00\x01garbage bytes that are no pickle" * 8,
    }
    for name, data in bads.items():
        f[name] = _cifar10_dir(root / name, data)
    d = root / "cifar100-missing-fine"
    d.mkdir()
    for n in ("train", "test"):
        (d / n).write_bytes(pickle.dumps(_cifar_batch(labels_key="coarse_labels", classes=20), protocol=2))
    f["cifar100-missing-fine"] = d
    f["cifar-meta-code"] = _cifar10_dir(root / "cifar-meta-code", None)
    (f["cifar-meta-code"] / "batches.meta").write_bytes(pickle.dumps(Evil(str(marker)), protocol=2))
    return f


# ------------------------------------------------------------------------------------------------ image folders

def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)


def build_image_trees(root: Path) -> dict[str, Path]:
    """ImageNet-style trees with one defect each."""
    f: dict[str, Path] = {}

    def tree(name: str, classes: dict[str, int]) -> Path:
        base = root / name
        for split in ("train", "val"):
            for c, n in classes.items():
                (base / split / c).mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    _png(base / split / c / f"{i}.png")
        f[name] = base
        return base

    tree("img-empty-class", {"a": 2, "b": 0})
    # class-level links: a class that is the split itself (loop), two loops, two names for one folder
    for name, links in (("img-class-loop", {"loop": "."}), ("img-class-loops-two", {"l1": ".", "l2": ".."}),
                        ("img-class-alias", {"c": "a"})):
        b = tree(name, {"a": 2, "b": 2})
        for split in ("train", "val"):
            for link, target in links.items():
                os.symlink(target, b / split / link)
    b = tree("img-no-images", {"a": 0, "b": 0})
    for split in ("train", "val"):
        (b / split / "a" / "notes.txt").write_text("x")
    b = tree("img-val-extra-class", {"a": 2, "b": 2})
    _png(b / "val" / "zzz" / "0.png")
    b = tree("img-corrupt-image", {"a": 2, "b": 2})
    for split in ("train", "val"):
        (b / split / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    b = tree("img-zero-byte-image", {"a": 2, "b": 2})
    for split in ("train", "val"):
        (b / split / "b" / "1.png").write_bytes(b"")
    f["img-no-splits"] = root / "img-no-splits"
    f["img-no-splits"].mkdir()
    return f


# ------------------------------------------------------------------------------------------------ all

def build_all(root: Path) -> dict[str, Path]:
    """Build every fixture under ``root``; returns name -> path (``marker`` is where code would leave proof)."""
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER_NAME
    f: dict[str, Path] = {"marker": marker}
    f.update(build_checkpoints(root / "ckpt", marker))
    f.update(build_idx(root / "idx"))
    f.update(build_cifar(root / "cifar", marker))
    f.update(build_image_trees(root / "images"))
    return f
