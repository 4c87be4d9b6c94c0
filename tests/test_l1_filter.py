"""L1-norm filter pruning: removal is exact on every supported arch, iterative rounds, checkpoints, training."""
from __future__ import annotations

import pytest
import torch

from prunekit import load_model, save_model
from prunekit.errors import EmptyLayerError, PrunekitError
from prunekit.metrics import count_params
from prunekit.models import create_model
from prunekit.pruning.structured import iterative_round, prune_iterative, prune_l1_filter
from prunekit.pruning.structured.verify import randomize_bn, removal_error, zeroed_reference

TOL = 1e-5


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(create_model(name), seed).eval()


def _roundtrip_equal(model: torch.nn.Module, tmp_path, size=(3, 8, 8)) -> None:
    save_model(model, tmp_path)
    back = load_model(tmp_path).eval()
    assert back.prunekit_cfg == model.prunekit_cfg
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert torch.equal(back(x), model.eval()(x))


@pytest.mark.parametrize("name,kwargs,size", [
    ("vgg16_l1", {"plan": "vgg16-A"}, (3, 16, 16)),
    ("resnet56", {"plan": "resnet56-B"}, (3, 16, 16)),
    ("resnet110", {"plan": "resnet110-B"}, (3, 8, 8)),
    ("preresnet110", {"ratios": [0.3, 0.5, 0.6], "skip": ["layer1.17"]}, (3, 8, 8)),
    ("wrn_16_8", {"ratios": [0.5]}, (3, 8, 8)),
])
def test_pruned_model_equals_original_with_removed_channels_zeroed(name, kwargs, size, tmp_path):
    m = _model(name)
    res = prune_l1_filter(m, **kwargs)
    assert count_params(res.model) < count_params(m)
    assert removal_error(m, res, size) <= TOL
    # the reference really differs from the unpruned model (removal is not a no-op)
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert (m(x) - res.model.eval()(x)).abs().max() > 1e-3
    _roundtrip_equal(res.model, tmp_path, size)


def test_resnet56_a_exact_and_keeps_the_largest_filters():
    m = _model("resnet56", seed=1)
    res = prune_l1_filter(m, plan="resnet56-A")
    assert removal_error(m, res, (3, 8, 8)) <= TOL
    norms = m.layer3[1].conv1.weight.abs().sum((1, 2, 3))
    kept = res.keep["layer3.1.conv1"]
    assert len(kept) == 57
    assert norms[kept].min() >= norms[[i for i in range(64) if i not in kept]].max()


def test_iterative_resnet56_five_rounds_match_the_seed_param_counts():
    results = prune_iterative(create_model("resnet56"), 5)
    params = [count_params(r.model) for r in results]
    assert [round(p / 1e6, 2) for p in params] == [0.65, 0.51, 0.42, 0.34, 0.28]
    assert params == [654_450, 513_598, 417_760, 340_398, 283_816]
    cfg = results[-1].model.prunekit_cfg
    for block in (7, 9, 18, 26):  # layer1.7, layer2.0, layer3.0, layer3.8 stay whole
        assert cfg[block] == (16, 32, 64)[block // 9]
    # p of the *remaining* filters each round: 16→14→12→10→9→8, 32→25→20→16→12→9, 64→44→30→21→14→9
    assert (cfg[0], cfg[10], cfg[19]) == (8, 9, 9)
    assert [r.model.prunekit_cfg[10] for r in results] == [25, 20, 16, 12, 9]


def test_iterative_rounds_compose_exactly_onto_the_original_model(tmp_path):
    m = _model("resnet56", seed=2)
    r1 = iterative_round(m)
    r2 = iterative_round(r1.model)
    # round 2 relative to round 1, and the cumulative plan relative to the original: both exact
    assert removal_error(r1.model, r2, (3, 8, 8)) <= TOL
    ref = zeroed_reference(m, r2.plan).eval()  # the composed plan, relative to the original model
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (ref(x) - r2.model.eval()(x)).abs().max() <= TOL
    assert r2.model.prunekit_plan["base_cfg"] == create_model("resnet56").prunekit_cfg
    _roundtrip_equal(r2.model, tmp_path)


@pytest.mark.parametrize("name", ["resnet110", "preresnet110", "wrn_28_10", "vgg16_l1"])
def test_iterative_defaults_exist_for_the_seed_models(name):
    from prunekit.pruning.structured.l1_filter import iterative_defaults

    torch.manual_seed(0)
    if name == "wrn_28_10":  # 36M params: run its schedule on the same family at width 1 (a family-class model)
        from prunekit.models.wrn import wide_resnet

        spec, skip = iterative_defaults(name)
        res = iterative_round(wide_resnet(28, 1), ratios=spec.stage_ratios, skip=skip)
    else:
        res = iterative_round(create_model(name))
    cfg = res.model.prunekit_cfg
    if name == "vgg16_l1":
        assert cfg == [48, 64, "M", 128, 128, "M", 256, 256, 256, "M", 384, 384, 384, "M", 384, 384, 384]
    elif name == "wrn_28_10":
        assert cfg == [14] * 4 + [25] * 4 + [44] * 4  # no sensitive blocks for WRN
    else:
        assert cfg[17] == 16 and cfg[18] == 32 and cfg[36] == 64  # layer1.17, layer2.0, layer3.0 kept
        assert cfg[0] == 14 and cfg[19] == 25 and cfg[37] == 44


def test_user_plan_errors_name_the_bad_value():
    m = create_model("resnet20")
    with pytest.raises(PrunekitError, match="layer4.0"):
        prune_l1_filter(m, ratios=[0.5], skip=["layer4.0"])
    with pytest.raises(PrunekitError, match="1 or 3 values"):
        prune_l1_filter(m, ratios=[0.5, 0.5])
    with pytest.raises(PrunekitError, match="ratio must be in"):
        prune_l1_filter(m, ratios=[1.0])
    with pytest.raises(PrunekitError, match="no iterative"):
        iterative_round(m)
    with pytest.raises(PrunekitError, match="densenet40 has no conv whose filters can be removed on their own"):
        prune_l1_filter(create_model("densenet40"), ratios=[0.5])  # every channel feeds a ChannelSelection


def test_l1_never_empties_a_layer_unless_strict():
    m = _model("resnet20")
    with pytest.warns(UserWarning, match="layer1.0.conv1"):
        res = prune_l1_filter(m, ratios=[0.99, 0.0, 0.0])
    assert res.model.prunekit_cfg[:3] == [1, 1, 1]
    strongest = int(m.layer1[0].conv1.weight.abs().sum((1, 2, 3)).argmax())
    assert res.keep["layer1.0.conv1"] == [strongest]
    with pytest.raises(EmptyLayerError, match="layer1.0.conv1"):
        prune_l1_filter(m, ratios=[0.99, 0.0, 0.0], strict_empty=True)


def test_a_training_step_runs_on_the_pruned_model():
    m = _model("resnet20")
    pruned = prune_l1_filter(m, ratios=[0.5]).model.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    before = pruned.layer1[0].conv1.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(pruned(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert pruned.layer1[0].conv1.weight.grad.shape == (8, 16, 3, 3)
    assert not torch.equal(before, pruned.layer1[0].conv1.weight)
