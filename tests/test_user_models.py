"""The plain-torch mirrors of user models (tests/user_models.py): they build, run, keep their designed sizes,
trace with torch.fx where a graph pruner needs them to, and the two ViT attention implementations agree."""
from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn

from user_models import (
    UNSUPPORTED,
    USER_MODELS,
    MHABlock,
    VisionTransformer,
    calibrate_bn,
    channel_shuffle,
    stochastic_depth,
)

ALL_MODELS = {**USER_MODELS, **UNSUPPORTED}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_registries_are_disjoint_and_named():
    assert not set(USER_MODELS) & set(UNSUPPORTED)
    assert set(UNSUPPORTED) == {"fft_model", "data_dependent", "custom_op_module"}
    assert len(USER_MODELS) >= 16


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_builds_and_runs_in_eval(name):
    torch.manual_seed(0)
    model = ALL_MODELS[name]()
    assert isinstance(model, nn.Module)
    assert model.training  # factories return a fresh module, like a constructor
    model.eval()
    with torch.no_grad():
        out = model(_input())
    assert out.shape == (2, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # The logits depend on the input (not, e.g., only on a bias after activations decayed to zero).
    assert (out[0] - out[1]).abs().max() > 1e-4


# Exact parameter counts, by hand from the architectures (conv: k*k*cin/groups*cout [+cout bias];
# BN/LN/GN: 2*C; Linear: in*out + out).
EXPECTED_PARAMS = {
    # conv1 3*3*3*8+8 = 224, bn1 16; conv2 9*8*16+16 = 1168, bn2 32; conv3 9*16*16+16 = 2320, bn3 32;
    # fc1 (16*4*4)*32+32 = 8224; fc2 32*10+10 = 330  ->  12346
    "plain_cnn_flatten": 224 + 16 + 1168 + 32 + 2320 + 32 + 8224 + 330,
    # stem 7*7*3*16 = 2352 + bn 32
    # layer1 (16, 2 blocks, no downsample): 2 * (2*9*16*16 + 2*32) = 2 * 4672 = 9344
    # layer2 (32): block0 9*16*32 + 9*32*32 + 2*64 + ds 16*32 + 64 = 4608+9216+128+512+64 = 14528,
    #              block1 2*9216 + 128 = 18560  -> 33088
    # layer3 (64): block0 9*32*64 + 9*64*64 + 2*128 + ds 32*64 + 128 = 18432+36864+256+2048+128 = 57728,
    #              block1 2*36864 + 256 = 73984  -> 131712
    # fc 64*10+10 = 650  ->  177178
    "resnet_basic": 2352 + 32 + 9344 + 33088 + 131712 + 650,
    # stem 2352 + 32 = 2384
    # layer1 planes 8 -> width int(8*32/64)*4 = 16, out 32; groups 4 (4 ch/group):
    #   block0 conv1 16*16 + 32, conv2 9*(16/4)*16 = 576 + 32, conv3 16*32 + 64, ds 16*32 + 64 = 2048
    #   block1 conv1 32*16 + 32, conv2 576 + 32, conv3 512 + 64 = 1728              -> 3776
    # layer2 planes 16 -> width 32 (8 ch/group), out 64:
    #   block0 conv1 32*32 + 64, conv2 9*8*32 = 2304 + 64, conv3 32*64 + 128, ds 32*64 + 128 = 7808
    #   block1 conv1 64*32 + 64, conv2 2304 + 64, conv3 2048 + 128 = 6656           -> 14464
    # fc 650  ->  21274
    "resnext": 2384 + 3776 + 14464 + 650,
    # stem conv 9*3*16 = 432 + bn 32 = 464
    # t=1 16->8: dw 9*16 + 32, project 16*8 + 16 = 320
    # t=4 8->32->16 s2: expand 8*32 + 64, dw 9*32 + 64, project 32*16 + 32 = 1216
    # t=4 16->64->16 (residual): 16*64 + 128, 9*64 + 128, 64*16 + 32 = 2912
    # t=4 16->64->24 s2: 1024 + 128, 576 + 128, 64*24 + 48 = 3440
    # last conv 24*64 + 128 = 1664; classifier 64*10+10 = 650  ->  10666
    "mobilenet_v2": 464 + 320 + 1216 + 2912 + 3440 + 1664 + 650,
    # conv0 7*7*3*16 = 2352, norm0 32
    # block1 (growth 8, bn_size 2 -> 16 bottleneck), inputs 16, 24, 32:
    #   layer(c) = 2c + c*16 + 32 + 9*16*8 = 18c + 1184  -> 1472 + 1616 + 1760 = 4848  (40 channels out)
    # transition1 norm 80 + conv 40*20 = 880  (20 channels)
    # block2 inputs 20, 28: 1544 + 1688 = 3232  (36 channels out); norm5 72; classifier 36*10+10 = 370
    "densenet": 2352 + 32 + 4848 + 880 + 3232 + 72 + 370,
    # conv0 9*3*16+16 = 448
    # Fire(16,8,16,16): squeeze 16*8+8 = 136, e1x1 8*16+16 = 144, e3x3 9*8*16+16 = 1168 -> 1448
    # Fire(32,8,16,16): 32*8+8 = 264, 144, 1168 -> 1576
    # Fire(32,8,24,24): 264, 8*24+24 = 216, 9*8*24+24 = 1752 -> 2232
    # final conv 48*10+10 = 490  ->  6194
    "squeezenet": 448 + 1448 + 1576 + 2232 + 490,
    # patch conv 8*8*3*32+32 = 6176; cls_token 32; pos_embed 17*32 = 544
    # block: norm1 64; attention qkv/in_proj 32*96+96 = 3168, proj/out_proj 32*32+32 = 1056; norm2 64;
    #        mlp fc1 32*64+64 = 2112, fc2 64*32+32 = 2080  -> 8544; two blocks 17088
    # norm 64; head 32*10+10 = 330  ->  24234
    "vit_block": 6176 + 32 + 544 + 2 * 8544 + 64 + 330,
    "vit_functional": 6176 + 32 + 544 + 2 * 8544 + 64 + 330,
    # stem 9*3*16 + bn 32 = 464; chunk branch 9*8*8 + 16 = 592; down 9*16*24 + 48 = 3504;
    # split: conv_a 8*8 + 16 = 80, conv_b 9*16*16 + 32 = 2336; fc 24*10+10 = 250  ->  7226
    "split_concat": 464 + 592 + 3504 + 80 + 2336 + 250,
    # stem 9*3*16 + gn 32 = 464; block1 2*9*16*16 + 2*32 = 4672; down 9*16*32 + 64 = 4672;
    # block2 2*9*32*32 + 2*64 = 18560; fc 32*10+10 = 330  ->  28698
    "groupnorm_net": 464 + 4672 + 4672 + 18560 + 330,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_parameter_counts(name):
    assert n_params(USER_MODELS[name]()) == EXPECTED_PARAMS[name]


def test_structural_details_as_upstream():
    resnext = USER_MODELS["resnext"]()
    assert [m.groups for m in resnext.modules() if isinstance(m, nn.Conv2d) and m.groups > 1] == [4, 4, 4, 4]
    regnet = USER_MODELS["regnet"]()
    grouped = [m for m in regnet.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert {m.in_channels // m.groups for m in grouped} == {8}  # group width 8
    assert "trunk_output.block2.block2-1.f.se.fc1" in dict(regnet.named_modules())
    v2 = USER_MODELS["mobilenet_v2"]()
    dw = [m for m in v2.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dw and all(m.groups == m.in_channels == m.out_channels for m in dw)
    assert [b.use_res_connect for b in v2.features[1:-1]] == [False, False, True, False]
    v3 = USER_MODELS["mobilenet_v3"]()
    assert [b.use_res_connect for b in v3.features[1:-1]] == [False, False, True]
    assert any(isinstance(m, nn.Hardsigmoid) for m in v3.modules())
    convnext = USER_MODELS["convnext"]()
    assert convnext.features[1][0].layer_scale.shape == (16, 1, 1)
    assert torch.allclose(convnext.features[1][0].layer_scale, torch.full((16, 1, 1), 1e-6))
    dense = USER_MODELS["densenet"]()
    assert dense.classifier.in_features == 36


@pytest.mark.parametrize("name", sorted(USER_MODELS))
def test_supported_models_trace_with_fx(name):
    """Every supported mirror is symbolically traceable and the traced graph reproduces eager outputs."""
    torch.manual_seed(0)
    model = USER_MODELS[name]().eval()
    gm = torch.fx.symbolic_trace(model)
    x = _input(1)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_stochastic_depth_is_an_fx_leaf_and_identity_in_eval():
    # torch.fx.wrap("stochastic_depth") as in torchvision: one opaque call_function node per use.
    for name, uses in (("efficientnet", 1), ("convnext", 4)):
        gm = torch.fx.symbolic_trace(USER_MODELS[name]().eval())
        nodes = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is stochastic_depth]
        assert len(nodes) == uses, name
    x = torch.randn(4, 3, 2, 2)
    assert stochastic_depth(x, 0.5, "row", training=False) is x
    torch.manual_seed(0)
    y = stochastic_depth(torch.ones(64, 3, 2, 2), 0.5, "row", training=True)
    per_row = y.flatten(1)
    assert set(per_row.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(per_row.min(1).values, per_row.max(1).values)  # whole rows dropped or kept


def test_channel_shuffle_matches_index_permutation():
    x = torch.randn(2, 12, 3, 3)
    # groups=2: output channel j takes input channel (j % 2) * 6 + j // 2
    index = torch.tensor([(j % 2) * 6 + j // 2 for j in range(12)])
    assert torch.equal(channel_shuffle(x, 2), x[:, index])


def _copy_mha_into_functional(mha_vit: VisionTransformer, fn_vit: VisionTransformer) -> None:
    sd = mha_vit.state_dict()
    out = {}
    for key, value in sd.items():
        key = (key.replace("attn.in_proj_weight", "attn.qkv.weight").replace("attn.in_proj_bias", "attn.qkv.bias")
               .replace("attn.out_proj.", "attn.proj."))
        out[key] = value
    fn_vit.load_state_dict(out, strict=True)


def test_functional_vit_matches_multihead_attention_vit():
    torch.manual_seed(0)
    mha_vit = USER_MODELS["vit_block"]().eval()
    fn_vit = USER_MODELS["vit_functional"]().eval()
    assert isinstance(mha_vit.blocks[0], MHABlock)
    _copy_mha_into_functional(mha_vit, fn_vit)
    x = _input(2)
    with torch.no_grad():
        ref = mha_vit(x)
        got = fn_vit(x)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (got - ref).abs().max()
    # Also with autograd on (nn.MultiheadAttention then takes its slow, non-fused path).
    assert torch.allclose(fn_vit(x), mha_vit(x), atol=1e-5, rtol=1e-5)
    # And not trivially: different weights give different outputs.
    with torch.no_grad():
        fn_vit.blocks[0].attn.qkv.weight.add_(0.1 * torch.randn_like(fn_vit.blocks[0].attn.qkv.weight))
        assert not torch.allclose(fn_vit(x), ref, atol=1e-4)


def test_calibrate_bn_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    a = USER_MODELS["efficientnet"]()
    state = torch.get_rng_state()
    calibrate_bn(a)
    assert torch.equal(torch.get_rng_state(), state)
    b = calibrate_bn(a)  # same data -> same statistics
    assert b is a and a.training
    bn = a.features[0][1]
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_data_dependent_model_defeats_fx_tracing():
    model = UNSUPPORTED["data_dependent"]().eval()
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model)


def test_fft_model_has_complex_intermediate():
    gm = torch.fx.symbolic_trace(UNSUPPORTED["fft_model"]().eval())
    assert any(n.op == "call_function" and n.target is torch.fft.rfft2 for n in gm.graph.nodes)


def test_custom_op_module_is_a_straight_through_custom_function():
    model = UNSUPPORTED["custom_op_module"]()
    binarize = model.binarize
    assert not type(binarize).__module__.startswith("torch")
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = binarize(x)
    assert torch.equal(y, torch.sign(x - x.mean(dim=1, keepdim=True)))
    assert type(y.grad_fn).__name__ == "_CenteredSignSTEBackward"  # recorded as the custom Function
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through (torch.sign's own grad is zero)
