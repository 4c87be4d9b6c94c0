"""The seeds' own models (docs/SEED_MODELS.md): exact parameter counts derived by hand from each architecture,
structure and state_dict names as in the seeds, LeNet's ReLUs, and the model-options mechanism (WRN dropout)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.checkpoint import build_from_meta, load_checkpoint, model_meta, save_model
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.models import create_model, list_models, model_info, model_options


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def meta_model(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


# ------------------------------------------------------------------------------ parameter-count arithmetic
def conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    """A k x k convolution: k*k*cin*cout weights (+ cout biases)."""
    return k * k * cin * cout + (cout if bias else 0)


def dwconv(c: int, k: int) -> int:
    """A depthwise k x k convolution (groups = c), no bias."""
    return k * k * c


def bn(c: int) -> int:
    """BatchNorm: gamma and beta."""
    return 2 * c


def fc(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def mcts_resnet_params(n: int, classes: int = 10) -> int:
    """MCTS ResNet, n basic blocks per stage, widths 16/32/64, 1x1-conv shortcuts (no BN) in the first block of
    stages 2 and 3."""
    stem = conv(3, 16, 3) + bn(16)
    stage1 = n * (2 * conv(16, 16, 3) + 2 * bn(16))
    stage2 = (conv(16, 32, 3) + conv(32, 32, 3) + 2 * bn(32) + conv(16, 32, 1)
              + (n - 1) * (2 * conv(32, 32, 3) + 2 * bn(32)))
    stage3 = (conv(32, 64, 3) + conv(64, 64, 3) + 2 * bn(64) + conv(32, 64, 1)
              + (n - 1) * (2 * conv(64, 64, 3) + 2 * bn(64)))
    return stem + stage1 + stage2 + stage3 + fc(64, classes)


def kuangliu_resnet_params(bottleneck: bool, blocks: tuple[int, ...], classes: int = 10) -> int:
    """GPMT/kuangliu CIFAR ResNet: 3x3 stem 3->64, stages 64/128/256/512 (strides 1/2/2/2), shortcut 1x1 conv + BN
    where the shape changes, Linear(512*expansion, C)."""
    exp = 4 if bottleneck else 1
    total = conv(3, 64, 3) + bn(64)
    cin = 64
    for s, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for i in range(n):
            stride = 2 if (s > 0 and i == 0) else 1
            if bottleneck:
                total += conv(cin, planes, 1) + bn(planes) + conv(planes, planes, 3) + bn(planes) \
                    + conv(planes, 4 * planes, 1) + bn(4 * planes)
            else:
                total += conv(cin, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            if stride != 1 or cin != planes * exp:
                total += conv(cin, planes * exp, 1) + bn(planes * exp)
            cin = planes * exp
    return total + fc(512 * exp, classes)


def kuangliu_mobilenet_v2_params(classes: int = 10) -> int:
    """GPMT's CIFAR MobileNet-V2: (expansion, out, blocks, stride) stages, 1x1 expand / 3x3 depthwise / 1x1
    project, 1x1 conv + BN shortcut on stride-1 blocks whose width changes, 320->1280 conv, Linear(1280, C)."""
    stages = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1)]
    total = conv(3, 32, 3) + bn(32)
    c = 32
    for e, out, n, stride in stages:
        for i in range(n):
            s = stride if i == 0 else 1
            mid = e * c
            total += conv(c, mid, 1) + bn(mid) + dwconv(mid, 3) + bn(mid) + conv(mid, out, 1) + bn(out)
            if s == 1 and c != out:
                total += conv(c, out, 1) + bn(out)
            c = out
    return total + conv(320, 1280, 1) + bn(1280) + fc(1280, classes)


MOBILENET_V1_WIDTHS = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]


def mobilenet_v1_params(classes: int, fc_bias: bool) -> int:
    """MobileNet-V1: 3x3 stem 3->32, 13 blocks (depthwise 3x3 + BN, pointwise 1x1 + BN), Linear(1024, C)."""
    total = conv(3, 32, 3) + bn(32)
    for cin, cout in zip(MOBILENET_V1_WIDTHS[:-1], MOBILENET_V1_WIDTHS[1:]):
        total += dwconv(cin, 3) + bn(cin) + conv(cin, cout, 1) + bn(cout)
    return total + fc(1024, classes, bias=fc_bias)


# EfficientNet-B2 stages by hand from B0's (kernel, expansion, stride, out, repeats) with width 1.1, depth 1.2:
# out = round_filters(o) -> nearest multiple of 8 of 1.1*o (16: 17.6->16, 24: 26.4->24, 40: 44->48, 80: 88->88,
# 112: 123.2->120, 192: 211.2->208, 320: 352->352); repeats = ceil(1.2*r) (1->2, 2->3, 3->4, 4->5);
# stem round_filters(32) = 35.2 -> 32, head round_filters(1280) = 1408.
B2_STAGES = [(3, 1, 1, 16, 2), (3, 6, 2, 24, 3), (5, 6, 2, 48, 3), (3, 6, 2, 88, 4), (5, 6, 1, 120, 4),
             (5, 6, 2, 208, 5), (3, 6, 1, 352, 2)]


def efficientnet_b2_params(classes: int) -> int:
    """Stem conv3x3 3->32 + BN; MBConv blocks: [expand 1x1 + BN] + depthwise kxk + BN + SE (reduce to
    max(1, int(in/4)) and back, both with bias) + project 1x1 + BN; head 1x1 352->1408 + BN; Linear(1408, C)."""
    total = conv(3, 32, 3) + bn(32)
    c = 32
    for k, e, _stride, out, repeats in B2_STAGES:
        for _ in range(repeats):
            mid = c * e
            if e != 1:
                total += conv(c, mid, 1) + bn(mid)
            sq = max(1, int(c * 0.25))
            total += dwconv(mid, k) + bn(mid) + conv(mid, sq, 1, bias=True) + conv(sq, mid, 1, bias=True)
            total += conv(mid, out, 1) + bn(out)
            c = out
    return total + conv(352, 1408, 1) + bn(1408) + fc(1408, classes)


VGG_WIDTHS = {11: [64, 128, 256, 256, 512, 512, 512, 512],
              13: [64, 64, 128, 128, 256, 256, 512, 512, 512, 512],
              16: [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
              19: [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]}


def vgg_bn_bias_params(depth: int, classes: int = 10) -> int:
    """Rethinking CIFAR VGG-BN: conv3x3 with bias + BN per width, Linear(512, C)."""
    widths = VGG_WIDTHS[depth]
    return sum(conv(cin, cout, 3, bias=True) + bn(cout) for cin, cout in zip([3] + widths[:-1], widths)) \
        + fc(512, classes)


def preresnet_bottleneck_params(n: int, classes: int = 10) -> int:
    """Pre-activation bottleneck ResNet: per block bn(in) + 1x1 in->p + bn(p) + 3x3 p->p + bn(p) + 1x1 p->4p,
    1x1 downsample (no BN) in the first block of each stage (16->64, 64->128, 128->256); head bn(256) + fc."""
    total = conv(3, 16, 3)
    cin = 16
    for planes in (16, 32, 64):
        for i in range(n):
            total += bn(cin) + conv(cin, planes, 1) + bn(planes) + conv(planes, planes, 3) + bn(planes) \
                + conv(planes, 4 * planes, 1)
            if i == 0:
                total += conv(cin, 4 * planes, 1)
            cin = 4 * planes
    return total + bn(256) + fc(256, classes)


def densenet_bc_params(n: int = 16, k: int = 12, classes: int = 10) -> int:
    """DenseNet-BC: stem 3->2k; per layer bn(c) + 1x1 c->4k + bn(4k) + 3x3 4k->k; transition bn(c) + 1x1
    c->floor(c/2); head bn + Linear."""
    c = 2 * k
    total = conv(3, c, 3)
    for stage in range(3):
        for _ in range(n):
            total += bn(c) + conv(c, 4 * k, 1) + bn(4 * k) + conv(4 * k, k, 3)
            c += k
        if stage < 2:
            total += bn(c) + conv(c, c // 2, 1)
            c //= 2
    return total + bn(c) + fc(c, classes)


def wrn_params(depth: int, widen: int, classes: int = 10) -> int:
    """WRN-d-k: stem 3->16; pre-activation blocks bn(in) + 3x3 in->w + bn(w) + 3x3 w->w (+ 1x1 in->w where the
    width changes); head bn(64k) + Linear(64k, C)."""
    n = (depth - 4) // 6
    total = conv(3, 16, 3)
    cin = 16
    for w in (16 * widen, 32 * widen, 64 * widen):
        for _ in range(n):
            total += bn(cin) + conv(cin, w, 3) + bn(w) + conv(w, w, 3) + (conv(cin, w, 1) if cin != w else 0)
            cin = w
    return total + bn(cin) + fc(cin, classes)


EXPECTED = {
    "mcts_resnet20": mcts_resnet_params(3),
    "mcts_resnet32": mcts_resnet_params(5),
    "mcts_resnet44": mcts_resnet_params(7),
    "mcts_resnet56": mcts_resnet_params(9),
    "mcts_resnet110": mcts_resnet_params(12),
    "cifar_resnet18": kuangliu_resnet_params(False, (2, 2, 2, 2)),
    "cifar_resnet34": kuangliu_resnet_params(False, (3, 4, 6, 3)),
    "cifar_resnet50": kuangliu_resnet_params(True, (3, 4, 6, 3)),
    "cifar_resnet101": kuangliu_resnet_params(True, (3, 4, 23, 3)),
    "cifar_resnet152": kuangliu_resnet_params(True, (3, 8, 36, 3)),
    "cifar_mobilenet_v2": kuangliu_mobilenet_v2_params(),
    "cifar_mobilenet_v1": mobilenet_v1_params(10, fc_bias=True),
    "cifar_vgg11_bn": vgg_bn_bias_params(11),
    "cifar_vgg13_bn": vgg_bn_bias_params(13),
    "cifar_vgg16_bn": vgg_bn_bias_params(16),
    "cifar_vgg19_bn": vgg_bn_bias_params(19),
    "preresnet110_bottleneck": preresnet_bottleneck_params(12),
    "densenet_bc_100": densenet_bc_params(),
    "wrn_16_10": wrn_params(16, 10),
    "wrn_22_8": wrn_params(22, 8),
    "wrn_16_8": wrn_params(16, 8),
    "wrn_28_8": wrn_params(28, 8),
    "wrn_28_10": wrn_params(28, 10),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_parameter_counts_of_seed_models(name):
    assert n_params(meta_model(name)) == EXPECTED[name]


def test_imagenet_style_seed_models_at_1000_and_10_classes():
    assert n_params(meta_model("mobilenet_v1", num_classes=1000)) == mobilenet_v1_params(1000, fc_bias=False)
    assert n_params(meta_model("efficientnet_b2", num_classes=1000)) == efficientnet_b2_params(1000)
    assert n_params(meta_model("efficientnet_b2")) == efficientnet_b2_params(10)
    assert n_params(meta_model("cifar_resnet50", num_classes=100)) == kuangliu_resnet_params(True, (3, 4, 6, 3), 100)


def test_hand_counts_agree_with_the_numbers_the_seeds_print():
    """MCTS's baseline table (k / M params), the WRN/REFERENCE counts, GPMT's WRN-28-8 and EfficientNet-B2's 9.11 M."""
    assert EXPECTED["mcts_resnet20"] == 272_282  # the brief's / MCTS's 272.28 k
    mcts_table = {"mcts_resnet20": 272.28, "mcts_resnet32": 466.71, "mcts_resnet44": 661.15, "mcts_resnet56": 855.58}
    for name, k in mcts_table.items():
        assert round(EXPECTED[name] / 1e3, 2) == k, name
    assert round(EXPECTED["mcts_resnet110"] / 1e6, 2) == 1.15  # MCTS's "resnet110": 1.15 M (74 layers)
    for name, m in {"cifar_vgg11_bn": 9.23, "cifar_vgg13_bn": 9.42, "cifar_vgg16_bn": 14.73,
                    "cifar_vgg19_bn": 20.04}.items():  # MCTS's VGG*_bn baselines
        assert round(EXPECTED[name] / 1e6, 2) == m, name
    assert (EXPECTED["wrn_16_8"], EXPECTED["wrn_28_8"], EXPECTED["wrn_28_10"]) == (10_961_370, 23_354_842, 36_479_194)
    assert round(efficientnet_b2_params(1000) / 1e6, 2) == 9.11
    assert round(EXPECTED["densenet_bc_100"] / 1e6, 1) == 0.8  # DenseNet-BC-100 (k=12): 0.8 M


# ------------------------------------------------------------------------------------------------- MCTS
def test_mcts_resnet110_is_the_74_layer_network_mcts_builds():
    m = meta_model("mcts_resnet110")
    convs = [(n, c) for n, c in m.named_modules() if isinstance(c, nn.Conv2d)]
    main_path = [n for n, _ in convs if not n.endswith("conv_shortcut")]
    assert len(m.features) == 1 + 3 * 12 and len(main_path) + 1 == 74  # 73 convs + the classifier
    assert [n for n, _ in convs if n.endswith("conv_shortcut")] == ["features.13.conv_shortcut",
                                                                    "features.25.conv_shortcut"]
    assert "74 layers" in model_info("mcts_resnet110").notes


def test_mcts_shortcuts_are_bias_free_1x1_convs_without_bn():
    m = meta_model("mcts_resnet20")
    b = m.features[4]  # first block of stage 2
    assert b.conv_shortcut.weight.shape == (32, 16, 1, 1) and b.conv_shortcut.bias is None
    assert b.conv_shortcut.stride == (2, 2) and m.features[5].conv_shortcut is None
    assert sum(isinstance(x, nn.BatchNorm2d) for x in b.modules()) == 2  # norm1, norm2: none on the shortcut
    keys = set(m.state_dict())
    assert {"features.0.conv1.weight", "features.0.norm1.weight", "features.1.norm2.bias", "classifier.weight",
            "features.4.conv_shortcut.weight"} <= keys


def test_mcts_resnet_cfg_narrows_first_convs():
    cfg = [8] * 9
    m = create_model("mcts_resnet20", cfg=cfg).eval()
    assert m.prunekit_cfg == cfg and m.features[1].conv1.out_channels == 8 and m.features[1].conv2.out_channels == 16
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ------------------------------------------------------------------------------------------------- GPMT
def test_gpmt_cifar_models_run_at_32x32_with_the_seed_names():
    torch.manual_seed(0)
    for name in ("cifar_resnet18", "cifar_mobilenet_v2", "cifar_mobilenet_v1", "mcts_resnet20"):
        m = create_model(name).eval()
        with torch.no_grad():
            assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10), name
    r = meta_model("cifar_resnet50")
    assert r.layer1[0].shortcut[0].weight.shape == (256, 64, 1, 1) and isinstance(r.layer1[0].shortcut[1],
                                                                                 nn.BatchNorm2d)
    assert r.conv1.stride == (1, 1) and r.linear.in_features == 2048
    v2 = meta_model("cifar_mobilenet_v2")
    assert v2.conv1.stride == (1, 1) and v2.layers[1].conv2.stride == (1, 1)  # stage 2 at stride 1 on CIFAR
    assert len(v2.layers[0].shortcut) == 2 and len(v2.layers[2].shortcut) == 0  # 32->16 conv shortcut; 24->24 id
    g = meta_model("mobilenet_v1", num_classes=1000)
    assert g.fc.bias is None and g.model[0][0].stride == (2, 2) and "model.13.3.weight" in g.state_dict()


def test_efficientnet_b2_structure_and_same_padding():
    m = meta_model("efficientnet_b2", num_classes=1000)
    sd = m.state_dict()
    assert len(m._blocks) == sum(r for *_, r in B2_STAGES) == 23
    for key, shape in {"_conv_stem.weight": (32, 3, 3, 3), "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
                       "_blocks.0._se_reduce.weight": (8, 32, 1, 1), "_blocks.0._se_reduce.bias": (8,),
                       "_blocks.2._expand_conv.weight": (96, 16, 1, 1), "_blocks.22._project_conv.weight":
                       (352, 2112, 1, 1), "_conv_head.weight": (1408, 352, 1, 1), "_fc.weight": (1000, 1408)}.items():
        assert tuple(sd[key].shape) == shape, key
    assert "_blocks.0._expand_conv.weight" not in sd  # expansion 1: no expand conv
    assert m._bn0.momentum == 0.01 and m._bn0.eps == 1e-3
    torch.manual_seed(0)
    real = create_model("efficientnet_b2", num_classes=3).eval()
    for size, out in ((260, 130), (32, 16), (33, 17)):  # TF "SAME": ceil(size / 2)
        assert real._conv_stem(torch.zeros(1, 3, size, size)).shape[-1] == out
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(real(x), real(x))  # no drop-connect / dropout in eval
    rates = [b.drop_connect_rate for b in real._blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2 * 22 / 23)


# --------------------------------------------------------------------------------------- Rethinking (000)
def test_rethinking_weight_level_models_have_the_seed_structure():
    v = meta_model("cifar_vgg19_bn")
    convs = [m for m in v.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 and all(c.bias is not None for c in convs) and isinstance(v.classifier, nn.Linear)
    assert {"features.0.bias", "features.1.running_mean", "classifier.weight"} <= set(v.state_dict())
    p = meta_model("preresnet110_bottleneck")
    assert len(p.layer1) == len(p.layer2) == len(p.layer3) == 12
    assert p.layer1[0].downsample[0].weight.shape == (64, 16, 1, 1) and p.layer1[1].downsample is None
    assert p.layer2[0].downsample[0].weight.shape == (128, 64, 1, 1) and p.fc.in_features == 256
    convs = sum(isinstance(m, nn.Conv2d) for n, m in p.named_modules() if "downsample" not in n)
    assert convs + 1 == 110  # 1 stem + 3 * 12 * 3 block convs + fc
    d = meta_model("densenet_bc_100")
    assert len(d.dense1) == len(d.dense2) == len(d.dense3) == 16
    assert d.trans1.conv1.weight.shape == (108, 216, 1, 1) and d.trans2.conv1.weight.shape == (150, 300, 1, 1)
    assert d.fc.in_features == 342 and d.dense1[0].conv1.weight.shape == (48, 24, 1, 1)


def test_rethinking_vgg_init_is_fan_in():
    torch.manual_seed(0)
    v = create_model("cifar_vgg19_bn")
    conv = v.features[3]  # 64 -> 64
    assert abs(float(conv.weight.detach().std()) / (2 / (9 * 64)) ** 0.5 - 1) < 0.05
    assert bool((conv.bias == 0).all()) and bool((v.features[1].weight == 1).all())
    small = create_model("cifar_vgg11_bn", cfg=[8, "M", 8, "M", 8, 8, "M", 8, 8, "M", 8, 8], num_classes=3).eval()
    with torch.no_grad():
        assert small(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# ------------------------------------------------------------------------------------------------ LeNet-5
def test_lenet5_has_relu_after_both_convs_like_gpmt():
    torch.manual_seed(0)
    m = create_model("lenet5", in_channels=1).eval()
    assert n_params(m) == conv(1, 20, 5, bias=True) + conv(20, 50, 5, bias=True) + fc(800, 500) + fc(500, 10)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        h = F.max_pool2d(F.relu(m.conv1(x)), 2)
        h = F.max_pool2d(F.relu(m.conv2(h)), 2)
        expected = m.fc2(F.relu(m.fc1(torch.flatten(h, 1))))
        no_relu = m.fc2(F.relu(m.fc1(torch.flatten(F.max_pool2d(m.conv2(F.max_pool2d(m.conv1(x), 2)), 2), 1))))
        out = m(x)
    assert torch.allclose(out, expected, atol=1e-6) and not torch.allclose(out, no_relu, atol=1e-4)


# ------------------------------------------------------------------------------------ options and dropout
def test_every_gpmt_wrn_defaults_to_dropout_0_3():
    for name in ("wrn_16_8", "wrn_16_10", "wrn_22_8", "wrn_28_8", "wrn_28_10"):
        m = meta_model(name)
        assert m.prunekit_options == {"dropout": 0.3} and model_options(name) == {"dropout": 0.3}
        assert {b.drop_rate for s in (m.layer1, m.layer2, m.layer3) for b in s} == {0.3}


def test_dropout_option_sets_every_block_and_is_validated():
    m = meta_model("wrn_22_8", dropout=0.1)
    assert m.prunekit_options == {"dropout": 0.1}
    assert {b.drop_rate for s in (m.layer1, m.layer2, m.layer3) for b in s} == {0.1}
    assert meta_model("wrn_16_8", dropout=0).prunekit_options == {"dropout": 0.0}
    with pytest.raises(PrunekitError, match=r"drop_rate must be in \[0, 1\)"):
        meta_model("wrn_16_8", dropout=1.5)
    with pytest.raises(PrunekitError, match="option dropout must be a number"):
        meta_model("wrn_16_8", dropout="high")


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(PrunekitError, match=r"model 'resnet20' has no option dropout; accepted options: none"):
        create_model("resnet20", dropout=0.1)
    with pytest.raises(PrunekitError, match=r"'wrn_16_8' has no option drop; accepted options: dropout \(default "
                                            r"0.3\)"):
        create_model("wrn_16_8", drop=0.1)


def test_every_model_records_json_able_effective_options():
    for name in list_models():
        m = meta_model(name)
        assert m.prunekit_options == model_options(name)
        assert json.loads(json.dumps(m.prunekit_options)) == m.prunekit_options


def test_options_are_saved_and_restored(tmp_path):
    cfg = [3, 5, 7, 9, 11, 13]
    m = create_model("wrn_16_8", cfg=cfg, num_classes=4, dropout=0.05)
    assert model_meta(m)["options"] == {"dropout": 0.05}
    save_model(m, tmp_path)
    ck = load_checkpoint(tmp_path)
    assert ck.meta["options"] == {"dropout": 0.05} and ck.model.prunekit_options == {"dropout": 0.05}
    assert ck.model.layer2[1].drop_rate == 0.05 and ck.model.prunekit_cfg == cfg
    old = {k: v for k, v in model_meta(m).items() if k != "options"}  # a checkpoint written before options existed
    assert build_from_meta(old).prunekit_options == {"dropout": 0.3}
    assert model_meta(create_model("lenet5"))["options"] == {}


def test_cli_train_dropout(tmp_path, capsys):
    out = tmp_path / "wrn"
    code = main(["train", "--model", "wrn_16_8", "--cfg", "3,5,7,9,11,13", "--dropout", "0.2", "--epochs", "1",
                 "--limit", "16", "--batch-size", "8", "--out", str(out), "--no-progress"])
    assert code == 0
    model = load_checkpoint(out).model
    assert model.prunekit_options == {"dropout": 0.2} and model.layer1[0].drop_rate == 0.2
    capsys.readouterr()
    code = main(["train", "--model", "resnet20", "--dropout", "0.2", "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "model 'resnet20' has no dropout option" in err and "wrn_22_8" in err
    assert not (tmp_path / "r").exists()
    code = main(["train", "--checkpoint", str(out), "--dropout", "0.1", "--out", str(tmp_path / "c")])
    assert code == 2 and "--checkpoint keeps the options" in capsys.readouterr().err
