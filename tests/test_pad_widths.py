"""Zero-padding pruned widths to hardware multiples (pruning.structured.pad): exact, and only where it is safe."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.pruning.structured.pad import pad_widths
from prunekit.pruning.structured.verify import randomize_bn

# A zero-padded conv computes the same function, but not the same float sum: oneDNN picks its kernel (and so the
# order of the accumulation) by channel count and CPU, so padded and unpadded outputs agree to rounding, not bit for
# bit (7e-9 on an AVX-512 EPYC, 1.5e-8 with ATEN_CPU_CAPABILITY=default). A padded channel that leaked a value would
# be off by O(1); float32 reordering over these few hundred terms stays below 1e-6 of the output's scale.
REL = 1e-6


def _same_function(a: torch.Tensor, b: torch.Tensor, rel: float = REL) -> bool:
    """max |a - b| within ``rel`` of b's scale (at least 1)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= rel * max(1.0, float(b.abs().max()))


class Chain(nn.Module):
    """conv(3->5) -> BN -> ReLU -> conv(5->7) -> BN -> ReLU -> pool -> linear(7->4): widths 5 and 7 by hand."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.c2, self.b2 = nn.Conv2d(5, 7, 3, padding=1), nn.BatchNorm2d(7)
        self.fc = nn.Linear(7, 4)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


def test_a_plain_chain_is_padded_to_the_multiple_and_computes_the_same_function():
    torch.manual_seed(0)
    model = randomize_bn(Chain(), seed=1).eval()
    padded = pad_widths(model, 4, input_size=(3, 8, 8))
    # 5 -> 8 and 7 -> 8 (ceil to a multiple of 4); the classifier's 4 outputs stay (no consumer)
    assert (padded.c1.out_channels, padded.b1.num_features, padded.c2.in_channels) == (8, 8, 8)
    assert (padded.c2.out_channels, padded.b2.num_features, padded.fc.in_features, padded.fc.out_features) == \
        (8, 8, 8, 4)
    assert sorted((p["from"], p["to"]) for p in padded.prunekit_padded) == [(5, 8), (7, 8)]
    x = torch.randn(3, 3, 8, 8)
    assert _same_function(padded(x), model(x))  # zeros added: the same function, summed in another order
    assert model.c1.out_channels == 5, "the caller's model is not touched"


def test_residual_streams_are_padded_alike_and_option_a_shortcuts_are_left_alone():
    torch.manual_seed(0)
    r50 = prunekit.prune_structured(prunekit.create_model("resnet50"), ratio=0.3).model.eval()
    p = pad_widths(r50, 8)
    assert p.prunekit_padded and not p.prunekit_pad_skipped
    widths = [m.out_channels for m in p.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths)
    x = torch.randn(1, 3, 64, 64)
    assert (p(x) - r50(x)).abs().max() <= 1e-5 * r50(x).abs().max()
    r20 = prunekit.prune_structured(prunekit.create_model("resnet20"), ratio=0.3).model.eval()
    q = pad_widths(r20, 8)
    assert any("custom" in s["why"] for s in q.prunekit_pad_skipped)  # the zero-padding shortcut's stream
    y = torch.randn(2, 3, 32, 32)
    assert _same_function(q(y), r20(y))


def test_pad_to_is_checked_and_export_pads_exactly(tmp_path):
    model = Chain().eval()
    with pytest.raises(PrunekitError, match="multiple"):
        pad_widths(model, 0, input_size=(3, 8, 8))
    res = prunekit.export(model, tmp_path, format="torchscript", input_size=(3, 8, 8), pad_to=4)
    assert res.max_abs_diff <= REL * max(1.0, res.max_abs_ref) and any("padded 2 channel groups to multiples of 4" in n for n in res.notes)


def test_onnx_export_pads_structurally_pruned_models_to_8_by_default_and_nothing_else(tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    torch.manual_seed(0)
    small = prunekit.prune_structured(randomize_bn(Chain(), seed=1).eval(), input_size=(3, 8, 8), ratio=0.3).model
    assert (small.c1.out_channels, small.c2.out_channels) == (3, 4)  # floor(5·0.7), floor(7·0.7)

    def conv_widths(path):
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
        return sorted(inits[n.input[1]].shape[0] for n in onnx.load(path).graph.node if n.op_type == "Conv")

    res = prunekit.export(small, tmp_path / "d.onnx", "onnx", (3, 8, 8), dynamic_batch=False)
    assert conv_widths(res.path) == [8, 8] and any("the ONNX default" in n for n in res.notes)
    assert res.max_abs_diff <= 1e-5 * max(1.0, res.max_abs_ref)
    off = prunekit.export(small, tmp_path / "n.onnx", "onnx", (3, 8, 8), dynamic_batch=False, pad_to=1)
    assert conv_widths(off.path) == [3, 4] and not any("padded" in n for n in off.notes)
    script = prunekit.export(small, tmp_path / "s.pt", "torchscript", (3, 8, 8))
    assert not any("padded" in n for n in script.notes)  # the torch formats keep the pruned widths
    dense = prunekit.export(Chain().eval(), tmp_path / "dense.onnx", "onnx", (3, 8, 8), dynamic_batch=False)
    assert conv_widths(dense.path) == [5, 7]  # an unpruned model is exported as it is
