"""Masks never drift: pruned weights stay exactly +0.0 under real optimizer steps, resumed state and save/load."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.pruning.masks import mask_gradients
from prunekit.pruning.sparsifier import MaskHook
from prunekit.pruning.unstructured import prune_unstructured


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


class _Stub:
    """What MaskHook needs of a Trainer."""

    def __init__(self, module):
        self.module = module


def _batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(n)]


def _make_opt(name: str, params):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    if name == "adam":
        return torch.optim.Adam(params, lr=0.05, weight_decay=1e-2)
    return torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)


def _train(model, opt, batches, hook=None, grad_only_masks=None):
    stub = _Stub(model)
    if hook is not None:
        hook.on_fit_start(stub)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if hook is not None:
            hook.after_backward(stub)
        if grad_only_masks is not None:
            mask_gradients(model, grad_only_masks)
        opt.step()
        if hook is not None:
            hook.after_step(stub)


def _assert_exact_zeros(model, masks):
    params = dict(model.named_parameters())
    for name, m in masks.items():
        pruned = params[name].detach()[~m]
        assert pruned.numel() > 0
        assert torch.all(pruned.view(torch.int32) == 0), f"{name}: pruned weights are not +0.0"


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_exactly_zero_with_resumed_optimizer_state(opt_name):
    model = Small()
    opt = _make_opt(opt_name, model.parameters())
    _train(model, opt, _batches(3, seed=1))                   # dense warm-up: momentum/Adam state everywhere
    res = prune_unstructured(model, "gp", 0.6)
    state = opt.state_dict()                                  # resume: a fresh optimizer loads the old state
    opt2 = _make_opt(opt_name, model.parameters())
    opt2.load_state_dict(state)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    _train(model, opt2, _batches(5, seed=2), hook=MaskHook(res.masks))
    _assert_exact_zeros(model, res.masks)
    kept_moved = [not torch.equal(before[n][m], p.detach()[m]) for n, p in model.named_parameters()
                  for m in [res.masks.get(n)] if m is not None]
    assert all(kept_moved)


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_gradient_masking_alone_drifts_with_resumed_state(opt_name):
    """The control: without re-applying the mask after the step, the resumed state moves pruned weights."""
    model = Small()
    opt = _make_opt(opt_name, model.parameters())
    _train(model, opt, _batches(3, seed=1))
    res = prune_unstructured(model, "gp", 0.6)
    _train(model, opt, _batches(2, seed=2), grad_only_masks=res.masks)
    conv_pruned = model.conv.weight.detach()[~res.masks["conv.weight"]]
    assert int((conv_pruned != 0).sum()) > 0


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_masks_hold_through_fit_and_resume(opt_name, tmp_path, digits_small):
    from prunekit.checkpoint import load_checkpoint
    from prunekit.engine.trainer import TrainConfig, fit
    from prunekit.models import create_model

    train, test = digits_small
    model = create_model("lenet5", num_classes=10, in_channels=1)
    res = prune_unstructured(model, "gp", 0.8)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, optimizer=opt_name, weight_decay=1e-3,
                      max_steps_per_epoch=3, device="cpu")
    fit(model, train, None, cfg, masks=res.masks, out_dir=tmp_path)
    # resume for one more epoch from the saved optimizer state, in a fresh model
    fresh = create_model("lenet5", num_classes=10, in_channels=1)
    cfg2 = TrainConfig(**{**cfg.to_dict(), "epochs": 2, "milestones": (0.5, 0.75)})
    # a longer run and fresh initial weights: a changed configuration, resumed on purpose
    fit(fresh, train, None, cfg2, masks=res.masks, out_dir=tmp_path, resume=True, resume_anyway=True)
    _assert_exact_zeros(fresh, res.masks)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.masks is not None and set(ckpt.masks) == set(res.masks)
    assert all(torch.equal(ckpt.masks[k], res.masks[k]) for k in res.masks)
    _assert_exact_zeros(ckpt.model, ckpt.masks)
    assert ckpt.meta["extra"]["epoch"] == 2


def test_mask_counts_and_sparsity_by_hand():
    from prunekit.pruning.masks import layer_sparsity, mask_counts, sparsity

    masks = {"a": torch.tensor([[True, False, False], [True, True, True]]),  # 2 of 6 pruned
             "b": torch.tensor([False, False])}                             # 2 of 2 pruned
    assert mask_counts(masks) == (4, 8)
    assert sparsity(masks) == 0.5
    assert layer_sparsity(masks) == {"a": 2 / 6, "b": 1.0}
    assert mask_counts({}) == mask_counts(None) == (0, 0) and sparsity(None) == 0.0
    assert sparsity({"u8": torch.tensor([1, 0, 0, 0], dtype=torch.uint8)}) == 0.75  # non-bool masks count as bool


def test_masks_module_is_pure_tensor_functions():
    """Enforcement during training lives in the sparsifier / engine; pruning/masks.py imports no hook machinery."""
    import ast
    from pathlib import Path

    import prunekit.pruning.masks as masks

    tree = ast.parse(Path(masks.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "errors"}, imported  # ``from ..errors import ...`` -> "errors"
    assert not [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
