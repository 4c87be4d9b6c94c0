"""Channel plans: named L1-filter plans give the published widths/params; plans survive JSON and rebuild models."""
from __future__ import annotations

import json

import pytest
import torch

from prunekit.errors import CheckpointError, PrunekitError, UnknownNameError
from prunekit.metrics import count_params
from prunekit.models import create_model
from prunekit.pruning.structured import apply_plan, plan_from_json, plan_to_json, prune_l1_filter
from prunekit.pruning.structured.l1_filter import keep_count, top_filters
from prunekit.pruning.structured.plan import compose_plans


def _resnet_cfg(n: int, widths: tuple[int, int, int], kept_ids: tuple[int, ...]) -> list[int]:
    """Block first-conv widths by hand: conv id of block b (0-based over all blocks) is 2 + 2b."""
    full = (16, 32, 64)
    return [full[b // n] if 2 + 2 * b in kept_ids else widths[b // n] for b in range(3 * n)]


@pytest.mark.parametrize("plan,model,n,widths,kept_ids", [
    ("resnet56-A", "resnet56", 9, (14, 28, 57), (16, 20, 38, 54)),
    ("resnet56-B", "resnet56", 9, (6, 22, 57), (16, 18, 20, 34, 38, 54)),
    ("resnet110-A", "resnet110", 18, (8, 32, 64), (36,)),
    ("resnet110-B", "resnet110", 18, (8, 19, 44), (36, 38, 74)),
])
def test_named_resnet_plans_give_table_widths(plan, model, n, widths, kept_ids):
    m = create_model(model)
    res = prune_l1_filter(m, plan=plan)
    expected = _resnet_cfg(n, widths, kept_ids)
    assert res.model.prunekit_cfg == expected
    assert count_params(res.model) == count_params(create_model(model, cfg=expected))


def test_resnet56_a_has_773336_params():
    res = prune_l1_filter(create_model("resnet56"), plan="resnet56-A")
    assert count_params(res.model) == 773_336


def test_vgg16_a_cfg_and_params():
    res = prune_l1_filter(create_model("vgg16_l1"), plan="vgg16-A")
    assert res.model.prunekit_cfg == [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M",
                                      256, 256, 256]
    assert count_params(res.model) == 5_397_034


def test_named_plan_on_wrong_model_and_unknown_plan_are_user_errors():
    with pytest.raises(PrunekitError, match="resnet56-A.*resnet56, not resnet110"):
        prune_l1_filter(create_model("resnet110"), plan="resnet56-A")
    with pytest.raises(UnknownNameError, match="resnet56-C"):
        prune_l1_filter(create_model("resnet20"), plan="resnet56-C")


def test_keep_count_is_floor_robust_to_binary_rounding():
    assert keep_count(10, 0.9) == 1  # 10*(1-0.9) = 0.9999999999999998 in floats
    assert keep_count(64, 0.1) == 57
    assert keep_count(32, 0.4) == 19
    assert keep_count(16, 0.6) == 6


def test_top_filters_breaks_ties_by_lower_index():
    norms = torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    assert top_filters(norms, 3) == [1, 2, 3]
    assert top_filters(norms, 2) == [1, 3]


def test_plan_json_round_trip_rebuilds_pruned_shapes_from_a_fresh_model():
    m = create_model("resnet20")
    res = prune_l1_filter(m, ratios=[0.5, 0.25, 0.75], skip=["layer2.1"])
    text = plan_to_json(res.plan)
    back = plan_from_json(text)
    assert back == json.loads(json.dumps(res.plan))
    fresh = apply_plan(create_model("resnet20"), back)
    ref = create_model("resnet20", cfg=res.model.prunekit_cfg)
    assert {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert fresh.prunekit_cfg == res.model.prunekit_cfg == [8] * 3 + [24, 32, 24] + [16] * 3
    # idempotent: applying to a model already built from the pruned cfg changes nothing
    again = apply_plan(create_model("resnet20", cfg=res.model.prunekit_cfg), back)
    assert {k: tuple(v.shape) for k, v in again.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_apply_plan_slices_weights_of_the_kept_channels():
    m = create_model("resnet20")
    res = prune_l1_filter(m, ratios=[0.5])
    kept = res.plan["modules"]["layer1.0.conv1"]["out"]
    sliced = apply_plan(create_model("resnet20"), res.plan)  # fresh weights: only shapes matter here
    assert sliced.layer1[0].conv1.weight.shape == (8, 16, 3, 3)
    assert torch.equal(res.model.layer1[0].conv1.weight, m.layer1[0].conv1.weight[kept])
    assert torch.equal(res.model.layer1[0].conv2.weight, m.layer1[0].conv2.weight[:, kept])
    assert torch.equal(res.model.layer1[0].bn1.running_var, m.layer1[0].bn1.running_var[kept])


def test_malformed_plans_are_checkpoint_errors_naming_the_module():
    res = prune_l1_filter(create_model("resnet20"), ratios=[0.5])
    bad = json.loads(json.dumps(res.plan))
    bad["modules"]["layer1.0.conv1"]["out"] = [0, 99]
    with pytest.raises(CheckpointError, match="layer1.0.conv1.out"):
        plan_from_json(json.dumps(bad))
    bad = json.loads(json.dumps(res.plan))
    bad["modules"]["layer9.conv"] = bad["modules"].pop("layer1.0.conv1")
    with pytest.raises(CheckpointError, match="layer9.conv"):
        apply_plan(create_model("resnet20"), bad)
    with pytest.raises(CheckpointError, match="width"):
        apply_plan(create_model("resnet20", cfg=[4] * 9), res.plan)
    with pytest.raises(CheckpointError, match="not a channel plan"):
        plan_from_json('{"format": "other"}')


def test_composed_plan_of_two_rounds_rebuilds_the_second_round_model():
    torch.manual_seed(0)
    m = create_model("resnet20")
    r1 = prune_l1_filter(m, ratios=[0.25])
    r2 = prune_l1_filter(r1.model, ratios=[0.5])
    assert r2.plan["base_cfg"] == [16] * 3 + [32] * 3 + [64] * 3
    assert r2.plan == r2.model.prunekit_plan
    step2 = {**r2.plan, "modules": {}, "groups": {}}
    assert compose_plans(r1.plan, step2)["modules"] == r1.plan["modules"]
    rebuilt = apply_plan(create_model("resnet20"), r2.plan)
    rebuilt.load_state_dict(r2.model.state_dict())
    direct = apply_plan(m, json.loads(json.dumps(r2.plan)))  # slicing the original weights directly
    for k, v in r2.model.state_dict().items():
        assert torch.equal(direct.state_dict()[k], v), k
    assert r2.model.layer1[0].conv1.out_channels == 6  # floor(floor(16*0.75)*0.5)
