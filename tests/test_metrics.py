"""prunekit.metrics: exact parameter / MAC / FLOP counts against hand-computed numbers, latency, edge cases."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunekit.errors import PrunekitError
from prunekit.metrics import (count_flops, count_nonzero_params, count_params, format_count, layer_table,
                              measure_latency, summarize)


def _no_zero_weights(module: nn.Module) -> nn.Module:
    """Fill every parameter with values in [0.1, 1.1) so that no entry is accidentally exactly zero."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand_like(p) + 0.1)
    return module


def _tiny_net() -> nn.Sequential:
    # conv 3->4 (bias) on 8x8 -> 4x8x8 -> BN -> ReLU -> maxpool 2 -> 4x4x4 -> flatten 64 -> dropout -> linear 5
    return _no_zero_weights(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 5)))


# ---------------------------------------------------------------- MAC convention, dense


def test_conv_macs_stride_padding_groups_exact():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    rep = count_flops(conv, (1, 4, 9, 9))
    # Hout = Wout = (9 + 2 - 3) // 2 + 1 = 5; MACs = (4/2 * 3 * 3) * 6 * 5 * 5, bias adds not counted
    assert rep.macs == 18 * 6 * 25 == 2700
    assert rep.flops == 2 * 2700
    assert rep.per_layer[0]["output_shape"] == [1, 6, 5, 5]
    assert rep.convention == "macs" and rep.sparse is False and rep.unknown_modules == []


def test_conv_macs_dilation_exact():
    conv = nn.Conv2d(3, 8, 3, dilation=2, bias=False)
    # effective kernel 5: Hout = 10 - 4 = 6
    assert count_flops(conv, (1, 3, 10, 10)).macs == 27 * 8 * 36


def test_linear_macs_exact():
    assert count_flops(nn.Linear(10, 7), (1, 10)).macs == 70
    # extra leading dims are rows: 3 rows x 70
    assert count_flops(nn.Linear(10, 7), (1, 3, 10)).macs == 210


def test_conv_transpose_macs_exact():
    deconv = nn.ConvTranspose2d(2, 3, 3, stride=2, bias=False)
    # every one of the 4x4 input positions is multiplied through the whole 2x3x3x3 kernel
    assert count_flops(deconv, (1, 2, 4, 4)).macs == 2 * 3 * 9 * 16


def test_counts_are_per_sample_whatever_the_batch():
    net = _tiny_net()
    one = count_flops(net, (1, 3, 8, 8), convention="rethinking")
    four = count_flops(net, (4, 3, 8, 8), convention="rethinking")
    assert (one.macs, one.flops) == (four.macs, four.flops) == (4 * 27 * 64 + 320, 15749)


def test_mac_convention_counts_zero_for_bn_relu_pool_dropout():
    rep = count_flops(_tiny_net(), (1, 3, 8, 8))
    by_type = {r["type"]: r for r in rep.per_layer}
    for t in ("BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Dropout"):
        assert by_type[t]["macs"] == 0 and by_type[t]["flops"] == 0, t
    assert rep.macs == 108 * 64 + 64 * 5 == 7232
    assert rep.flops == 2 * 7232


# ---------------------------------------------------------------- sparse-aware


def test_sparse_macs_drop_exactly_by_zeroed_weights_times_positions():
    conv = _no_zero_weights(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2))
    dense = count_flops(conv, (1, 4, 9, 9), sparse=True).macs
    assert dense == 2700
    with torch.no_grad():
        conv.weight.view(-1)[torch.arange(0, 74, 2)] = 0.0  # 37 entries
    assert int((conv.weight == 0).sum()) == 37
    assert count_flops(conv, (1, 4, 9, 9), sparse=True).macs == 2700 - 37 * 25
    assert count_flops(conv, (1, 4, 9, 9), sparse=False).macs == 2700  # dense count ignores zeros


def test_sparse_linear_macs_count_nonzero_weights():
    fc = _no_zero_weights(nn.Linear(10, 7))
    with torch.no_grad():
        fc.weight[0, :] = 0.0
    rep = count_flops(fc, (1, 10), sparse=True)
    assert rep.macs == 60 and rep.flops == 120 and rep.sparse is True


# ---------------------------------------------------------------- Rethinking convention


def test_rethinking_convention_tiny_net_hand_computed():
    rep = count_flops(_tiny_net(), (1, 3, 8, 8), convention="rethinking")
    conv = (2 * 108 + 4) * 64   # (2 nnz(W) + Cout bias) * Hout * Wout = 14080
    bn = 2 * 4 * 8 * 8          # 2 per output element = 512
    relu = 4 * 8 * 8            # 1 per element = 256
    pool = 2 * 2 * 4 * 4 * 4    # k^2 per output element = 256
    fc = 2 * 64 * 5 + 5         # 2 numel(W) + bias = 645
    assert rep.flops == conv + bn + relu + pool + fc == 15749
    assert [r["flops"] for r in rep.per_layer] == [conv, bn, relu, pool, 0, 0, fc]
    assert rep.convention == "rethinking"


def test_rethinking_sparse_counts_only_nonzero_conv_weights():
    net = _tiny_net()
    with torch.no_grad():
        net[0].weight[0] = 0.0  # 27 weights of the first filter
    rep = count_flops(net, (1, 3, 8, 8), sparse=True, convention="rethinking")
    assert rep.flops == 15749 - 2 * 27 * 64
    assert rep.macs == 7232 - 27 * 64


def test_all_ops_adaptive_pool_uses_actual_windows():
    # 5 -> 3 adaptive windows along one dim have lengths 2, 3, 2 (sum 7): 7 * 7 per map, 2 maps
    rep = count_flops(nn.AdaptiveAvgPool2d(3), (1, 2, 5, 5), convention="all-ops")
    assert rep.flops == 98
    # divisible case: (Hin/Hout)*(Win/Wout) per output element = 16 * 3 channels
    assert count_flops(nn.AdaptiveAvgPool2d(1), (1, 3, 4, 4), convention="all-ops").flops == 48


class _ReusedRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.relu(x) - 1.0)


def test_module_called_twice_is_counted_twice():
    rep = count_flops(_ReusedRelu(), (1, 2, 3, 3), convention="all-ops")
    rows = {r["name"]: r for r in rep.per_layer}
    assert rows["relu"]["flops"] == 2 * 18 and rows["relu"]["calls"] == 2
    assert rows["<model>"]["flops"] == 18  # the functional "- 1.0" between the two calls: 1 per element
    assert rep.flops == 3 * 18


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.relu(self.conv(x))
        return torch.cat([y + x, y], dim=1)


def test_functional_ops_are_counted_in_the_calling_module():
    rep = count_flops(_Functional(), (1, 2, 3, 3), convention="all-ops")
    rows = {r["name"]: r for r in rep.per_layer}
    conv = 2 * 4 * 9                      # 2 * nnz(W) * positions
    relu, add = 2 * 9, 2 * 9              # 1 per element each; torch.cat is free
    assert rows["conv"]["flops"] == conv
    assert rows["<model>"]["flops"] == relu + add and rows["<model>"]["note"]
    assert rep.flops == conv + relu + add
    assert rep.per_op == {"aten.convolution": {"macs": 36, "flops": conv}, "aten.relu": {"macs": 0, "flops": relu},
                          "aten.add": {"macs": 0, "flops": add}}
    macs = count_flops(_Functional(), (1, 2, 3, 3))
    assert (macs.macs, macs.flops) == (36, 72)  # the MACs convention counts only the conv


# ---------------------------------------------------------------- parameters


def test_count_params_vs_nonzero_after_zeroing():
    fc = _no_zero_weights(nn.Linear(10, 5))
    assert count_params(fc) == count_nonzero_params(fc) == 55
    with torch.no_grad():
        fc.weight.view(-1)[:12] = 0.0
    assert count_params(fc) == 55
    assert count_nonzero_params(fc) == 43


def test_frozen_parameter_excluded_when_trainable_only():
    fc = _no_zero_weights(nn.Linear(10, 5))
    fc.bias.requires_grad_(False)
    assert count_params(fc) == 50 and count_params(fc, trainable_only=False) == 55
    assert count_nonzero_params(fc) == 50 and count_nonzero_params(fc, trainable_only=False) == 55


def test_buffers_and_tied_parameters_not_double_counted():
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 4, bias=False))
    net[2].weight = net[0].weight  # tied
    assert count_params(net) == 16 + 8  # BN running stats are buffers


# ---------------------------------------------------------------- odd modules


class _ChannelSelect(nn.Module):
    """Only a buffer, like slimming's channel selection."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("indexes", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.indexes.view(1, -1, 1, 1)


class _Scaled(nn.Module):
    """A container with its own parameter applied functionally."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.select = _ChannelSelect(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.conv(x)) * self.scale


class _WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


def test_module_running_an_op_without_a_rule_is_reported_not_counted():
    rep = count_flops(_WithLSTM(), (2, 5, 8))
    assert rep.unknown_modules == ["lstm"] and rep.uncounted_ops  # e.g. aten.mkldnn_rnn_layer on CPU
    rows = {r["name"]: r for r in rep.per_layer}
    assert rows["lstm"]["macs"] is None and rows["lstm"]["flops"] is None
    assert rep.uncounted_ops[0] in rows["lstm"]["note"]
    assert rows["lstm"]["params"] == 4 * 4 * (8 + 4) + 2 * 4 * 4
    assert rep.macs == 12 and rep.flops == 24
    table = {r["name"]: r for r in layer_table(_WithLSTM(), (1, 5, 8))}
    assert table["lstm"]["sparse_macs"] is None


def test_buffer_only_and_container_modules_count_their_functional_arithmetic():
    rep = count_flops(_Scaled(), (1, 2, 3, 3), convention="all-ops")
    rows = {r["name"]: r for r in rep.per_layer}
    assert rep.unknown_modules == []
    assert rows["select"]["flops"] == 18 and rows["select"]["params"] == 0    # x * indexes: 1 per element
    assert rows["<model>"]["flops"] == 18 and rows["<model>"]["params"] == 1  # * scale, applied functionally
    assert rows["<model>"]["note"]
    assert rep.flops == 2 * 4 * 9 + 18 + 18
    assert count_flops(_Scaled(), (1, 2, 3, 3)).flops == 2 * 4 * 9  # MACs convention: only the 1x1 conv


class _Masked(nn.Module):
    """A weight computed from parameters only (like torch.nn.utils.prune's weight_orig * mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(3, 2, 1, 1) + 0.1)
        self.register_buffer("mask", torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight * self.mask)


def test_ops_on_parameters_only_are_free_and_computed_weights_are_sparse_aware():
    rep = count_flops(_Masked(), (1, 2, 4, 4), convention="all-ops", sparse=True)
    assert rep.macs == 4 * 16                 # 2 of the 3 filters survive the mask: 4 non-zero weights x 16
    assert rep.flops == 2 * 4 * 16            # the weight * mask product does not depend on the input: 0
    assert count_flops(_Masked(), (1, 2, 4, 4)).macs == 6 * 16


def test_uncalled_module_listed_with_zero_cost():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.unused = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    rows = {r["name"]: r for r in count_flops(Net(), (1, 3)).per_layer}
    assert rows["unused"]["calls"] == 0 and rows["unused"]["macs"] == 0 and rows["unused"]["output_shape"] is None


def test_count_flops_restores_each_module_mode():
    net = _tiny_net()
    net.train()
    net[1].eval()  # a frozen BN inside a training model must stay frozen
    count_flops(net, (1, 3, 8, 8))
    assert net.training and net[0].training and not net[1].training


def test_bad_input_size_and_convention_raise_user_errors():
    with pytest.raises(PrunekitError, match="input_size"):
        count_flops(_tiny_net(), (1, 3, 0, 8))
    with pytest.raises(PrunekitError, match=r"\[1, 5, 8, 8\]"):
        count_flops(_tiny_net(), (1, 5, 8, 8))
    with pytest.raises(PrunekitError, match="batch dimension"):
        count_flops(_tiny_net(), (3, 8, 8))  # would silently run as one unbatched sample
    with pytest.raises(PrunekitError, match="'gmacs'"):
        count_flops(_tiny_net(), (1, 3, 8, 8), convention="gmacs")


# ---------------------------------------------------------------- tables and summaries


def test_layer_table_rows_dense_and_sparse():
    net = _tiny_net()
    with torch.no_grad():
        net[6].weight[0] = 0.0  # 64 weights of the last layer
    rows = layer_table(net, (1, 3, 8, 8), convention="rethinking")
    assert [r["type"] for r in rows] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Linear"]
    fc = rows[-1]
    assert (fc["params"], fc["nonzero_params"]) == (325, 261)
    assert (fc["macs"], fc["sparse_macs"], fc["flops"], fc["sparse_flops"]) == (320, 256, 645, 517)
    assert rows[0]["output_shape"] == [1, 4, 8, 8]


def test_summarize_keys_and_values():
    net = _tiny_net()
    with torch.no_grad():
        net[0].weight[0] = 0.0
    s = summarize(net, (1, 3, 8, 8))
    assert s == {"params": 112 + 8 + 325, "nonzero_params": 445 - 27, "macs": 7232, "flops": 14464,
                 "sparse_macs": 7232 - 27 * 64, "sparse_flops": 2 * (7232 - 27 * 64), "flops_convention": "macs"}


def test_format_count():
    assert format_count(20035018) == "20.04M"
    assert format_count(1.2e9) == "1.20G"
    assert format_count(999_999) == "1.00M"
    assert format_count(853018) == "853.02K"
    assert format_count(512) == "512"
    assert format_count(None) == "-"


# ---------------------------------------------------------------- latency


def test_latency_positive_and_restores_mode_and_rng():
    net = _tiny_net()
    net.train()
    rng = torch.get_rng_state()
    rep = measure_latency(net, (3, 8, 8), batch_size=2, warmup=1, repeats=3, threads=1)
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(rng, torch.get_rng_state())
    assert rep.median_ms > 0 and rep.mean_ms > 0 and rep.p90_ms >= rep.median_ms and rep.std_ms >= 0
    assert (rep.batch_size, rep.repeats, rep.device, rep.threads) == (2, 3, "cpu", 1)


def test_latency_rejects_bad_arguments():
    with pytest.raises(PrunekitError, match="repeats"):
        measure_latency(_tiny_net(), (3, 8, 8), repeats=0)
    with pytest.raises(PrunekitError, match="input_size"):
        measure_latency(_tiny_net(), (3, -8, 8))


# ---------------------------------------------------------------- input-size checks and runtimes (issues 9, 12)

class _Buggy(nn.Module):
    """A model with a real bug after its first layer: must keep its own exception and traceback."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.view(y.shape[0], 7, -1)  # 4*H*W is not a multiple of 7 here: a RuntimeError of the model's own


@pytest.mark.parametrize("measure", ["flops", "latency"])
def test_wrong_input_sizes_are_named_up_front(measure):
    def run(model, size):
        if measure == "flops":
            return count_flops(model, (1, *size))
        return measure_latency(model, size, warmup=0, repeats=1)

    with pytest.raises(PrunekitError, match=r"first layer 0 \(Conv2d\) 5 input channels; it takes 3"):
        run(_tiny_net(), (5, 8, 8))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    with pytest.raises(PrunekitError, match=r"first layer 1 \(Linear\) 27 input features; it takes 12"):
        run(mlp, (3, 3, 3))
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
    with pytest.raises(PrunekitError, match=r"too small: layer 2 \(MaxPool2d\) gets a spatial size of 1x1"):
        run(small, (3, 3, 3))  # 3x3 -> conv 1x1 -> pool(2) cannot
    with pytest.raises(PrunekitError, match=r"too small: layer 0 \(Conv2d\) gets a spatial size of 2x5"):
        run(small, (3, 2, 5))
    run(nn.Sequential(nn.AvgPool2d(2, ceil_mode=True), nn.Conv2d(3, 2, 1)), (3, 1, 1))  # ceil mode: 1x1 is fine
    with pytest.raises(PrunekitError, match="more than the 268,435,456"):
        run(_tiny_net(), (3, 100000, 100000))  # refused before anything is allocated
    with pytest.raises(RuntimeError, match="invalid for input of size") as info:
        run(_Buggy(), (3, 5, 5))
    assert not isinstance(info.value, PrunekitError)


def test_latency_runtimes_and_their_errors(monkeypatch):
    import sys

    from prunekit.errors import UnknownNameError

    net = _tiny_net()
    with pytest.raises(UnknownNameError, match="unknown latency runtime 'tensorrt'"):
        measure_latency(net, (3, 8, 8), runtime="tensorrt")

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(PrunekitError, match="runtime compile: torch.compile does not work.*no C\\+\\+ compiler"):
        measure_latency(net, (3, 8, 8), runtime="compile", repeats=1)
    monkeypatch.undo()
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "onnxruntime", None)
        with pytest.raises(PrunekitError, match=r"pip install prunekit\[onnx\].*onnxruntime not installed"):
            measure_latency(net, (3, 8, 8), runtime="onnxruntime")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rep = measure_latency(net, (3, 8, 8), batch_size=2, warmup=1, repeats=3, threads=1, runtime="onnxruntime")
    assert rep.runtime == "onnxruntime" and rep.median_ms > 0 and rep.threads == 1
    if not torch.cuda.is_available():
        with pytest.raises(PrunekitError, match="CUDA is not available"):
            measure_latency(net, (3, 8, 8), runtime="onnxruntime", device="cuda")
