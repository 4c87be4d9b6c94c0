"""Model zoo: exact parameter counts, forward passes on tiny inputs, cfg round trips, torchvision key names."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from prunekit.errors import PrunekitError, UnknownNameError
from prunekit.models import create_model, list_models
from prunekit.models.layers import ChannelSelection, ShortcutA

IMAGENET = ("resnet18", "resnet34", "resnet50", "vgg16_bn", "mobilenet_v2")
# the seeds' own CIFAR/ImageNet models (tests/test_models_seeds.py checks their exact parameter counts)
SEED_NAMES = {
    "mcts_resnet20", "mcts_resnet32", "mcts_resnet44", "mcts_resnet56", "mcts_resnet110",
    "cifar_resnet18", "cifar_resnet34", "cifar_resnet50", "cifar_resnet101", "cifar_resnet152",
    "cifar_mobilenet_v1", "cifar_mobilenet_v2", "mobilenet_v1", "efficientnet_b2",
    "cifar_vgg11_bn", "cifar_vgg13_bn", "cifar_vgg16_bn", "cifar_vgg19_bn", "preresnet110_bottleneck",
    "densenet_bc_100", "wrn_16_10", "wrn_22_8",
}
EXPECTED_NAMES = {
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_l1", "vgg13_l1", "vgg16_l1", "vgg19_l1",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "preresnet164", "preresnet110", "densenet40",
    "wrn_28_10", "wrn_16_8", "wrn_28_8", "lenet5", *IMAGENET, *SEED_NAMES,
}
# models that take no cfg
NO_CFG = {"mobilenet_v2", "cifar_resnet18", "cifar_resnet34", "cifar_resnet50", "cifar_resnet101", "cifar_resnet152",
          "cifar_mobilenet_v1", "cifar_mobilenet_v2", "mobilenet_v1", "efficientnet_b2", "preresnet110_bottleneck",
          "densenet_bc_100"}
VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def meta_model(name: str, **kw) -> nn.Module:
    """Build on the meta device: exact shapes and counts, no memory, no init cost."""
    with torch.device("meta"):
        return create_model(name, **kw)


def resnet56_a_cfg() -> list[int]:
    """ResNet-56-A: stage widths 14/28/57, blocks whose first conv id is 16, 20, 38 or 54 kept whole."""
    cfg = []
    for s, (full, pruned) in enumerate(((16, 14), (32, 28), (64, 57))):
        for i in range(9):
            conv_id = 2 + 2 * (s * 9 + i)  # stem = 1, block first convs are the even ids
            cfg.append(full if conv_id in (16, 20, 38, 54) else pruned)
    return cfg


def test_registry_lists_every_zoo_model():
    assert set(list_models()) == EXPECTED_NAMES


@pytest.mark.parametrize("name, kwargs, expected", [
    ("vgg19", {}, 20_035_018),
    ("vgg19", {"num_classes": 100}, 20_081_188),
    ("vgg16_l1", {}, 14_987_722),
    ("vgg16_l1", {"cfg": VGG16_A}, 5_397_034),
    ("resnet56", {}, 853_018),
    ("resnet110", {}, 1_727_962),
    ("resnet56", {"cfg": resnet56_a_cfg()}, 773_336),
    ("resnet20", {}, 269_722),
    ("preresnet164", {}, 1_703_258),
    ("densenet40", {}, 1_059_298),
    ("wrn_28_10", {}, 36_479_194),
    ("wrn_16_8", {}, 10_961_370),
    ("wrn_28_8", {}, 23_354_842),
    ("lenet5", {"in_channels": 1}, 431_080),
    ("resnet18", {"num_classes": 1000}, 11_689_512),
    ("resnet34", {"num_classes": 1000}, 21_797_672),
    ("resnet50", {"num_classes": 1000}, 25_557_032),
    ("vgg16_bn", {"num_classes": 1000}, 138_365_992),
    ("mobilenet_v2", {"num_classes": 1000}, 3_504_872),
])
def test_exact_parameter_counts(name, kwargs, expected):
    assert n_params(meta_model(name, **kwargs)) == expected


def test_real_build_count_matches_meta_build():
    assert n_params(create_model("resnet56", cfg=resnet56_a_cfg())) == 773_336


def test_resnet56_a_cfg_is_what_the_reference_describes():
    cfg = resnet56_a_cfg()
    assert cfg[7] == 16 and cfg[9] == 32 and cfg[18] == 64 and cfg[26] == 64
    assert cfg.count(14) == 8 and cfg.count(28) == 8 and cfg.count(57) == 7


def test_channel_selection_indexes_are_buffers_not_parameters():
    model = meta_model("preresnet164")
    assert not any("indexes" in k for k, _ in model.named_parameters())
    buffers = [k for k, _ in model.named_buffers() if k.endswith("select.indexes")]
    assert len(buffers) == 55  # 54 blocks + head
    assert sum(b.numel() for k, b in model.named_buffers() if k.endswith("indexes")) == 8_080
    dn = meta_model("densenet40")
    assert n_params(dn) + sum(b.numel() for k, b in dn.named_buffers() if k.endswith("indexes")) == 1_068_658


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_on_tiny_input(name, in_channels):
    size = 32 if name in IMAGENET else 8
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=in_channels).eval()
    with torch.no_grad():
        y = model(torch.randn(2, in_channels, size, size))
    assert y.shape == (2, 5)
    assert torch.isfinite(y).all()
    assert model.prunekit_name == name and model.in_channels == in_channels and model.num_classes == 5


@pytest.mark.parametrize("name, size", [("resnet56", 9), ("resnet20", 28), ("vgg19", 28), ("densenet40", 28),
                                        ("preresnet164", 15), ("wrn_16_8", 11), ("lenet5", 28), ("lenet5", 12)])
def test_forward_on_odd_and_mnist_sizes(name, size):
    model = create_model(name, num_classes=3, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 3)


def test_training_step_backpropagates_through_selection_and_shortcuts():
    for name in ("resnet20", "densenet40"):
        model = create_model(name, num_classes=4, in_channels=1).train()
        model(torch.randn(2, 1, 8, 8)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_cfg_round_trip_rebuilds_same_shapes(name):
    model = meta_model(name, num_classes=7, in_channels=1)
    cfg = model.prunekit_cfg
    assert cfg is None or json.loads(json.dumps(cfg)) == cfg
    again = meta_model(name, num_classes=7, in_channels=1, cfg=cfg)
    assert again.prunekit_cfg == cfg
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_default_cfgs_follow_the_seed_codebases():
    assert meta_model("vgg16").prunekit_cfg == [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                                512, 512, 512, "M", 512, 512, 512]
    assert meta_model("resnet56").prunekit_cfg == [16] * 9 + [32] * 9 + [64] * 9
    pre = meta_model("preresnet164").prunekit_cfg
    assert len(pre) == 163 and pre[:6] == [16, 16, 16, 64, 16, 16]
    assert pre[54:57] == [64, 32, 32] and pre[57:60] == [128, 32, 32] and pre[108:111] == [128, 64, 64]
    assert pre[-4:] == [256, 64, 64, 256]
    dn = meta_model("densenet40").prunekit_cfg
    assert dn == list(range(24, 169, 12)) + list(range(168, 313, 12)) + list(range(312, 457, 12))
    assert meta_model("wrn_16_8").prunekit_cfg == [128] * 2 + [256] * 2 + [512] * 2
    assert meta_model("preresnet110").prunekit_cfg == [16] * 18 + [32] * 18 + [64] * 18
    assert meta_model("lenet5").prunekit_cfg == [20, 50, 500]
    assert meta_model("mobilenet_v2").prunekit_cfg is None


def test_pruned_cfgs_build_and_run():
    torch.manual_seed(0)
    pre = meta_model("preresnet164").prunekit_cfg
    pre_small = [max(1, v // 2) for v in pre]
    dn_small = [max(1, v - 10) for v in meta_model("densenet40").prunekit_cfg]
    for name, cfg in (("preresnet164", pre_small), ("densenet40", dn_small), ("resnet56", resnet56_a_cfg()),
                      ("vgg16_l1", VGG16_A), ("wrn_16_8", [3, 5, 7, 9, 11, 13]), ("lenet5", [4, 6, 8]),
                      ("resnet50", [8] * 32), ("vgg16_bn", [8, 8, "M", 8, 8, "M"] + [4, 4, 4, "M"] * 3)):
        model = create_model(name, cfg=cfg, num_classes=3, in_channels=3).eval()
        assert model.prunekit_cfg == cfg
        with torch.no_grad():
            assert model(torch.randn(2, 3, 32 if name in IMAGENET else 8, 32 if name in IMAGENET else 8)).shape \
                == (2, 3)
    fresh = create_model("preresnet164", cfg=pre_small)
    assert fresh.layer1[1].select.num_kept() == 32 and fresh.select.num_kept() == 128
    assert fresh.fc.in_features == 128 and fresh.layer1[1].conv1.in_channels == 32


def test_cfg_entries_are_converted_to_plain_ints():
    cfg = [np.int64(v) for v in [20, 50, 500]]
    model = create_model("lenet5", cfg=cfg)
    assert model.prunekit_cfg == [20, 50, 500] and all(type(v) is int for v in model.prunekit_cfg)


def test_module_names_follow_the_reference():
    r = meta_model("resnet56")
    assert [n for n, _ in r.named_children()] == ["conv1", "bn1", "layer1", "layer2", "layer3", "avgpool", "fc"]
    assert {"conv1", "bn1", "conv2", "bn2"} <= {n for n, _ in r.layer2[0].named_children()}
    assert not list(r.layer2[0].shortcut.parameters()) and r.layer2[1].shortcut is None
    v = meta_model("vgg19")
    assert isinstance(v.features, nn.Sequential) and isinstance(v.classifier, nn.Linear)
    assert isinstance(meta_model("vgg16_l1").classifier[1], nn.BatchNorm1d)
    p = meta_model("preresnet164")
    assert [n for n, _ in p.layer2[0].named_children()] == ["bn1", "select", "conv1", "bn2", "conv2", "bn3",
                                                            "conv3", "downsample"]
    assert p.layer2[0].downsample[0].weight.shape == (128, 64, 1, 1) and p.layer2[1].downsample is None
    w = meta_model("wrn_28_10")
    assert w.layer2[0].downsample.weight.shape == (320, 160, 1, 1) and w.layer1[1].downsample is None
    assert {b.drop_rate for s in (w.layer1, w.layer2, w.layer3) for b in s} == {0.3}
    assert meta_model("wrn_16_8").layer1[0].drop_rate == 0.3  # GPMT trains every WRN with dropRate 0.3
    assert meta_model("wrn_16_8", dropout=0.0).layer1[0].drop_rate == 0.0


def test_seed_inits():
    torch.manual_seed(0)
    v = create_model("vgg19")
    bns = [m for m in v.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 0.5).all()) and bool((m.bias == 0).all()) for m in bns)
    assert bool((v.classifier.bias == 0).all())
    assert abs(float(v.classifier.weight.detach().std()) - 0.01) < 0.002
    conv = v.features[3]  # 64 -> 64: std sqrt(2 / (9 * 64))
    assert abs(float(conv.weight.detach().std()) / (2 / (9 * 64)) ** 0.5 - 1) < 0.05
    r = create_model("resnet20")
    assert bool((r.bn1.weight == 1).all())
    p = create_model("preresnet164")
    assert bool((p.bn.weight == 0.5).all()) and bool((p.select.indexes == 1).all())


def test_imagenet_state_dict_keys_match_torchvision():
    expected = {
        "resnet18": (122, {"conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,),
                           "layer1.0.conv1.weight": (64, 64, 3, 3), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                           "layer2.0.downsample.1.num_batches_tracked": (), "layer4.1.bn2.weight": (512,),
                           "fc.weight": (1000, 512), "fc.bias": (1000,)}),
        "resnet50": (320, {"layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.0.conv3.weight": (256, 64, 1, 1),
                           "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                           "layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.2.bn3.running_var": (2048,),
                           "fc.weight": (1000, 2048)}),
        "mobilenet_v2": (314, {"features.0.0.weight": (32, 3, 3, 3), "features.0.1.weight": (32,),
                               "features.1.conv.0.0.weight": (32, 1, 3, 3), "features.1.conv.1.weight": (16, 32, 1, 1),
                               "features.1.conv.2.running_mean": (16,), "features.2.conv.0.0.weight": (96, 16, 1, 1),
                               "features.2.conv.1.0.weight": (96, 1, 3, 3), "features.2.conv.2.weight": (24, 96, 1, 1),
                               "features.17.conv.3.weight": (320,), "features.18.0.weight": (1280, 320, 1, 1),
                               "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,)}),
        "vgg16_bn": (97, {"features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,),
                          "features.1.running_var": (64,), "features.40.weight": (512, 512, 3, 3),
                          "features.41.weight": (512,), "classifier.0.weight": (4096, 25088),
                          "classifier.3.weight": (4096, 4096), "classifier.6.weight": (1000, 4096)}),
    }
    for name, (n_keys, keys) in expected.items():
        sd = meta_model(name, num_classes=1000).state_dict()
        assert len(sd) == n_keys, name
        for key, shape in keys.items():
            assert tuple(sd[key].shape) == shape, (name, key)


def test_imagenet_in_channels_changes_only_the_stem():
    assert meta_model("resnet50", in_channels=1).conv1.weight.shape == (64, 1, 7, 7)
    assert meta_model("mobilenet_v2", in_channels=1).features[0][0].weight.shape == (32, 1, 3, 3)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        create_model("resnet57")
    msg = str(err.value)
    assert "resnet57" in msg and "resnet56" in msg and "densenet40" in msg and "mobilenet_v2" in msg


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES - NO_CFG))
def test_cfg_of_wrong_length_names_model_and_expected_length(name):
    cfg = meta_model(name).prunekit_cfg
    with pytest.raises(PrunekitError, match=rf"{name}: cfg must have {len(cfg)} entries, got {len(cfg) - 1}"):
        meta_model(name, cfg=cfg[:-1])


@pytest.mark.parametrize("name, bad", [("resnet56", 0), ("lenet5", -3), ("wrn_16_8", 2.5), ("densenet40", True)])
def test_non_positive_or_non_integer_width_raises(name, bad):
    cfg = list(meta_model(name).prunekit_cfg)
    cfg[1] = bad
    with pytest.raises(PrunekitError, match=rf"{name}: cfg\[1\]"):
        meta_model(name, cfg=cfg)


def test_other_bad_cfgs_raise():
    with pytest.raises(PrunekitError, match="vgg16: cfg\\[2\\] must be M"):
        create_model("vgg16", cfg=VGG16_A[:2] + [128] + VGG16_A[3:])
    with pytest.raises(PrunekitError, match="mobilenet_v2: this model takes no cfg"):
        create_model("mobilenet_v2", cfg=[1, 2])
    too_wide = meta_model("densenet40").prunekit_cfg
    too_wide[0] = 25  # the first BN has only 24 channels
    with pytest.raises(PrunekitError, match=r"densenet40: cfg\[0\] = 25 exceeds the 24 channels"):
        create_model("densenet40", cfg=too_wide)


def test_channel_selection_gathers_kept_channels_and_tracks_updates():
    sel = ChannelSelection(4)
    x = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(2, 4, 3, 3)
    assert torch.equal(sel(x), x)
    sel.indexes.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert torch.equal(sel(x), x[:, [0, 2]])
    sel.load_state_dict({"indexes": torch.tensor([0.0, 1.0, 0.0, 1.0])})
    assert torch.equal(sel(x), x[:, [1, 3]])
    sel.set_kept([2])
    assert torch.equal(sel(x), x[:, [2]]) and sel.num_kept() == 1
    assert torch.equal(ChannelSelection(4, kept=3)(x), x[:, :3])


def test_shortcut_a_pools_pads_and_passes_gradient():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = ShortcutA(3, 5, 2)(x)
    assert y.shape == (2, 5, 2, 2)
    assert torch.allclose(y[:, :3], nn.functional.avg_pool2d(x, 2)) and not y[:, 3:].any()
    y.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 0.25))
    assert ShortcutA(3, 5, 2)(torch.randn(1, 3, 9, 9)).shape == (1, 5, 5, 5)


# ------------------------------------------------------------------------------- the per-model metadata record
def test_registry_record_holds_li_et_al_plans_and_kesi_defaults():
    from prunekit.models import model_info
    from prunekit.models.registry import named_plan, named_plans

    # Li et al. 2017, Table 1 / §4.2: ResNet-56-A prunes 10% per stage and skips convs 16, 20, 38, 54; -B prunes
    # 60/30/10% and also skips 18 and 34; ResNet-110-A prunes 50% of stage 1 only and skips 36; -B 50/40/30%
    # skipping 36, 38, 74; VGG-16-A prunes conv1_1 and conv4_1 ... conv5_3 by half.
    expected = {"resnet56-A": ("resnet56", (0.1, 0.1, 0.1), (16, 20, 38, 54)),
                "resnet56-B": ("resnet56", (0.6, 0.3, 0.1), (16, 18, 20, 34, 38, 54)),
                "resnet110-A": ("resnet110", (0.5, 0.0, 0.0), (36,)),
                "resnet110-B": ("resnet110", (0.5, 0.4, 0.3), (36, 38, 74))}
    for name, (model, ratios, skip_ids) in expected.items():
        plan = named_plan(name)
        assert (plan.model, plan.stage_ratios, plan.skip_ids) == (model, ratios, skip_ids)
        assert model_info(model).plans[name] is plan
    vgg = named_plan("vgg16-A")
    assert (vgg.model, vgg.ratio) == ("vgg16_l1", 0.5)
    assert vgg.layers == ("conv1_1", "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
    assert sorted(named_plans()) == sorted([*expected, "vgg16-A"])
    with pytest.raises(UnknownNameError, match="valid plans: .*resnet56-A"):
        named_plan("resnet56-C")
    # kesi (seed 002): 10/20/30% of the remaining filters per stage and round; its sensitive blocks kept whole
    assert model_info("resnet56").iterative.skip == ("layer1.7", "layer2.0", "layer3.0", "layer3.8")
    for name in ("resnet56", "resnet110", "preresnet110", "wrn_28_10", "wrn_16_8"):
        assert model_info(name).iterative.stage_ratios == (0.1, 0.2, 0.3), name
    assert model_info("resnet110").iterative.skip == model_info("preresnet110").iterative.skip == \
        ("layer1.17", "layer2.0", "layer3.0")
    assert (model_info("vgg16_l1").iterative.ratio, model_info("vgg16_l1").iterative.layers) == (0.25, vgg.layers)
    assert model_info("resnet20").iterative is None and model_info("vgg16").plans == {}


def test_registry_record_normalisation_follows_the_training_data():
    from prunekit.models import model_info

    # the usual published statistics: CIFAR-10 (kuangliu), ImageNet (torchvision), MNIST
    assert (model_info("resnet56").mean, model_info("resnet56").std, model_info("resnet56").dataset) == \
        ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), "cifar10")
    assert (model_info("resnet50").mean, model_info("resnet50").std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (model_info("lenet5").mean, model_info("lenet5").std, model_info("lenet5").dataset) == \
        ((0.1307,), (0.3081,), "mnist")
    for name in list_models():
        info = model_info(name)
        assert len(info.mean) == len(info.std) == info.input_size[0], name


def test_natural_input_size_of_zoo_factory_and_plain_models():
    from prunekit.models.registry import natural_input_size

    assert natural_input_size(create_model("resnet18", in_channels=1)) == (1, 224, 224)
    assert natural_input_size(create_model("vgg11")) == (3, 32, 32)
    plain = nn.Linear(2, 2)
    assert natural_input_size(plain) is None
    plain.prunekit_input_size = [3, 64, 48]
    assert natural_input_size(plain) == (3, 64, 48)
    plain.prunekit_input_size = [2]  # a factory model of vectors: as recorded
    assert natural_input_size(plain) == (2,)


def test_register_model_rejects_a_plan_for_another_model_and_half_given_normalisation():
    from prunekit.models.registry import NamedPlan, register_model

    with pytest.raises(ValueError, match="is for 'resnet56'"):
        register_model("tmp_net_a", plans={"tmp-A": NamedPlan("resnet56")})(lambda num_classes=10, cfg=None,
                                                                             in_channels=3: nn.Identity())
    with pytest.raises(ValueError, match="mean and std together"):
        register_model("tmp_net_b", mean=(0.5,))
    assert "tmp_net_a" not in list_models()
