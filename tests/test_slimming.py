"""Network slimming: sparsity hook, global threshold, exact removal on VGG/PreResNet-164/DenseNet-40, mask-impl."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from prunekit import load_checkpoint, load_model, save_model
from prunekit.errors import EmptyLayerError, PrunekitError
from prunekit.metrics import count_params
from prunekit.models import create_model
from prunekit.pruning.sparsifier import MaskHook
from prunekit.pruning.structured.slimming import (BNL1Hook, global_threshold, prune_slimming,
                                                  prune_slimming_mask)
from prunekit.pruning.structured.verify import randomize_bn, removal_error

TOL = 1e-5


def _model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(create_model(name), seed).eval()


def _gammas(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().abs().flatten() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


def test_bn_l1_hook_adds_s_sign_gamma_to_gamma_grads_only():
    m = _model("vgg11")
    m.train()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        m.features[1].weight[:3] = torch.tensor([-0.5, 0.0, 0.25])
    nn.functional.cross_entropy(m(x), torch.tensor([1, 2])).backward()
    before = {n: p.grad.clone() for n, p in m.named_parameters()}
    BNL1Hook(1e-2).after_backward(SimpleNamespace(module=m))
    for n, p in m.named_parameters():
        if n.startswith("features.") and n.endswith(".weight") and p.dim() == 1:
            assert torch.equal(p.grad, before[n] + 1e-2 * torch.sign(p.detach())), n
        else:
            assert torch.equal(p.grad, before[n]), n
    assert m.features[1].weight.grad[1] == before["features.1.weight"][1]  # sign(0) = 0


def test_threshold_is_sorted_gamma_at_int_total_percent():
    m = _model("vgg11")
    thr, total = global_threshold(m, 0.4)
    g = _gammas(m)
    assert total == g.numel() == 64 + 128 + 2 * 256 + 4 * 512
    assert thr == float(torch.sort(g.double()).values[int(total * 0.4)])
    res = prune_slimming(m, 0.4)
    assert res.info["channels_kept"] == int((g > thr).sum())  # distinct random |γ|: int(total·p)+1 pruned
    assert res.info["channels_pruned"] == int(total * 0.4) + 1
    assert global_threshold(m, 0.0)[0] == float("-inf")
    with pytest.raises(PrunekitError, match="--percent"):
        global_threshold(m, 1.0)


@pytest.mark.parametrize("name,size", [("vgg11", (3, 16, 16)), ("vgg19", (3, 8, 8)),
                                       ("preresnet164", (3, 8, 8)), ("densenet40", (3, 8, 8))])
def test_slimmed_model_equals_original_with_pruned_gamma_beta_zeroed(name, size, tmp_path):
    m = _model(name)
    res = prune_slimming(m, 0.5)
    assert count_params(res.model) < count_params(m)
    assert removal_error(m, res, size) <= TOL
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert (m(x) - res.model.eval()(x)).abs().max() > 1e-3
    save_model(res.model, tmp_path)
    back = load_model(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(back(x), res.model(x))
    assert back.prunekit_cfg == res.model.prunekit_cfg


def test_preresnet164_rebuild_keeps_residual_widths_and_selects_bn1_channels():
    m = _model("preresnet164")
    res = prune_slimming(m, 0.4)
    p = res.model
    b = p.layer2[3]
    kept_bn1 = res.keep["layer2.3.bn1"]
    assert b.bn1.num_features == 128 and b.conv3.out_channels == 128  # residual stream untouched
    assert torch.nonzero(b.select.indexes).flatten().tolist() == kept_bn1
    assert b.conv1.in_channels == len(kept_bn1)
    # internal groups are named by their conv (aliases include the BN): conv1 -> bn2, conv2 -> bn3
    assert b.bn2.num_features == b.conv1.out_channels == len(res.keep["layer2.3.conv1"])
    assert b.conv3.in_channels == len(res.keep["layer2.3.conv2"])
    assert p.layer2[0].downsample[0].weight.shape == m.layer2[0].downsample[0].weight.shape
    assert p.fc.in_features == len(res.keep["bn"])


def test_densenet40_prunes_only_conv_inputs():
    m = _model("densenet40")
    res = prune_slimming(m, 0.4)
    for (n, a), (_, b) in zip(m.named_modules(), res.model.named_modules()):
        if isinstance(a, nn.Conv2d):
            assert b.out_channels == a.out_channels, n  # growth / transition outputs never pruned
        if isinstance(a, nn.BatchNorm2d):
            assert b.num_features == a.num_features, n
    assert res.model.dense2[0].conv1.in_channels == len(res.keep["dense2.0.bn1"])


def test_slimming_never_empties_a_layer_and_strict_mode_names_it():
    m = _model("vgg11")
    with torch.no_grad():
        m.features[5].weight.mul_(1e-3)  # BN of the second conv (group "features.4"): every |γ| below the global threshold
    with pytest.warns(UserWarning, match="features.4"):
        res = prune_slimming(m, 0.3)
    assert res.keep["features.0"] != [] and len(res.keep["features.4"]) == 1
    assert res.keep["features.4"] == [int(m.features[5].weight.abs().argmax())]
    assert res.model.prunekit_cfg[2] == 1
    assert any("features.4" in w for w in res.warnings)
    with pytest.raises(EmptyLayerError, match="features.4"):
        prune_slimming(m, 0.3, strict_empty=True)
    with pytest.raises(PrunekitError, match="no BatchNorm2d whose channels can be removed"):
        prune_slimming(create_model("lenet5"), 0.3)


def test_slimming_runs_on_any_bn_network_and_keeps_residual_streams_whole():
    """Slimming on the graph: resnet20's block-internal conv->BN groups are pruned; the residual streams (several
    BNs, coupled by the sums) keep every channel."""
    m = _model("resnet20")
    res = prune_slimming(m, 0.3)
    assert removal_error(m, res, (3, 8, 8)) <= TOL
    assert set(res.keep) == {f"layer{s}.{i}.conv1" for s in (1, 2, 3) for i in range(3)}
    assert [b.conv2.out_channels for b in res.model.layer3] == [64, 64, 64]


def test_slimming_mask_keeps_gamma_beta_zero_through_sgd_steps(tmp_path):
    m = _model("vgg11")
    with torch.no_grad():
        m.features[5].weight.mul_(1e-3)  # mask-impl may empty a whole layer without error
    masked, masks, res = prune_slimming_mask(m, 0.4)
    assert res.info["empty_layers"] == ["features.4"]
    assert count_params(masked) == count_params(m)
    zero = ~masks["features.1.weight"]
    assert zero.any() and not masks["features.5.weight"].any()
    masked.train()
    hook = MaskHook(masks)
    trainer = SimpleNamespace(module=masked)
    opt = torch.optim.SGD(masked.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    hook.on_fit_start(trainer)
    for _step in range(3):
        x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        opt.zero_grad()
        nn.functional.cross_entropy(masked(x), y).backward()
        BNL1Hook(1e-4).after_backward(trainer)
        hook.after_backward(trainer)
        opt.step()
        hook.after_step(trainer)
    bn = masked.features[1]
    assert torch.all(bn.weight[zero] == 0) and torch.all(bn.bias[zero] == 0)
    assert torch.all(masked.features[5].weight == 0) and torch.all(masked.features[5].bias == 0)
    assert torch.any(bn.weight[~zero] != 0)
    save_model(masked, tmp_path, masks=masks)
    ck = load_checkpoint(tmp_path)
    assert set(ck.masks) == set(masks) and all(torch.equal(ck.masks[k], masks[k]) for k in masks)


def test_mask_impl_equals_physical_removal_when_no_layer_is_empty():
    m = _model("densenet40")
    masked, _, _ = prune_slimming_mask(m, 0.5)
    res = prune_slimming(m, 0.5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (masked.eval()(x) - res.model.eval()(x)).abs().max() <= TOL


def test_finetune_through_the_trainer_keeps_masked_bn_channels_at_zero(digits_small):
    from prunekit.engine.trainer import TrainConfig, fit

    train, test = digits_small
    m = randomize_bn(create_model("vgg11", num_classes=10, in_channels=1), seed=5)
    masked, masks, _ = prune_slimming_mask(m, 0.5)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, weight_decay=1e-4, device="cpu", max_steps_per_epoch=3)
    fit(masked, train, test, cfg, masks=masks, hooks=[BNL1Hook(1e-4)])
    for name, mask in masks.items():
        p = dict(masked.named_parameters())[name]
        assert torch.all(p[~mask] == 0), name
    assert not torch.equal(masked.features[1].weight, m.features[1].weight * masks["features.1.weight"])


@pytest.mark.parametrize("name", ["preresnet164", "densenet40"])
def test_a_training_step_runs_on_the_slimmed_model(name):
    pruned = prune_slimming(_model(name), 0.5).model.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1, momentum=0.9)
    loss = nn.functional.cross_entropy(pruned(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1]))
    loss.backward()
    before = pruned.fc.weight.detach().clone()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, pruned.fc.weight)
    assert all(p.grad is not None for n, p in pruned.named_parameters() if "conv" in n)


def _nearest_multiple(n: int, size: int, r: int) -> int:
    """Hand rule for ``round_to``: nearest multiple of r (halves to the even multiple), in [r, size]; a layer no
    wider than r keeps n."""
    if size <= r:
        return n
    q, rem = divmod(n, r)
    if 2 * rem > r or (2 * rem == r and q % 2 == 1):
        q += 1
    return min(size, max(r, q * r))


@pytest.mark.parametrize("r", [4, 8])
def test_slimming_round_to_keeps_each_layers_largest_gammas_in_multiples_of_n(r):
    m = _model("vgg11")
    thr, _ = global_threshold(m, 0.4)
    res = prune_slimming(m, 0.4, round_to=r)
    bns = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    moved = 0
    for bn_name, bn in bns:
        g = bn.weight.detach().abs()
        n0 = int((g > thr).sum())
        n = _nearest_multiple(n0, g.numel(), r)
        moved += abs(n - n0)
        group = f"features.{int(bn_name.split('.')[1]) - 1}"  # conv -> BN: the group is named by its conv
        expect = sorted(torch.argsort(g, descending=True, stable=True)[:n].tolist())
        assert res.keep[group] == expect, group
        assert len(res.keep[group]) % r == 0
    assert moved > 0  # the rounding did change some layer (otherwise this test would not test it)
    assert [w for w in res.model.prunekit_cfg if w != "M"] == [len(res.keep[f"features.{int(n.split('.')[1]) - 1}"])
                                                                for n, _ in bns]
    assert res.info["round_to"] == r
    assert removal_error(m, res, (3, 16, 16)) <= TOL


def test_slimming_round_to_on_preresnet164_gives_multiple_widths_and_stays_exact():
    m = _model("preresnet164")
    res = prune_slimming(m, 0.4, round_to=8)
    plain = prune_slimming(m, 0.4)
    assert any(len(k) % 8 for k in plain.keep.values())  # unrounded widths are not all multiples of 8
    assert all(len(k) % 8 == 0 for k in res.keep.values())
    assert res.model.layer2[3].conv1.in_channels == len(res.keep["layer2.3.bn1"])
    assert removal_error(m, res, (3, 8, 8)) <= TOL


def test_slimming_mask_round_to_masks_the_same_channels_as_removal():
    m = _model("densenet40")
    masked, masks, mres = prune_slimming_mask(m, 0.5, round_to=8)
    res = prune_slimming(m, 0.5, round_to=8)
    assert mres.keep == res.keep and mres.info["round_to"] == 8
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (masked.eval()(x) - res.model.eval()(x)).abs().max() <= TOL


@pytest.mark.parametrize("bad", [0, -8, 2.5, True])
def test_slimming_round_to_must_be_a_positive_integer(bad):
    with pytest.raises(PrunekitError, match="round_to"):
        prune_slimming(_model("vgg11"), 0.4, round_to=bad)
