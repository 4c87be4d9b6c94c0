"""torch.nn.utils.prune <-> prunekit masks, both directions, live modules and state dicts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.pruning.interop import load_torch_pruned, masks_from_torch_prune, remove_torch_prune, to_torch_prune
from prunekit.pruning.unstructured import prune_unstructured


def _torch_pruned_lenet(amount: float = 0.7):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    params = [(model.conv1, "weight"), (model.conv2, "weight"), (model.fc1, "weight"), (model.fc2, "weight")]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    return model


def test_reads_a_torch_pruned_state_dict_into_a_prunekit_model():
    src = _torch_pruned_lenet()
    state = src.state_dict()
    assert "conv1.weight_orig" in state and "conv1.weight_mask" in state
    target = create_model("lenet5", num_classes=10, in_channels=1)
    masks = load_torch_pruned(target, state)
    assert sorted(masks) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.7 * total)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(target(x), src(x))
    for name, m in masks.items():
        w = dict(target.named_parameters())[name].detach()
        assert torch.equal(w == 0, ~m | (w == 0)) and torch.all(w[~m].view(torch.int32) == 0)


def test_reads_a_live_module_and_removes_the_reparametrisation():
    src = _torch_pruned_lenet(0.5)
    state, masks = masks_from_torch_prune(src)
    assert "conv1.weight" in state and not any(k.endswith(("_orig", "_mask")) for k in state)
    live = remove_torch_prune(src)
    assert set(live) == set(masks) and all(torch.equal(live[k], masks[k]) for k in masks)
    assert isinstance(src.conv1.weight, nn.Parameter) and not hasattr(src.conv1, "weight_orig")
    assert torch.equal(src.conv1.weight.detach() == 0, ~masks["conv1.weight"])


def test_writes_prunekit_masks_back_as_torch_prune():
    model = create_model("lenet5", num_classes=10, in_channels=1)
    res = prune_unstructured(model, "per-kind", 0.6)
    x = torch.randn(2, 1, 28, 28)
    y = model(x)
    to_torch_prune(model, res.masks)
    assert tprune.is_pruned(model)
    assert torch.equal(model.conv2.weight_mask.bool(), res.masks["conv2.weight"])
    assert torch.equal(model(x), y)
    # full round trip through torch's state dict
    back = create_model("lenet5", num_classes=10, in_channels=1)
    masks = load_torch_pruned(back, model.state_dict())
    assert set(masks) == set(res.masks) and all(torch.equal(masks[k], res.masks[k]) for k in masks)


def test_incomplete_torch_state_dict_is_a_user_error():
    state = _torch_pruned_lenet().state_dict()
    del state["fc1.weight_mask"]
    with pytest.raises(PrunekitError, match="fc1.weight_mask"):
        masks_from_torch_prune(state)
