"""The ``rethinking`` FLOP convention is Rethinking's own counter (forward hooks on leaf modules), so Scratch-B budgets
equal the seed's; ``all-ops`` is prunekit's complete count.

Every expected number here is counted by hand from the architecture (layer widths, output sizes) with the seed's
prices: Conv2d ``2*nnz(W)*Hout*Wout`` (no biases in these models), BatchNorm2d 2 per element, Linear
``2*in*out + out``, module ReLUs 1 per element (prunekit's ResNet-56 and PreResNet-164 call ``F.relu``: the hooks see
none), residual additions and adaptive pooling 0. The two Scratch-B cases are the ones issue 19 compared against the
seed's scripts: 314 epochs (ResNet-56, weight-level 0.6) and 354 (PreResNet-164 slimmed at 40%).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from prunekit.checkpoint import load_checkpoint, save_model
from prunekit.engine.trainer import TrainConfig
from prunekit.metrics import count_flops
from prunekit.models import create_model
from prunekit.models.preresnet import slim_default_cfg
from prunekit.pruning.unstructured import prune_unstructured
from prunekit.retrain import plan_scratch, scratch_model

SIZE = (3, 32, 32)


# ---------------------------------------------------------------- hand counts


def _resnet56_layers() -> list[tuple[str, int, int, int]]:
    """``(conv name, Cin, Cout, Hout*Wout)`` of every conv of the CIFAR ResNet-56 (3x3 convs, shortcut A)."""
    rows = [("conv1", 3, 16, 1024)]
    for s, (cin0, c, hw) in enumerate([(16, 16, 1024), (16, 32, 256), (32, 64, 64)]):
        for j in range(9):
            rows.append((f"layer{s + 1}.{j}.conv1", cin0 if j == 0 else c, c, hw))
            rows.append((f"layer{s + 1}.{j}.conv2", c, c, hw))
    return rows


def _resnet56_rethinking(nnz: dict[str, int] | None = None) -> int:
    """Seed-counter FLOPs of ResNet-56: convs (``nnz`` non-zero weights where given), one BN per conv, the fc."""
    total = 0
    for name, cin, cout, hw in _resnet56_layers():
        w = cin * cout * 9 if nnz is None else nnz[name]
        total += 2 * w * hw + 2 * cout * hw  # the conv, then its BatchNorm2d
    return total + 2 * 64 * 10 + 10


def _preresnet164_rethinking(cfg: list[int]) -> int:
    """Seed-counter FLOPs of the slimming PreResNet-164 built from ``cfg`` (``[sel-in, conv1, conv2]`` per block,
    then the final selection): per block BN(in) + conv1x1 + BN + conv3x3(stride) + BN + conv1x1(-> 4p) and, in each
    stage's first block, the 1x1 downsample; the stem conv, the final BN over 256 channels and the fc."""
    total = 2 * 3 * 16 * 9 * 1024  # stem conv 3 -> 16
    inplanes, hw_in = 16, 1024
    for s, planes in enumerate((16, 32, 64)):
        for j in range(18):
            sel, c1, c2 = cfg[3 * (18 * s + j):3 * (18 * s + j) + 3]
            hw_out = hw_in // 4 if (j == 0 and s > 0) else hw_in
            total += 2 * inplanes * hw_in                  # bn1 (before the channel selection: every channel)
            total += 2 * sel * c1 * hw_in + 2 * c1 * hw_in  # conv1 1x1, bn2
            total += 2 * c1 * c2 * 9 * hw_out + 2 * c2 * hw_out  # conv2 3x3 (stride), bn3
            total += 2 * c2 * 4 * planes * hw_out          # conv3 1x1
            if j == 0:
                total += 2 * inplanes * 4 * planes * hw_out  # downsample 1x1
            inplanes, hw_in = 4 * planes, hw_out
    return total + 2 * 256 * 64 + 2 * cfg[-1] * 10 + 10  # final BN (8x8), fc


def test_resnet56_rethinking_flops_are_the_seed_counters_hand_count():
    model = create_model("resnet56")
    dense = _resnet56_rethinking()
    assert dense == 252_036_362
    rep = count_flops(model, (1, *SIZE), convention="rethinking")
    assert rep.flops == dense
    assert rep.per_op == {"nn.Conv2d": {"macs": 0, "flops": 250_970_112}, "nn.BatchNorm2d": {"macs": 0,
                          "flops": 1_064_960}, "nn.Linear": {"macs": 0, "flops": 1_290}}
    # all-ops also counts what the hooks cannot see: F.relu (2 per block + stem), the residual adds, the option-A
    # shortcuts' 2x2 average pooling (4 per output element) and the global mean (1 per input element)
    relu = 16 * 1024 + 9 * 2 * (16 * 1024 + 32 * 256 + 64 * 64)
    adds = 9 * (16 * 1024 + 32 * 256 + 64 * 64)
    shortcut_pool = 4 * (16 * 256 + 32 * 64)
    mean = 64 * 64
    assert count_flops(model, (1, *SIZE), convention="all-ops").flops == dense + relu + adds + shortcut_pool + mean


def test_preresnet164_rethinking_flops_are_the_seed_counters_hand_count():
    cfg = slim_default_cfg(164)
    assert _preresnet164_rethinking(cfg) == 501_593_098
    assert count_flops(create_model("preresnet164"), (1, *SIZE), convention="rethinking").flops == 501_593_098
    small = [max(1, c // 2) for c in cfg]  # any slimmed cfg: selections and widths halved
    assert count_flops(create_model("preresnet164", cfg=small), (1, *SIZE), convention="rethinking").flops == \
        _preresnet164_rethinking(small)


class _SeedModules(nn.Module):
    """Module ReLUs (one called twice), a functional ReLU, an add, AvgPool2d and an adaptive pool: the seed's hooks
    count the modules of its types, per call, and nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.bn1d = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(x))           # 4 x 6 x 6
        y = self.relu(y + torch.relu(y))      # functional relu and add: unseen; the module relu again: counted
        y = self.pool(y)                      # 4 x 3 x 3
        return self.fc(self.bn1d(torch.flatten(self.gap(y), 1)))


def test_rethinking_counts_module_calls_of_the_seeds_types_only():
    conv = (2 * 2 * 4 * 9 + 4) * 36  # (2 nnz(W) + bias) * positions
    relu = 2 * 4 * 36                # two calls of the module
    pool = 2 * 2 * 4 * 9             # k^2 per output element
    fc = 2 * 4 * 3 + 3               # BatchNorm1d and the adaptive pool: not the seed's types
    assert count_flops(_SeedModules(), (1, 2, 6, 6), convention="rethinking").flops == conv + relu + pool + fc
    assert count_flops(_SeedModules(), (3, 2, 6, 6), convention="rethinking").flops == conv + relu + pool + fc


# ---------------------------------------------------------------- Scratch-B: the seed's epochs


def _he_normal_resnet56() -> nn.Module:
    """ResNet-56 with every conv drawn N(0, 2 / (k*k*Cout)) from one generator (the zoo's own init rule)."""
    model = create_model("resnet56")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                std = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
    return model


def test_scratch_b_of_weight_level_resnet56_at_60_percent_is_the_seeds_314(tmp_path):
    model = _he_normal_resnet56()
    res = prune_unstructured(model, "global", 0.6)  # Rethinking weight-level: one threshold over the conv weights
    nnz = {name: int(res.masks[f"{name}.weight"].sum()) for name, *_ in _resnet56_layers()}
    dense, pruned = _resnet56_rethinking(), _resnet56_rethinking(nnz)
    assert int(160 * dense / pruned) == 314
    ckpt = load_checkpoint(save_model(model, tmp_path, masks=res.masks))
    fresh, _ = scratch_model(ckpt)
    plan, _ = plan_scratch(ckpt, fresh, TrainConfig(epochs=160), input_size=SIZE)
    assert (plan.flops_dense, plan.flops_pruned, plan.epochs, plan.convention) == (dense, pruned, 314, "rethinking")


def test_scratch_b_of_preresnet164_slimmed_at_40_percent_is_the_seeds_354(tmp_path):
    from prunekit.pruning.structured.slimming import prune_slimming

    model = create_model("preresnet164")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # BN scales as after sparsity training: uniform, the first stages a little stronger
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                stage = 2 if name.startswith("layer1") else 1 if name.startswith("layer2") else 0
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.029 * stage)
    small = prune_slimming(model, 0.4, input_size=SIZE, verify=False).model
    cfg = small.prunekit_cfg
    # the cfg follows from the scales alone: per BN, the channels above the global 40% threshold (at least one)
    gammas = torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    thr = float(gammas.double().sort().values[int(0.4 * gammas.numel())])
    kept = [max(1, int((model.get_submodule(f"layer{i // 18 + 1}.{i % 18}.{bn}").weight.double().abs() > thr).sum()))
            for i in range(54) for bn in ("bn1", "bn2", "bn3")]
    assert cfg == kept + [int((model.bn.weight.double().abs() > thr).sum())]
    dense, pruned = _preresnet164_rethinking(slim_default_cfg(164)), _preresnet164_rethinking(cfg)
    assert int(160 * dense / pruned) == 354
    ckpt = load_checkpoint(save_model(small, tmp_path))
    fresh, _ = scratch_model(ckpt)
    plan, _ = plan_scratch(ckpt, fresh, TrainConfig(epochs=160), input_size=SIZE)
    assert (plan.flops_dense, plan.flops_pruned, plan.epochs, plan.convention) == (dense, pruned, 354, "rethinking")
