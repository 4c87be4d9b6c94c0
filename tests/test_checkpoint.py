"""Checkpoints: (architecture, cfg, state_dict) in safetensors, no pickle, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from prunekit import create_model, load_checkpoint, load_model, save_model
from prunekit.errors import CheckpointError, PrunekitError
from prunekit.models.bounds import _requested, bounded_build


def test_save_and_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=7, in_channels=1).eval()
    path = save_model(model, tmp_path, extra={"note": "hi"})
    assert path == tmp_path / "model.safetensors"
    back = load_model(tmp_path).eval()
    assert back.num_classes == 7 and back.in_channels == 1
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), back(x))
    assert load_checkpoint(path).meta["extra"] == {"note": "hi"}


def test_pruned_cfg_is_rebuilt_from_metadata(tmp_path):
    cfg = [8] * 3 + [16] * 3 + [32] * 3
    model = create_model("resnet20", cfg=cfg)
    save_model(model, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    assert back.prunekit_cfg == cfg
    assert back.layer1[0].conv1.out_channels == 8


def test_masks_are_saved_and_restored(tmp_path):
    model = create_model("lenet5", in_channels=1)
    masks = {n: torch.rand(p.shape) > 0.5 for n, p in model.named_parameters() if p.dim() > 1}
    save_model(model, tmp_path, masks=masks)
    ck = load_checkpoint(tmp_path)
    assert set(ck.masks) == set(masks) and all(torch.equal(ck.masks[k], masks[k]) for k in masks)


def test_file_is_plain_safetensors_with_json_metadata(tmp_path):
    from safetensors import safe_open

    save_model(create_model("lenet5"), tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["prunekit"])
    assert meta["model"] == "lenet5" and meta["format"] == "prunekit/1"


def test_missing_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(bad)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without prunekit metadata"):
        load_model(tmp_path / "plain.safetensors")
    save_model(create_model("lenet5"), tmp_path / "lenet")
    with pytest.raises(CheckpointError, match="'lenet5' model, not 'resnet20'"):
        load_checkpoint(tmp_path / "lenet", expect_model="resnet20")


def test_state_dict_shape_mismatch_names_the_tensor(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    save_model(create_model("lenet5"), tmp_path)
    f = tmp_path / "model.safetensors"
    with safe_open(str(f), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    tensors["fc2.weight" if "fc2.weight" in tensors else sorted(tensors)[-1]] = torch.zeros(3, 3)
    save_file(tensors, str(f), metadata=meta)
    with pytest.raises(CheckpointError, match="shape"):
        load_model(tmp_path)


def test_models_not_built_by_prunekit_cannot_be_saved(tmp_path):
    with pytest.raises(PrunekitError, match="create_model"):
        save_model(torch.nn.Linear(2, 2), tmp_path)


def test_plain_state_dict_files_import_into_the_named_zoo_model(tmp_path):
    """A torchvision-style .pth (tensors only) loads with weights_only into the model of the same name."""
    src = create_model("resnet18", num_classes=1000).eval()
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "resnet18.pth")  # DDP-style keys
    ck = load_checkpoint(tmp_path / "resnet18.pth", expect_model="resnet18")
    assert ck.model.num_classes == 1000 and ck.meta["extra"]["imported_from"].endswith("resnet18.pth")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(src(x), ck.model.eval()(x))
    with pytest.raises(CheckpointError, match="name its architecture"):
        load_checkpoint(tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError, match="does not match model resnet34"):
        load_checkpoint(tmp_path / "resnet18.pth", expect_model="resnet34")
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled_module.pth")  # code objects are refused
    with pytest.raises(CheckpointError, match="never unpickles arbitrary objects") as err:
        load_checkpoint(tmp_path / "pickled_module.pth", expect_model="resnet18")
    assert "weights_only=False" not in str(err.value) and "torch.nn.modules.linear.Linear" in str(err.value)


# bounds on what a checkpoint's metadata can make prunekit allocate (see also tests/test_hardening_files.py)
def test_allocation_guard_counts_every_constructor_exactly():
    def build(extra: int):
        a = torch.empty(60)
        b = torch.zeros(4, 10)
        c = torch.randn(extra)
        return a, b, c

    assert len(bounded_build(lambda: build(0), "x", limit=100)) == 3  # 60 + 40 + 0 = 100: allowed
    with pytest.raises(PrunekitError, match="^y would allocate more than 100 tensor elements"):
        bounded_build(lambda: build(1), "y", limit=100)
    with pytest.raises(PrunekitError):  # refused before the allocation (2**40 floats would not fit anyway)
        bounded_build(lambda: torch.empty(2 ** 40), "z", limit=100)


@pytest.mark.parametrize("name,args,kwargs", [
    ("empty", (60,), {}), ("empty", ((3, 4),), {}), ("empty", (3, 4), {}), ("zeros", (), {"size": (2, 5)}),
    ("randn", (torch.Size([2, 3]),), {}), ("full", ((2, 3), 1.0), {}), ("randint", (5, (2, 3)), {}),
    ("randint", (1, 5, (4,)), {}), ("arange", (10,), {}), ("arange", (2, 10, 3), {}),
    ("arange", (0.0, 1.0, 0.25), {}), ("eye", (3,), {}), ("eye", (3, 5), {}), ("randperm", (7,), {}),
    ("linspace", (0, 1, 9), {})])
def test_allocation_guard_reads_sizes_off_the_arguments_as_torch_does(name, args, kwargs):
    assert _requested(name, args, kwargs) == getattr(torch, name)(*args, **kwargs).numel()


class _Versioned(torch.nn.Module):
    """MNASNet-like (plain torch): the state_dict carries a version its ``_load_from_state_dict`` insists on, as
    torchvision's MNASNet does ("version should be set to 1 or 2 instead of None")."""

    _version = 2
    seen: list = []  # the versions the loader was given, in order

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        version = local_metadata.get("version", None)
        if version not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of {version}")
        _Versioned.seen.append(version)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def test_state_dict_versions_survive_a_pruned_round_trip(tmp_path, monkeypatch):
    """A structurally pruned module that checks its state_dict version reloads, and gets the version it was saved
    with (not the version of the class at load time)."""
    import prunekit
    from prunekit.factory import mark

    torch.manual_seed(0)
    model = mark(_Versioned().eval(), "test_checkpoint:_Versioned", {}, (3, 8, 8))
    with pytest.raises(ValueError, match="instead of None"):  # what plain safetensors tensors give it
        _Versioned().load_state_dict(dict(model.state_dict()))
    small = prunekit.prune_structured(model, input_size=(3, 8, 8), ratio=0.5).model
    assert small.stem[0].out_channels == 8
    save_model(small, tmp_path)
    meta = json.loads(__import__("safetensors").safe_open(str(tmp_path / "model.safetensors"), "pt")
                      .metadata()["prunekit"])
    assert meta["state_versions"][""] == 2 and meta["state_versions"]["stem.1"] == 2  # BatchNorm's version 2
    monkeypatch.setattr(_Versioned, "_version", 3)  # the class moved on; the file still says 2
    _Versioned.seen.clear()
    back = load_model(tmp_path, factory=_Versioned).eval()
    assert _Versioned.seen == [2]
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(back(x), small.eval()(x))  # the same weights, the same ops on the same data


def test_a_file_without_state_versions_loads_with_the_modules_own(tmp_path):
    """Files written before state_versions existed: each module gets the version of its own class."""
    from prunekit.factory import mark
    from prunekit.pruning.sparse_format import payload_digest, write_safetensors

    model = mark(_Versioned(), "test_checkpoint:_Versioned", {}, (3, 8, 8))
    save_model(model, tmp_path)
    from safetensors.torch import load_file

    f = tmp_path / "model.safetensors"
    meta = json.loads(__import__("safetensors").safe_open(str(f), "pt").metadata()["prunekit"])
    tensors = load_file(str(f))
    del meta["state_versions"]
    meta["checksum"] = payload_digest(tensors)
    write_safetensors(f, tensors, {"prunekit": json.dumps(meta)})
    _Versioned.seen.clear()
    load_model(tmp_path, factory=_Versioned)
    assert _Versioned.seen == [2]
    meta["state_versions"] = {"": "two"}
    write_safetensors(f, tensors, {"prunekit": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="state_versions"):
        load_model(tmp_path, factory=_Versioned)
