"""Sparse checkpoint storage: shrinks with sparsity, loads back bit-exactly, rejects inconsistent input."""
from __future__ import annotations

import pytest
import torch

from prunekit.checkpoint import load_checkpoint, save_model
from prunekit.errors import CheckpointError, PrunekitError
from prunekit.models import create_model
from prunekit.pruning.sparse_format import pack, pack_mask, unpack, unpack_mask
from prunekit.pruning.unstructured import prune_unstructured


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def test_mask_bits_round_trip_odd_sizes():
    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (3, 5), (2, 3, 3, 3)]:
        m = torch.rand(shape, generator=g) > 0.5
        bits = pack_mask(m)
        assert bits.dtype == torch.uint8 and bits.numel() == (m.numel() + 7) // 8
        assert torch.equal(unpack_mask(bits, shape), m)


def test_sparse_file_is_small_at_90_percent_and_loads_bit_exactly(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    with torch.no_grad():  # non-trivial BN statistics and biases, so every tensor is checked
        for _name, buf in model.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand_like(buf))
    res = prune_unstructured(model, "gp", 0.9)
    dense = save_model(model, tmp_path / "dense.safetensors", masks=res.masks)
    sparse = save_model(model, tmp_path / "sparse.safetensors", masks=res.masks, storage="sparse")
    ratio = sparse.stat().st_size / dense.stat().st_size  # dense storage of the same pruned checkpoint
    assert ratio <= 0.15, ratio
    a, b = load_checkpoint(dense), load_checkpoint(sparse)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert sb[k].dtype == v.dtype and torch.equal(_bits(sb[k]), _bits(v)), k
    assert set(b.masks) == set(res.masks)
    assert all(torch.equal(b.masks[k], res.masks[k]) for k in res.masks)
    assert b.meta["storage"] == "sparse"


def test_sparse_storage_shrinks_with_sparsity(tmp_path):
    plain = save_model(create_model("lenet5", num_classes=10, in_channels=1), tmp_path / "plain.safetensors")
    sizes = []
    for ratio in (0.5, 0.8, 0.9, 0.95):
        model = create_model("lenet5", num_classes=10, in_channels=1)
        res = prune_unstructured(model, "gp", ratio)
        sizes.append(save_model(model, tmp_path / f"m{ratio}.safetensors", masks=res.masks,
                                storage="sparse").stat().st_size)
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert sizes[2] <= 0.15 * plain.stat().st_size  # even against an unmasked dense file


def test_pack_keeps_unmasked_tensors_and_round_trips():
    state = {"w": torch.tensor([[0.0, 1.5], [0.0, -2.0]]), "b": torch.tensor([3.0, -0.0]),
             "n": torch.tensor(7)}
    masks = {"w": torch.tensor([[False, True], [True, True]])}  # a kept entry may be 0.0
    tensors = pack(state, masks)
    assert "w" not in tensors and tensors["b"] is state["b"] and "__sparse__/w/values" in tensors
    assert torch.equal(tensors["__sparse__/w/values"], torch.tensor([1.5, 0.0, -2.0]))
    out, m = unpack(tensors)
    assert set(out) == {"w", "b", "n"} and torch.equal(out["w"], state["w"]) and torch.equal(m["w"], masks["w"])
    assert unpack(pack(state, None)) == (state, None)


def test_pack_refuses_nonzero_pruned_entries_and_bad_masks():
    state = {"w": torch.tensor([1.0, 2.0])}
    with pytest.raises(PrunekitError, match="'w'"):
        pack(state, {"w": torch.tensor([True, False])})
    with pytest.raises(PrunekitError, match="shape"):
        pack(state, {"w": torch.tensor([True, False, True])})
    with pytest.raises(PrunekitError, match="'v'"):
        pack(state, {"v": torch.tensor([True])})


def test_unpack_rejects_corrupt_entries():
    tensors = pack({"w": torch.tensor([0.0, 2.0, 3.0])}, {"w": torch.tensor([False, True, True])})
    bad = dict(tensors)
    bad["__sparse__/w/values"] = torch.tensor([2.0])
    with pytest.raises(CheckpointError, match="'w'"):
        unpack(bad)
    missing = {k: v for k, v in tensors.items() if not k.endswith("/shape")}
    with pytest.raises(CheckpointError, match="shape"):
        unpack(missing)
