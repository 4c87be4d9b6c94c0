"""Hostile and careless files: checkpoint metadata, payload checksums, dtypes, storage, atomic writes, data bombs.

Every fixture is generated in tmp_path; every bad input must give one clear PrunekitError naming the problem.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import stat
import struct
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit import create_model, load_checkpoint, save_model
from prunekit.checkpoint import build_from_meta, check_meta, load_train_state, model_meta
from prunekit.data import dataset_info, get_dataset
from prunekit.data.formats import load_pickle, read_idx
from prunekit.errors import CheckpointError, PrunekitError
from prunekit.models.bounds import MAX_WIDTH
from prunekit.pruning.sparse_format import pack, storage_sizes, write_safetensors
from prunekit.utils.io import atomic_path, is_prunekit_temp, path_problem


def _forge(path: Path, meta, tensors=None) -> Path:
    """A safetensors file whose prunekit metadata is ``meta`` (any JSON value), written by safetensors itself."""
    from safetensors.torch import save_file

    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata={"prunekit": json.dumps(meta)})
    return path


def _good_meta() -> dict:
    return model_meta(create_model("lenet5", in_channels=1))


# ------------------------------------------------------------------------------------------ metadata schema
_BAD_META = [
    ([1, 2, 3], "JSON object"),
    ("resnet20", "JSON object"),
    (lambda m: {k: v for k, v in m.items() if k != "format"}, "unsupported checkpoint format None"),
    (lambda m: {k: v for k, v in m.items() if k != "model"}, "'model'"),
    (lambda m: {k: v for k, v in m.items() if k != "num_classes"}, "'num_classes'"),
    (lambda m: {k: v for k, v in m.items() if k != "in_channels"}, "'in_channels'"),
    ({"num_classes": "ten"}, "'num_classes'"),
    ({"num_classes": -5}, "'num_classes'"),
    ({"num_classes": 1e11}, "'num_classes'"),
    ({"num_classes": 10 ** 11}, "'num_classes'"),
    ({"num_classes": True}, "'num_classes'"),
    ({"num_classes": 10.0}, "'num_classes'"),
    ({"in_channels": 0}, "'in_channels'"),
    ({"in_channels": 100_000}, "'in_channels'"),
    ({"model": 7}, "'model'"),
    ({"cfg": "20,50,500"}, "'cfg'"),
    ({"cfg": [60_000, 60_000, 500]}, r"'cfg'\[0\]"),
    ({"cfg": [20, -1, 500]}, r"'cfg'\[1\]"),
    ({"cfg": [20, 1.5, 500]}, r"'cfg'\[1\]"),
    ({"cfg": [8] * 20_000}, "'cfg' has 20000 entries"),
    ({"options": [1]}, "'options'"),
    ({"extra": "x"}, "'extra'"),
    ({"plan": "x"}, "'plan'"),
    ({"plan": {"format": "prunekit-plan/2", "modules": {}, "base_cfg": [99_999]}}, r"'plan.base_cfg'\[0\]"),
    ({"storage": "zip"}, "'storage'"),
    ({"dtype": "float128"}, "'dtype'"),
    ({"checksum": "md5:abc"}, "'checksum'"),
    ({"factory": "mypkg:Net"}, "'factory'"),
    ({"factory": {"target": "m:f", "kwargs": {}, "input_size": [3, -1]}}, "'factory.input_size'"),
]


@pytest.mark.parametrize("patch,match", _BAD_META, ids=[str(i) for i in range(len(_BAD_META))])
def test_bad_metadata_is_one_clear_error_naming_the_field_before_anything_is_built(tmp_path, monkeypatch, patch,
                                                                                   match):
    import prunekit.models

    meta = patch(_good_meta()) if callable(patch) else {**_good_meta(), **patch} if isinstance(patch, dict) \
        else patch
    path = _forge(tmp_path / "m.safetensors", meta)

    def no_build(*a, **k):
        raise AssertionError("a model was built from invalid metadata")

    monkeypatch.setattr(prunekit.models, "create_model", no_build)
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_widths_within_bounds_but_too_many_parameters_are_refused_before_allocating(tmp_path):
    vgg = model_meta(create_model("vgg11"))
    vgg["cfg"] = [MAX_WIDTH if v != "M" else "M" for v in vgg["cfg"]]  # ~9.7e9 weights per 3x3 layer pair
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"would allocate more than 2,000,000,000 tensor elements") as err:
        load_checkpoint(_forge(tmp_path / "wide.safetensors", vgg))
    assert "cfg of 12 entries" in str(err.value) and time.perf_counter() - t0 < 5
    head = model_meta(create_model("resnet50"))
    head["num_classes"] = 1_000_000  # 2048 x 1e6 classifier: 2.05e9 weights
    with pytest.raises(CheckpointError, match="num_classes 1000000"):
        build_from_meta(head, source="head")


def test_check_meta_accepts_what_save_model_writes_and_older_files():
    meta = _good_meta()
    assert check_meta(dict(meta)) == meta
    old = {k: meta[k] for k in ("format", "model", "num_classes", "in_channels", "cfg")}  # before options/dtype
    assert check_meta(old)["model"] == "lenet5"


def test_deeply_nested_metadata_json_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(path), metadata={"prunekit": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(CheckpointError, match="corrupt prunekit metadata"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------ checksum, NaN
def _header_len(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_checksum_is_sha256_of_the_tensor_payload_and_a_flipped_bit_is_caught(tmp_path):
    torch.manual_seed(0)
    path = save_model(create_model("lenet5", in_channels=1), tmp_path)
    data = path.read_bytes()
    start = _header_len(path)
    meta = load_checkpoint(path).meta
    assert meta["checksum"] == "sha256:" + hashlib.sha256(data[start:]).hexdigest()
    flipped = bytearray(data)
    flipped[start + (len(data) - start) // 2] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="does not match its checksum") as err:
        load_checkpoint(tmp_path)
    assert str(path) in str(err.value)


def test_files_without_checksum_still_load(tmp_path):
    model = create_model("lenet5", in_channels=1).eval()
    meta = {k: v for k, v in model_meta(model).items() if k != "checksum"}
    path = _forge(tmp_path / "old.safetensors", meta, {k: v.clone() for k, v in model.state_dict().items()})
    back = load_checkpoint(path).model.eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(back(x), model(x))


def test_flipped_bit_in_the_header_is_a_clear_error(tmp_path):
    path = save_model(create_model("lenet5", in_channels=1), tmp_path)
    data = bytearray(path.read_bytes())
    data[9] ^= 0x40  # inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_nan_weights_load_with_one_warning_that_points_at_the_caller(tmp_path):
    model = create_model("lenet5", in_channels=1)
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] = float("nan")
    save_model(model, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint(tmp_path)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "NaN or inf" in str(caught[0].message) and caught[0].filename == __file__


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickles_with_code_are_refused_without_the_weights_only_false_advice(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "x": _RunsCode(str(marker))}, evil)
    for call in (lambda: load_checkpoint(evil, expect_model="lenet5"), lambda: load_train_state(evil)):
        with pytest.raises(CheckpointError, match="prunekit never unpickles arbitrary objects") as err:
            call()
        assert "weights_only" not in str(err.value) and "(it refers to getattr)" in str(err.value)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ dtype, storage
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtype_is_recorded_and_restored(tmp_path, dtype):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3).to(dtype)
    ck = load_checkpoint(save_model(model, tmp_path))
    assert ck.meta["dtype"] == str(dtype).replace("torch.", "")
    for (k, a), b in zip(model.state_dict().items(), ck.model.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), k


def test_mixed_dtypes_are_restored_tensor_by_tensor(tmp_path):
    model = create_model("lenet5", in_channels=1)
    model.fc2.double()
    ck = load_checkpoint(save_model(model, tmp_path))
    assert ck.meta["dtype"] is None
    assert {k: v.dtype for k, v in ck.model.state_dict().items()} == {k: v.dtype for k, v in
                                                                      model.state_dict().items()}


def _pruned_lenet(ratio: float = 0.9):
    from prunekit.pruning.unstructured import prune_unstructured

    torch.manual_seed(0)
    model = create_model("lenet5", in_channels=1)
    return model, prune_unstructured(model, "gp", ratio).masks


def test_auto_storage_packs_when_smaller_and_matches_sparse(tmp_path):
    model, masks = _pruned_lenet()
    auto = save_model(model, tmp_path / "auto.safetensors", masks=masks, storage="auto")
    sparse = save_model(model, tmp_path / "sparse.safetensors", masks=masks, storage="sparse")
    assert auto.stat().st_size == sparse.stat().st_size
    ck = load_checkpoint(auto)
    assert ck.meta["storage"] == "sparse" and all(torch.equal(ck.masks[k], masks[k]) for k in masks)
    plain = save_model(model, tmp_path / "plain.safetensors", storage="auto")  # no masks: nothing to pack
    assert load_checkpoint(plain).meta["storage"] == "dense"


def test_auto_storage_keeps_dense_what_cannot_or_should_not_be_packed():
    t_small = torch.ones(1, dtype=torch.float16)  # packed: 1 + 2 + 8 bytes > dense 2 + mask 1
    t_half = torch.ones(16, dtype=torch.float16)  # packed: 2 + 32 + 8 = 42 < dense 32 + mask 16 = 48
    t_revived = torch.ones(8)  # a masked-out entry is not zero: cannot be packed
    m = torch.ones(8, dtype=torch.bool)
    m[0] = False
    out = pack({"a": t_small, "b": t_half, "c": t_revived},
               {"a": torch.ones(1, dtype=torch.bool), "b": torch.ones(16, dtype=torch.bool), "c": m},
               only_if_smaller=True)
    assert set(out) == {"a", "__mask__/a", "__sparse__/b/bits", "__sparse__/b/values", "__sparse__/b/shape", "c",
                        "__mask__/c"}
    with pytest.raises(PrunekitError, match="non-zero entries"):
        pack({"c": t_revived}, {"c": m})


def test_storage_sizes_give_the_file_against_a_plain_dense_file(tmp_path):
    model, masks = _pruned_lenet()
    sparse = save_model(model, tmp_path / "sparse.safetensors", masks=masks, storage="sparse")
    dense = save_model(model, tmp_path / "dense.safetensors")  # the plain dense file: no masks
    size, dense_equiv = storage_sizes(sparse)
    assert size == sparse.stat().st_size
    assert abs(dense_equiv - dense.stat().st_size) <= 8  # the metadata says "sparse" instead of "dense"
    n_weights = sum(v.numel() for v in model.state_dict().values())
    assert dense_equiv > 4 * n_weights and size < 0.2 * dense_equiv
    assert storage_sizes(dense) == (dense.stat().st_size, dense.stat().st_size)


def test_streamed_writer_is_plain_safetensors_for_every_dtype(tmp_path):
    from safetensors.torch import load_file

    tensors = {"f64": torch.tensor(1.5, dtype=torch.float64), "bf16": torch.randn(3, 2).bfloat16(),
               "empty": torch.zeros(0, 4), "flags": torch.tensor([True, False, True]),
               "i16": torch.arange(5, dtype=torch.int16), "u8": torch.arange(3, dtype=torch.uint8)}
    write_safetensors(tmp_path / "t.safetensors", tensors, {"k": "v"})
    back = load_file(str(tmp_path / "t.safetensors"))
    assert set(back) == set(tensors)
    assert all(back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v)
               for k, v in tensors.items())


# ------------------------------------------------------------------------------------------ atomic writes
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save_model(create_model("lenet5", in_channels=1), tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temp file of ours or of safetensors left


def test_atomic_path_fsyncs_before_rename_and_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    with atomic_path(tmp_path / "out.json") as tmp:
        assert is_prunekit_temp(tmp.name) and tmp.name.startswith(".out.json.") and tmp.exists()
        tmp.write_text("{}")
    assert events == ["fsync", "replace", "fsync"]  # the file, the rename, the folder
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "other.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path)) == ["out.json"]
    with pytest.raises(PrunekitError, match="is a file, not a folder"):
        save_model(create_model("lenet5", in_channels=1), tmp_path / "out.json" / "sub")
    monkeypatch.setattr(os, "open", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(PrunekitError, match="permission denied in"):
        save_model(create_model("lenet5", in_channels=1), tmp_path)


def test_save_model_does_not_go_through_safetensors_own_writer(tmp_path, monkeypatch):
    import safetensors.torch

    def refuse(*a, **k):
        raise AssertionError("safetensors.save_file writes its own .tmpXXXXXX files")

    monkeypatch.setattr(safetensors.torch, "save_file", refuse)
    save_model(create_model("lenet5", in_channels=1), tmp_path)


@pytest.mark.parametrize("name,ours", [(".model.safetensors.ab12cd34.tmp", True), (".x.a_b1c2d3.tmp", True),
                                       (".train_state.pt.zzzzzzzz.tmp", True), ("model.safetensors", False),
                                       (".tmpAbC123", False), ("x.abcdefgh.tmp", False), (".x.abc.tmp", False),
                                       (".x.ABCDEFGH.tmp", False), (".x.abcdefgh.tmp.bak", False),
                                       (".x.abcdefgh.tmp\n", False)])
def test_is_prunekit_temp_matches_only_the_atomic_write_pattern(name, ours):
    assert is_prunekit_temp(name) is ours


def test_permission_denied_is_not_reported_as_missing(tmp_path, monkeypatch):
    path = save_model(create_model("lenet5", in_channels=1), tmp_path)
    assert path_problem(path) is None and path_problem(tmp_path / "nope").startswith("not found")
    real_stat = os.stat

    def denied(p, *a, **k):
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_stat(p, *a, **k)

    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(CheckpointError, match="permission denied"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------ IDX bombs
def _idx_header(dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)


def _gzip_bomb(path: Path, header: bytes, payload: bytes, gib_of_zeros: float) -> None:
    """A multi-member gzip file: the header + payload, then ``gib_of_zeros`` GiB of zeros as repeated members of
    1 MiB each (~1 KB compressed), so a 5 GiB bomb takes ~5 MB on disk and no time to make."""
    member = gzip.compress(b"\0" * (1 << 20), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(header + payload))
        for _ in range(int(gib_of_zeros * 1024)):
            f.write(member)


def test_idx_gzip_bomb_behind_a_small_header_fails_fast_with_little_memory(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_bomb(path, _idx_header((10, 28, 28)), bytes(7840), gib_of_zeros=5)
    assert path.stat().st_size < 8 << 20
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(PrunekitError, match="holds more data"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2 and peak < 32 << 20


def test_idx_header_claiming_absurd_dims_is_refused_before_reading(tmp_path):
    path = tmp_path / "a.gz"
    _gzip_bomb(path, _idx_header((2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1)), b"", gib_of_zeros=0.01)
    with pytest.raises(PrunekitError, match="more than the .* bytes prunekit reads"):
        read_idx(path)
    raw = tmp_path / "b"
    raw.write_bytes(_idx_header((60000, 28, 28)) + bytes(100))  # claims 47 MB, holds 100 bytes
    with pytest.raises(PrunekitError, match="holds 100 bytes"):
        read_idx(raw)


def test_truncated_gzip_and_bad_idx_contents_are_clear_errors(tmp_path):
    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 256, size=(4, 5, 5)).astype(np.uint8)
    blob = gzip.compress(_idx_header((4, 5, 5)) + imgs.tobytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_header((4,)) + bytes([0, 1, 2, 3]))
    with pytest.raises(PrunekitError, match="cannot read IDX file"):
        get_dataset("mnist", root=str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(blob)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_header((4,)) + bytes([0, 1, 2, 10]))
    with pytest.raises(PrunekitError, match=r"labels must lie in \[0, 10\)"):
        get_dataset("mnist", root=str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 4)
                                                       + np.zeros(4, ">f4").tobytes())
    with pytest.raises(PrunekitError, match="labels must be integers"):
        get_dataset("mnist", root=str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_header((4, 0, 5))))
    with pytest.raises(PrunekitError, match="none of them 0"):
        get_dataset("mnist", root=str(tmp_path))


def test_idx_permission_denied_says_so(tmp_path, monkeypatch):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_idx_header((1,)) + b"\0"))
    import prunekit.data.formats as formats

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(formats.gzip, "open", denied)
    with pytest.raises(PrunekitError, match="permission denied"):
        read_idx(path)


# ------------------------------------------------------------------------------------------ pickles
def _nested_pickle(n: int, container: bytes) -> bytes:
    """Protocol-2 opcodes for ``n`` dicts (``}``) nested under key "data", or ``n`` nested lists (``]``)."""
    if container == b"}":
        return b"\x80\x02" + (b"}" + b"X\x04\x00\x00\x00data") * n + b"}" + b"s" * n + b"."
    return b"\x80\x02" + b"]" * (n + 1) + b"a" * n + b"."


@pytest.mark.parametrize("container", [b"}", b"]"])
def test_cifar_batch_of_20000_nested_containers_is_a_clear_error(tmp_path, container):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(_nested_pickle(20_000, container))
    with pytest.raises(PrunekitError, match="nested more than 32 deep"):
        get_dataset("cifar10", root=str(tmp_path), train=False)


def test_pickle_with_thousands_of_keys_gives_a_short_message(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({f"key{i}": i for i in range(20_000)}))
    with pytest.raises(PrunekitError, match="missing key 'data'") as err:
        get_dataset("cifar10", root=str(tmp_path), train=False)
    assert len(str(err.value)) < 600 and "20000 keys" in str(err.value) and load_pickle(path)["key5"] == 5
    path.write_bytes(pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "labels": []}))
    with pytest.raises(PrunekitError, match="'data' must be uint8"):
        get_dataset("cifar10", root=str(tmp_path), train=False)


# ------------------------------------------------------------------------------------------ folder trees
def _image_tree(root: Path) -> None:
    from PIL import Image

    for rel in ("train/cat/a.png", "train/dog/b.png", "train/dog/c.png", "val/cat/d.png"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)


def _labels(ds) -> list[int]:
    return sorted(lab for _, lab in ds.samples)


def test_symlink_loops_do_not_multiply_or_hang(tmp_path, caplog):
    _image_tree(tmp_path)
    os.symlink(".", tmp_path / "train/cat/loop")
    assert _labels(get_dataset("imagenet", root=str(tmp_path))) == [0, 1, 1]
    os.symlink("..", tmp_path / "train/dog/up")  # with followlinks=True: every class under 'dog', forever
    os.symlink("../dog", tmp_path / "train/cat/sideways")
    assert _labels(get_dataset("imagenet", root=str(tmp_path))) == [0, 1, 1]
    assert "not following 3 linked folder" in caplog.text


def test_class_folders_that_link_to_the_split_or_each_other_are_refused(tmp_path):
    _image_tree(tmp_path)
    os.symlink(".", tmp_path / "train/loop")
    with pytest.raises(PrunekitError, match="links back to"):
        get_dataset("imagenet", root=str(tmp_path))
    os.unlink(tmp_path / "train/loop")
    os.symlink("cat", tmp_path / "train/kitten")
    with pytest.raises(PrunekitError, match="are the same folder"):
        get_dataset("imagenet", root=str(tmp_path))
    os.unlink(tmp_path / "train/kitten")
    os.symlink("b1", tmp_path / "train/a1")  # a symlink cycle: neither is a folder
    os.symlink("a1", tmp_path / "train/b1")
    assert _labels(get_dataset("imagenet", root=str(tmp_path))) == [0, 1, 1]


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    _image_tree(tmp_path)
    (tmp_path / "train/emu").mkdir()
    (tmp_path / "train/emu/readme.txt").write_text("no images")
    with pytest.raises(PrunekitError, match=r"class folder .*train/emu holds no image files"):
        get_dataset("imagenet", root=str(tmp_path))


def test_unlistable_class_folder_says_permission_denied(tmp_path, monkeypatch):
    _image_tree(tmp_path)
    real = os.scandir

    def scandir(p="."):
        if str(p).endswith("dog"):
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PrunekitError, match=r"cannot list .*dog: permission denied"):
        get_dataset("imagenet", root=str(tmp_path))


# ------------------------------------------------------------------------------------------ synthetic specs
@pytest.mark.parametrize("spec,match", [
    ("synthetic:n=abc", "option n must be an integer, got 'abc'"),
    ("synthetic:n=0", r"option n must be in \[1, "),
    ("synthetic:size=2.5", "option size must be an integer"),
    ("synthetic:classes=1", r"option classes must be in \[2, "),
    ("synthetic:noise=nan", "option noise must be a finite number"),
    ("synthetic:noise=-1", "option noise must be"),
    ("synthetic:augment=maybe", "option augment must be true or false"),
    ("synthetic:seed=-3", "option seed must be"),
    ("synthetic:n=1000000,size=4096", "pixels, more than"),
    ("imagenet:crop_size=big", "option crop_size must be an integer"),
])
def test_bad_synthetic_and_dataset_specs_are_clear_errors(spec, match):
    for call in (lambda: get_dataset(spec), lambda: dataset_info(spec)):
        with pytest.raises(PrunekitError, match=match):
            call()


def test_cifar_labels_built_from_shared_references_are_refused_fast(tmp_path):
    laughs: list = [1] * 10
    for _ in range(9):  # 10**9 leaves, ~100 objects: np.asarray of it would try to allocate 8 GB
        laughs = [laughs] * 10
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((10, 3072), np.uint8), "labels": laughs}))
    t0 = time.perf_counter()
    with pytest.raises(PrunekitError, match="'labels' must be a list of 10 integer labels"):
        get_dataset("cifar10", root=str(tmp_path), train=False)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": [[0] * 3072] * 10, "labels": [0] * 10}))
    with pytest.raises(PrunekitError, match="'data' must be a numpy array"):
        get_dataset("cifar10", root=str(tmp_path), train=False)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 10}))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({"label_names": laughs}))
    with pytest.raises(PrunekitError, match="must list 10 class names"):
        get_dataset("cifar10", root=str(tmp_path), train=False)
    assert time.perf_counter() - t0 < 2

