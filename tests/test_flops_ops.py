"""Operator-level FLOPs counting: every zoo model against torch's FlopCounterMode, functional ops, attention,
sparse-aware matmuls/convs, and hand-derived Rethinking-convention counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from prunekit.metrics import count_flops
from prunekit.models import create_model, list_models, model_info

aten = torch.ops.aten


def _oracle(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's total (2 * MACs of mm/conv/attention); its registry lacks the CPU flash-attention kernel
    that F.scaled_dot_product_attention dispatches to here, so it is added with torch's own sdpa formula."""
    custom = {aten._scaled_dot_product_flash_attention_for_cpu:
              lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as fc:
        model.eval()(x)
    return int(fc.get_total_flops())


def _zoo_input(name: str) -> tuple[int, int, int]:
    c, h, w = model_info(name).input_size
    return (c, min(h, 64), min(w, 64))  # ImageNet models at 64x64: same code paths, a fraction of the time


@pytest.mark.parametrize("name", list_models())
def test_zoo_model_matches_flop_counter_mode(name):
    size = _zoo_input(name)
    torch.manual_seed(0)
    model = create_model(name, in_channels=size[0]).eval()
    rep = count_flops(model, (1, *size))
    assert rep.unknown_modules == [] and rep.uncounted_ops == []
    assert rep.flops == 2 * rep.macs == _oracle(model, torch.zeros(1, *size)), name


def _resnet_cifar_elementwise(model: nn.Module, hw: int) -> tuple[int, int, int]:
    """(ReLU elements, residual-add elements, shortcut avg-pool outputs) of a CIFAR ResNet, from its modules."""
    relu = model.conv1.out_channels * hw * hw          # stem conv -> BN -> ReLU
    add = pool = 0
    for stage in (model.layer1, model.layer2, model.layer3):
        for block in stage:
            stride = block.conv1.stride[0]
            hw = (hw + 2 * 1 - 3) // stride + 1           # conv3x3, padding 1
            relu += block.conv1.out_channels * hw * hw    # after bn1
            relu += block.conv2.out_channels * hw * hw    # after the residual add
            add += block.conv2.out_channels * hw * hw
            if block.shortcut is not None and stride != 1:
                pool += block.conv1.in_channels * hw * hw  # AvgPool2d(2) output before channel padding
    return relu, add, pool


def test_resnet56_functional_relu_add_and_shortcut_pool_are_counted():
    model = create_model("resnet56")
    rep = count_flops(model, (1, 3, 32, 32), convention="all-ops")
    relu, add, pool = _resnet_cifar_elementwise(model, 32)
    assert relu == 532_480  # 16*32^2 + 18*(16*32^2 + 32*16^2 + 64*8^2): what hook-based counting missed
    assert rep.per_op["aten.relu"]["flops"] == relu
    assert rep.per_op["aten.add"]["flops"] == add
    assert rep.per_op["aten.avg_pool2d"]["flops"] == 2 * 2 * pool  # k^2 per output
    # and they sit in the module that runs them: each block's own row (stem ReLU: the model's row)
    rows = {r["name"]: r for r in rep.per_layer}
    blk = rows["layer3.8"]
    assert blk["type"] == "BasicBlock" and blk["flops"] == (64 + 64 + 64) * 8 * 8
    assert rows["<model>"]["flops"] == 16 * 32 * 32


class _Net(nn.Module):
    """The same residual CNN written with modules (``functional=False``) or with functional calls."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=True)
        self.fc = nn.Linear(8, 5)
        self.relu, self.pool, self.gap = nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.functional:
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.conv2(y) + y)
            y = F.avg_pool2d(y, 2)
            return self.fc(y.mean((2, 3)))
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.conv2(y) + y)
        y = self.pool(y)
        return self.fc(torch.flatten(self.gap(y), 1))


@pytest.mark.parametrize("convention", ["macs", "all-ops"])
@pytest.mark.parametrize("sparse", [False, True])
def test_functional_and_module_versions_count_the_same(convention, sparse):
    torch.manual_seed(0)
    a, b = _Net(functional=False), _Net(functional=True)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for net in (a, b):
            net.conv2.weight[:3] = 0.0
    ra = count_flops(a, (2, 3, 8, 8), convention=convention, sparse=sparse)
    rb = count_flops(b, (2, 3, 8, 8), convention=convention, sparse=sparse)
    assert (ra.macs, ra.flops) == (rb.macs, rb.flops)
    if convention == "all-ops" and not sparse:
        conv1, conv2 = 2 * 216 * 64, 2 * 576 * 64 + 8 * 64  # conv2's bias: 1 per output element
        bn, relu, add, pool = 2 * 512, 2 * 512, 512, 4 * 128
        gap, fc = 128, 2 * 40 + 5
        assert ra.flops == conv1 + bn + conv2 + relu + add + pool + gap + fc


# ---------------------------------------------------------------- sparse-aware


def test_conv_with_half_its_weights_zeroed_counts_half_the_macs():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.uniform_(0.1, 1.0)
        conv.weight.view(-1)[::2] = 0.0
    dense = count_flops(conv, (1, 4, 6, 6))
    sparse = count_flops(conv, (1, 4, 6, 6), sparse=True)
    assert dense.macs == 4 * 9 * 8 * 36 and sparse.macs * 2 == dense.macs
    assert count_flops(conv, (1, 4, 6, 6), sparse=True, convention="rethinking").flops * 2 == \
        count_flops(conv, (1, 4, 6, 6), convention="rethinking").flops


def test_torch_prune_reparametrised_conv_is_sparse_aware():
    import torch.nn.utils.prune as tprune

    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    tprune.l1_unstructured(conv, "weight", amount=0.5)  # weight = weight_orig * weight_mask, in a pre-hook
    assert count_flops(conv, (1, 4, 6, 6), sparse=True).macs * 2 == count_flops(conv, (1, 4, 6, 6)).macs


class _MatmulWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(6, 4) + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w) @ (x @ self.w).transpose(-2, -1)  # weight matmuls, then an activation product


def test_functional_matmul_with_a_parameter_is_sparse_aware_activation_products_are_not():
    m = _MatmulWeight()
    with torch.no_grad():
        m.w[:3] = 0.0  # half of the weight
    dense = count_flops(m, (1, 5, 6))
    sparse = count_flops(m, (1, 5, 6), sparse=True)
    weight_macs, act_macs = 2 * 5 * 6 * 4, 5 * 4 * 5
    assert dense.macs == weight_macs + act_macs
    assert sparse.macs == weight_macs // 2 + act_macs


# ---------------------------------------------------------------- attention


class _MHABlock(nn.Module):
    """Pre-norm ViT block with nn.MultiheadAttention (``batch_first`` selects the fused fast path)."""

    def __init__(self, dim: int, heads: int, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        if not self.batch_first:
            y = y.transpose(0, 1)
        a, _ = self.attn(y, y, y, need_weights=False)
        if not self.batch_first:
            a = a.transpose(0, 1)
        x = x + a
        return x + self.mlp(self.ln2(x))


class _SDPABlock(nn.Module):
    """The same block with a fused qkv Linear and functional attention: F.scaled_dot_product_attention, or the
    explicit ``softmax(q @ k^T * scale) @ v``."""

    def __init__(self, dim: int, heads: int, explicit: bool) -> None:
        super().__init__()
        self.heads, self.explicit = heads, explicit
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.explicit:
            attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


N, D, H = 17, 32, 4  # tokens (16 patches + cls), width, heads
BLOCK_MACS = 3 * N * D * D + 2 * N * N * D + N * D * D + 2 * 4 * N * D * D  # qkv, q@k^T + attn@v, proj, MLP
# Rethinking: 2*MACs + 2 LayerNorms (2/element) + bias adds (qkv, proj, fc1, fc2) + GELU + 2 residual adds
# + 3 per attention score (scale, softmax)
BLOCK_ALL_OPS = (2 * BLOCK_MACS + 2 * 2 * N * D + (3 + 1 + 4 + 1) * N * D + 4 * N * D + 2 * N * D
                    + 3 * H * N * N)


def _blocks():
    torch.manual_seed(0)
    return {"mha": _MHABlock(D, H, batch_first=False), "mha_fastpath": _MHABlock(D, H, batch_first=True),
            "sdpa": _SDPABlock(D, H, explicit=False), "explicit": _SDPABlock(D, H, explicit=True)}


@pytest.mark.parametrize("kind", ["mha", "mha_fastpath", "sdpa", "explicit"])
def test_attention_blocks_count_attention_matmuls(kind):
    block = _blocks()[kind].eval()
    rep = count_flops(block, (2, N, D))
    assert rep.unknown_modules == [] and rep.macs == BLOCK_MACS and rep.flops == 2 * BLOCK_MACS
    assert count_flops(block, (2, N, D), convention="all-ops").flops == BLOCK_ALL_OPS
    x = torch.zeros(1, N, D)  # the oracle counts the whole batch, count_flops per sample
    if kind == "mha_fastpath":
        # FlopCounterMode does not price the fused aten._native_multi_head_attention: with the fast path off the
        # same module runs unfused ops it does count
        assert _oracle(block, x) < 2 * BLOCK_MACS
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            assert _oracle(block, x) == 2 * BLOCK_MACS
            assert count_flops(block, (2, N, D)).macs == BLOCK_MACS
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    else:
        assert _oracle(block, x) == 2 * BLOCK_MACS


@pytest.mark.parametrize("kind", ["mha", "mha_fastpath", "sdpa"])
def test_attention_sparse_counts_zeroed_projection_weights_only(kind):
    block = _blocks()[kind].eval()
    qkv = block.attn.in_proj_weight if kind.startswith("mha") else block.qkv.weight
    with torch.no_grad():
        qkv[: D // 2] = 0.0  # half of the query projection's rows
    sparse = count_flops(block, (1, N, D), sparse=True)
    assert sparse.macs == BLOCK_MACS - N * (D // 2) * D  # attention products stay dense
