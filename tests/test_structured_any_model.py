"""Structured pruning of the models users bring: plain-torch mirrors of torchvision/timm structures (ResNeXt,
MobileNetV2/V3, EfficientNet, DenseNet, GoogLeNet, RegNet, ConvNeXt, SqueezeNet, ViT, ShuffleNetV2 ...).

Each prunes, is exact against the unpruned model whose consumers ignore the removed channels (relative 1e-5),
saves (factory + plan + safetensors) and reloads bit-exactly; un-placeable constructs give one clear error naming
the op, the module and the source line; the extension API makes them work.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit import load_model, save_model
from prunekit.errors import CheckpointError, PrunekitError
from prunekit.factory import mark
from prunekit.metrics import count_flops, count_params
from prunekit.pruning.structured import (ELEMENTWISE, OPAQUE_RULE, apply_plan, build_graph, prune_structured,
                                         register_function_rule, register_module_rule)
from prunekit.pruning.structured.rules import FUNCTION_RULES, MODULE_RULES, MODULE_SLICERS, single_op
from prunekit.pruning.structured.verify import output_difference
from user_models import UNSUPPORTED, USER_MODELS

SIZE = (3, 32, 32)
REL = 1e-5


def _user(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = USER_MODELS[name]().eval()
    with torch.no_grad():  # ConvNeXt's layer scale starts at 1e-6: make its blocks matter to the output
        for n, p in model.named_parameters():
            if "layer_scale" in n:
                p.fill_(1.0)
    return mark(model, f"user_models:{USER_MODELS[name].__name__}", {}, SIZE)


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, *SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(USER_MODELS))
def test_user_model_prunes_exactly_and_reloads_without_unpickling(name, tmp_path):
    model = _user(name)
    res = prune_structured(model, input_size=SIZE, ratio=0.3)
    assert count_params(res.model) < count_params(model)
    assert res.info["rel_diff"] <= REL
    # independent of the internal check: a fresh batch, the reference built from the plan alone
    from prunekit.pruning.structured.verify import zeroed_reference

    diff, rel = output_difference(zeroed_reference(model, res.step_plan), res.model, (_x(3),))
    assert rel <= REL
    # removal is not a no-op: the pruned model differs from the unpruned one
    _, rel_vs_dense = output_difference(model, res.model, (_x(3),))
    assert rel_vs_dense > 1e-4
    save_model(res.model, tmp_path)
    back = load_model(tmp_path, factory=f"user_models:{USER_MODELS[name].__name__}").eval()
    with torch.no_grad():
        assert torch.equal(back(_x()), res.model.eval()(_x()))
    assert count_params(back) == count_params(res.model)


def test_a_checkpoint_never_makes_prunekit_import_the_factory_it_names(tmp_path):
    res = prune_structured(_user("resnext"), input_size=SIZE, ratio=0.3)
    save_model(res.model, tmp_path)
    with pytest.raises(CheckpointError, match="never imports or calls code named by a file.*--trust-factory"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="never imports"):
        load_model(tmp_path, factory="user_models:MobileNetV2")  # another target is not an allow-list entry
    # a callable builds it without any import by name
    from user_models import resnext

    assert count_params(load_model(tmp_path, factory=resnext)) == count_params(res.model)


def test_grouped_convs_lose_the_same_positions_in_every_group():
    res = prune_structured(_user("resnext"), input_size=SIZE, ratio=0.5)
    for n, m in res.model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0, n
            assert m.groups == 4  # ResNeXt keeps its cardinality
    assert res.info["rel_diff"] <= REL


def test_depthwise_convs_lose_whole_groups_with_their_producer():
    model = _user("mobilenet_v2")
    res = prune_structured(model, input_size=SIZE, ratio=0.5)
    dws = [(n, m) for n, m in res.model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dws and all(m.groups == m.in_channels == m.out_channels for _, m in dws)
    assert any(m.groups < dict(model.named_modules())[n].groups for n, m in dws)


def test_se_gates_and_residual_adds_are_coupled():
    model = _user("mobilenet_v3")
    graph = build_graph(model, (_x(1),))
    # every squeeze-excitation expand conv is in the group of the channels it gates
    gates = [n for n, m in model.named_modules() if n.endswith("fc2")]
    assert gates
    for g in gates:
        grp = next(x for x in graph.groups if g in x.producers)
        assert len(grp.producers) >= 2, (g, grp.producers)  # the gated conv and the gate's conv


def test_flatten_into_linear_expands_channels_by_spatial_positions():
    model = _user("plain_cnn_flatten")
    res = prune_structured(model, input_size=SIZE, ratio=0.5)
    conv_out = [m for m in res.model.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    fc = [m for m in res.model.modules() if isinstance(m, nn.Linear)][0]
    assert fc.in_features == conv_out * 16  # 4x4 spatial positions per channel
    assert res.info["rel_diff"] <= REL


def test_channels_last_layernorm_keeps_the_convnext_trunk_and_prunes_the_mlp():
    model = _user("convnext")
    res = prune_structured(model, input_size=SIZE, ratio=0.5)
    for n, m in res.model.named_modules():
        if isinstance(m, nn.LayerNorm):
            assert m.normalized_shape == dict(model.named_modules())[n].normalized_shape  # trunk unchanged
    hidden = [m for n, m in res.model.named_modules() if isinstance(m, nn.Linear) and m.out_features > 100]
    dense_hidden = [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features > 100]
    assert sum(m.out_features for m in hidden) < sum(m.out_features for m in dense_hidden)
    assert res.info["rel_diff"] <= REL


def test_timm_style_vit_prunes_heads_with_the_hidden_width_its_reshape_needs():
    # timm's Attention ends with reshape(B, N, C), C the input width: heads can only go with the hidden width
    model = _user("vit_functional")  # 4 heads of 8, width 32
    res = prune_structured(model, input_size=SIZE, ratio=0.3)  # floor(4 * 0.7) = 2 heads: 16 wide, not 22
    assert res.info["hidden_follows_heads"] == "blocks.0.attn"
    for blk, dense in zip(res.model.blocks, model.blocks):
        assert blk.attn.num_heads == dense.attn.num_heads // 2  # the attribute its reshape reads
        assert blk.attn.qkv.out_features == 3 * blk.attn.num_heads * blk.attn.head_dim
        assert blk.attn.proj.out_features == blk.attn.num_heads * blk.attn.head_dim == blk.norm1.normalized_shape[0]
    assert res.info["rel_diff"] <= REL
    whole = prune_structured(model, input_size=SIZE, ratio=0.3, kinds=("heads", "channels"))
    assert "kept_whole" in whole.info  # without the hidden width the heads cannot go: kept, with a warning
    assert all(b.attn.num_heads == d.attn.num_heads for b, d in zip(whole.model.blocks, model.blocks))


def test_global_ranking_and_budgets():
    model = _user("resnet_basic")
    dense_macs = count_flops(model, (1, *SIZE), convention="macs").macs
    glob = prune_structured(model, input_size=SIZE, ratio=0.4, global_ranking=True)
    sizes = [r["kept"] / r["total"] for r in glob.rows if r["total"] > 1]
    assert len(set(round(s, 3) for s in sizes)) > 1  # not uniform
    units = sum(r["total"] for r in glob.rows)
    assert sum(r["pruned"] for r in glob.rows) == round(0.4 * units)
    for target in (0.5, 0.3):
        res = prune_structured(model, input_size=SIZE, target_macs=target)
        real = count_flops(res.model, (1, *SIZE), convention="macs").macs / dense_macs
        assert real <= target + 1e-9 and real > target - 0.05, real
        assert res.info["rel_diff"] <= REL
    res = prune_structured(model, input_size=SIZE, target_params=0.5)
    real = count_params(res.model) / count_params(model)
    assert real <= 0.5 + 1e-9 and real > 0.45, real  # the analytic params model is exact


def test_round_to_keeps_multiples():
    model = _user("resnet_basic")
    res = prune_structured(model, input_size=SIZE, ratio=0.3, round_to=8)
    for r in res.rows:
        if r["total"] >= 8:
            assert r["kept"] % 8 == 0, r
    g = prune_structured(model, input_size=SIZE, ratio=0.3, global_ranking=True, round_to=8)
    assert all(r["kept"] % 8 == 0 for r in g.rows if r["total"] >= 8)


def test_ignore_keeps_the_matching_modules_whole():
    model = _user("resnet_basic")
    res = prune_structured(model, input_size=SIZE, ratio=0.5, ignore=[r"^layer3"])
    for n, m in res.model.named_modules():
        if n.startswith("layer3") and isinstance(m, nn.Conv2d):
            dense = dict(model.named_modules())[n]
            assert (m.in_channels, m.out_channels) == (dense.in_channels, dense.out_channels), n
    assert count_params(res.model) < count_params(model)
    with pytest.raises(PrunekitError, match="matches no module"):
        prune_structured(model, input_size=SIZE, ratio=0.5, ignore=["^nothing_here$"])


@pytest.mark.parametrize("criterion", ["l2", "bn", "random", "taylor"])
def test_every_criterion_prunes_exactly(criterion):
    model = _user("resnet_basic")
    data = [(_x(4), torch.tensor([0, 1, 2, 3]))] if criterion == "taylor" else None
    res = prune_structured(model, input_size=SIZE, ratio=0.3, criterion=criterion, data=data)
    assert res.info["rel_diff"] <= REL
    assert all(p.grad is None for p in model.parameters())  # taylor leaves no gradients behind


def test_l1_keeps_the_filters_with_the_largest_norms():
    model = _user("resnet_basic")
    graph = build_graph(model, (_x(1),))
    g = next(x for x in graph.groups if x.simple)
    res = prune_structured(model, input_size=SIZE, ratio=0.5)
    norms = dict(model.named_modules())[g.conv].weight.detach().abs().sum((1, 2, 3))
    kept = res.keep[g.name]
    dropped = [i for i in range(g.size) if i not in kept]
    assert len(kept) == math.floor(g.size * 0.5)
    assert norms[kept].min() >= norms[dropped].max()


def test_unsupported_ops_name_the_op_the_module_and_the_source_line():
    with pytest.raises(PrunekitError) as e:
        prune_structured(UNSUPPORTED["fft_model"]().eval(), input_size=SIZE, ratio=0.3)
    msg = str(e.value)
    assert "torch.fft.rfft2" in msg and "user_models.py:" in msg and "register_function_rule" in msg
    assert "\n" not in msg
    with pytest.raises(PrunekitError) as e:
        prune_structured(UNSUPPORTED["data_dependent"]().eval(), input_size=SIZE, ratio=0.3)
    assert "control flow" in str(e.value) and "user_models.py:" in str(e.value)


class _Spectral(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(x, norm="ortho").abs()


class _NetWithSpectral(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.spectral = _Spectral()
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.spectral(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.conv3(F.relu(self.bn2(self.conv2(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_ignore_is_the_escape_hatch_the_error_offers():
    torch.manual_seed(0)
    model = _NetWithSpectral().eval()
    with pytest.raises(PrunekitError, match=r"module 'spectral'.*--ignore '\^spectral\$'"):
        prune_structured(model, input_size=SIZE, ratio=0.5)
    res = prune_structured(model, input_size=SIZE, ratio=0.5, ignore=["^spectral$"])
    assert res.model.conv1.out_channels == 16  # feeds the ignored module: kept whole
    assert res.model.conv2.out_channels == 16 and res.model.conv3.out_channels == 16
    assert res.info["rel_diff"] <= REL


def test_register_module_rule_makes_a_custom_layer_prunable():
    class ChannelScale(nn.Module):  # a per-channel scale whose forward fx cannot trace
        def __init__(self, c: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.linspace(0.5, 1.5, c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] != self.scale.numel():
                raise ValueError("width mismatch")
            return x * self.scale.view(1, -1, 1, 1)

    def rule(ctx):
        c = ctx.ch(0)
        ctx.site("custom", ctx.name, c.labels)
        return c

    def slicer(m: nn.Module, kept: list, full: int) -> None:
        if m.scale.numel() == full:
            m.scale = nn.Parameter(m.scale.data[kept].clone())

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.scale, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), ChannelScale(16), nn.Conv2d(16, 8, 1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.conv2(F.relu(self.scale(self.conv1(x)))).mean((2, 3)))

    torch.manual_seed(0)
    model = Net().eval()
    # without a rule the run is followed inside the layer: its parameter is sliced along the channels it scales
    followed = prune_structured(model, input_size=SIZE, ratio=0.5)
    assert followed.model.scale.scale.numel() == followed.model.conv1.out_channels == 8
    assert "scale.scale@0" in followed.plan["params"] and followed.info["rel_diff"] <= REL
    register_module_rule(ChannelScale, rule, slicer=slicer)
    try:
        res = prune_structured(model, input_size=SIZE, ratio=0.5)
        assert res.model.scale.scale.numel() == res.model.conv1.out_channels == 8
        assert res.info["rel_diff"] <= REL
        fresh = Net()
        apply_plan(fresh, res.plan)  # the plan replays onto a freshly built model through the slicer
        assert fresh.scale.scale.numel() == 8
    finally:
        MODULE_RULES.pop(ChannelScale, None)
        MODULE_SLICERS.pop(ChannelScale, None)


def my_act(x: torch.Tensor) -> torch.Tensor:
    """A user function unknown to prunekit's rules: the run follows the torch ops inside it."""
    return x * torch.sigmoid(x)


@single_op
def my_opaque_act(x: torch.Tensor) -> torch.Tensor:
    """The same function made one op of the run, so that a registered rule decides its channels."""
    return x * torch.sigmoid(x)


def test_python_functions_are_followed_and_single_ops_take_their_registered_rule():
    class Net(nn.Module):
        def __init__(self, act) -> None:
            super().__init__()
            self.act = act
            self.conv1, self.conv2, self.fc = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 8, 3), nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.conv2(self.act(self.conv1(x))).mean((2, 3)))

    res = prune_structured(Net(my_act).eval(), input_size=SIZE, ratio=0.5)
    assert res.model.conv1.out_channels == 8 and res.info["rel_diff"] <= REL
    model = Net(my_opaque_act).eval()
    with pytest.raises(PrunekitError, match="my_opaque_act.*register_function_rule"):
        prune_structured(model, input_size=SIZE, ratio=0.5)
    register_function_rule(my_opaque_act, OPAQUE_RULE)  # the conservative choice: its channels stay whole
    try:
        res = prune_structured(model, input_size=SIZE, ratio=0.5)
        assert res.model.conv1.out_channels == 16 and res.model.conv2.out_channels == 4
    finally:
        FUNCTION_RULES.pop(my_opaque_act, None)
    register_function_rule(my_opaque_act, ELEMENTWISE)
    try:
        res = prune_structured(model, input_size=SIZE, ratio=0.5)
        assert res.model.conv1.out_channels == 8 and res.info["rel_diff"] <= REL
    finally:
        FUNCTION_RULES.pop(my_opaque_act, None)


def test_a_prune_of_a_group_too_small_to_prune_is_a_clear_error():
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3)

        def forward(self, x):
            return self.conv(x)  # every channel is a model output: nothing can be removed

    with pytest.raises(PrunekitError, match="no channel group that can be pruned"):
        prune_structured(Tiny(), input_size=SIZE, ratio=0.5)
    with pytest.raises(PrunekitError, match="exactly one of"):
        prune_structured(Tiny(), input_size=SIZE)
    with pytest.raises(PrunekitError, match="ratio must be a finite number"):
        prune_structured(Tiny(), input_size=SIZE, ratio=float("nan"))
    with pytest.raises(PrunekitError, match=r"ratio must be in \[0.0, 1.0\)"):
        prune_structured(Tiny(), input_size=SIZE, ratio=1.0)


def test_a_ratio_that_would_empty_a_group_keeps_its_strongest_channel_or_fails_strictly():
    from prunekit.errors import EmptyLayerError

    model = _user("resnet_basic")
    with pytest.warns(UserWarning, match="kept one channel instead of none"):
        res = prune_structured(model, input_size=SIZE, ratio=0.99)
    assert all(r["kept"] >= 1 for r in res.rows)
    assert res.info["rel_diff"] <= REL
    with pytest.raises(EmptyLayerError, match="would remove every channel of layer"):
        prune_structured(model, input_size=SIZE, ratio=0.99, strict_empty=True)


class _LayerNorm2d(nn.LayerNorm):  # torchvision/timm style: permutes to channels-last in its own forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def test_a_subclass_that_overrides_forward_is_traced_not_given_its_base_class_rule():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), _LayerNorm2d(16), nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    res = prune_structured(model, input_size=(3, 16, 16), ratio=0.5)
    assert res.model[0].out_channels == 16 and res.model[1].normalized_shape == (16,)  # feeds a LayerNorm
    assert res.model[2].out_channels == 8 and res.info["rel_diff"] <= REL


def test_a_wrong_input_size_is_named_instead_of_a_torch_traceback():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with pytest.raises(PrunekitError, match=r"first layer 0 \(Conv2d\) 1 input channels; it takes 3"):
        prune_structured(model, input_size=(1, 16, 16), ratio=0.5)
    with pytest.raises(PrunekitError, match="input"):
        prune_structured(model, input_size=(3, 2, 2), ratio=0.5)  # smaller than the first 3x3 kernel
