"""Export (issue 12): ChannelSelection without data-dependent shapes, ONNX / TorchScript / torch.export round trips
of every zoo family (dense, slimmed, structurally pruned), BatchNorm folding, missing runtimes, the CLI."""
from __future__ import annotations

import json
import sys
from functools import lru_cache

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.models.layers import ChannelSelection
from prunekit.pruning.structured.verify import randomize_bn

from prunekit import deploy as EXPORT  # prunekit.export is the function; the module is prunekit.deploy
TOL = 1e-5


@lru_cache(maxsize=None)
def _family(key: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """One representative model per zoo family (eval mode, random BN statistics) and its input size."""
    from prunekit.pruning.structured import prune_structured
    from prunekit.pruning.structured.slimming import prune_slimming

    torch.manual_seed(0)
    name, _, how = key.partition("@")
    size = (3, 64, 64) if name in ("resnet18", "mobilenet_v2") else (1, 28, 28) if name == "lenet5" else (3, 32, 32)
    model = randomize_bn(create_model(name, num_classes=10, in_channels=size[0]), 0).eval()
    if how == "slim":
        model = prune_slimming(model, 0.4).model.eval()
    elif how == "structured":
        model = prune_structured(model, input_size=size, ratio=0.5).model.eval()
    return model, size


FAMILIES = ["vgg11", "resnet20", "preresnet110", "preresnet164@slim", "densenet40@slim", "wrn_16_8", "lenet5",
            "resnet18", "mobilenet_v2", "resnet20@structured"]


# exporting a dynamic batch costs ~3x the time of a fixed one: the large graphs are exported with a fixed batch here
FIXED_BATCH = {"preresnet110", "preresnet164@slim", "densenet40@slim", "wrn_16_8", "resnet18", "mobilenet_v2"}


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


# ---------------------------------------------------------------------------------------------------------------
# ChannelSelection: static gather, refreshed at every documented moment, checkpoint format unchanged

def test_channel_selection_index_buffer_is_not_saved_and_follows_every_update():
    sel = ChannelSelection(6, kept=4)
    assert list(sel.state_dict()) == ["indexes"] and sel.kept_index.tolist() == [0, 1, 2, 3] and not sel.all_kept
    x = torch.randn(2, 6, 3, 3)
    sel.set_kept([1, 5])
    assert sel.kept_index.tolist() == [1, 5] and torch.equal(sel(x), x[:, [1, 5]])
    sel.load_state_dict({"indexes": torch.ones(6)})  # an old checkpoint: only the float buffer
    assert sel.all_kept and sel(x) is x
    with torch.no_grad():
        sel.indexes[2] = 0.0  # a direct in-place edit is picked up by the next eager forward
    assert torch.equal(sel(x), x[:, [0, 1, 3, 4, 5]]) and sel.kept_index.dtype == torch.long
    sel.indexes = torch.tensor([0.0, 0, 0, 1, 0, 0])  # so is a replacement
    assert torch.equal(sel(x), x[:, [3]])
    sel.to(torch.float64)
    assert sel.kept_index.dtype == torch.long and sel.kept_index.tolist() == [3]


def test_slimmed_checkpoint_reloads_with_the_same_selection(tmp_path):
    model, size = _family("densenet40@slim")
    prunekit.save_model(model, tmp_path)
    back = prunekit.load_model(tmp_path).eval()
    x = torch.randn(2, *size)
    for (n, a), b in zip(((n, m) for n, m in model.named_modules() if isinstance(m, ChannelSelection)),
                         (m for m in back.modules() if isinstance(m, ChannelSelection))):
        assert torch.equal(a.kept_index, b.kept_index) and a.all_kept == b.all_kept, n
    assert any(not m.all_kept for m in back.modules() if isinstance(m, ChannelSelection))
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


# ---------------------------------------------------------------------------------------------------------------
# Round trips: every zoo family, TorchScript and torch.export (ONNX below, when the extra is installed)

@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
@pytest.mark.parametrize("key", FAMILIES)
def test_round_trip_every_family(key, fmt, tmp_path):
    model, size = _family(key)
    dynamic = key not in FIXED_BATCH
    res = prunekit.export(model, tmp_path, fmt, size, dynamic_batch=dynamic)
    assert res.max_abs_diff <= TOL * max(1.0, res.max_abs_ref) and res.dynamic_batch == dynamic
    assert res.path.endswith(".pt" if fmt == "torchscript" else ".pt2") and res.file_bytes > 0
    x = torch.randn(5 if dynamic else 2, *size)  # res.loaded: the file as loaded back from disk by export()
    with torch.no_grad():
        ref = model(x)
        if fmt == "torchscript":
            got = res.loaded(x)
        else:
            assert not [n for n in res.loaded.graph.nodes if "nonzero" in str(n.target)]  # a static gather
            got = res.loaded.module()(x)
    assert _max_rel(got, ref) <= TOL


@pytest.mark.parametrize("key", FAMILIES)
def test_onnx_round_trip_every_family_in_onnxruntime(key, tmp_path):
    """The ONNX file as shipped (selections folded, pruned widths padded to 8 by default) run by a fresh ONNX
    Runtime session gives the PyTorch model's outputs; the pruned families are the ones padding and folding touch."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, size = _family(key)
    dynamic = key not in FIXED_BATCH
    res = prunekit.export(model, tmp_path / "m.onnx", "onnx", size, dynamic_batch=dynamic)
    assert res.max_abs_diff <= TOL * max(1.0, res.max_abs_ref)
    if key == "preresnet164@slim":
        assert any("padded 92 channel groups to multiples of 8" in n for n in res.notes), res.notes
    sess = ort.InferenceSession(res.path, providers=["CPUExecutionProvider"])
    x = torch.randn(3 if dynamic else 2, *size)
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        assert _max_rel(got, model(x)) <= TOL


def test_torch_compile_of_slimmed_preresnet164_does_not_recompile():
    """dynamo captures ChannelSelection as one static gather (fullgraph) and a second input reuses the graph.
    Kept small: the stem, the first block of each stage (all with pruned selections) and the head selection."""
    try:
        from torch._dynamo.utils import counters
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"torch.compile is unavailable: {exc}")
    model, size = _family("preresnet164@slim")
    part = nn.Sequential(model.conv1, model.layer1[0], model.layer2[0], model.layer3[0], model.bn, model.select)
    assert sum(not m.all_kept for m in part.modules() if isinstance(m, ChannelSelection)) >= 3
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(part, backend="eager", fullgraph=True)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2):
            x = torch.randn(2, *size)
            assert torch.equal(compiled(x), part(x))
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------------------------
# ONNX (skipped without `pip install prunekit[onnx]`)

def test_onnx_round_trip_in_onnxruntime_has_no_nonzero(tmp_path):
    """A slimming-style conv -> BN -> selection -> conv exported with its selection kept (the zoo's selection
    models, folded as shipped, are in the family round trip above): one Gather, no NonZero/Shape/Slice chain."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    sel = ChannelSelection(8)
    sel.set_kept([0, 3, 4, 7])
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), sel, nn.ReLU(),
                                       nn.Conv2d(4, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 0).eval()
    res = prunekit.export(model, tmp_path / "sel.onnx", "onnx", (3, 8, 8), latency_batch_sizes=(1, 4), repeats=2,
                          fold_select=False)  # unfolded (folded: tests/test_deploy_fold.py)
    assert res.exporter == "torch.onnx.export(dynamo=True)" and res.dynamic_batch
    assert res.max_abs_diff <= TOL * max(1.0, res.max_abs_ref) and res.latency[4]["runtime_ms"] > 0
    ops = {n.op_type for n in onnx.load(res.path).graph.node}
    assert "Gather" in ops and not ops & {"NonZero", "Shape", "Slice"}, ops


def test_onnx_falls_back_to_the_torchscript_exporter_without_onnxscript(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now fails
    model, size = _family("resnet20")
    res = prunekit.export(model, tmp_path, "onnx", size, latency_batch_sizes=(1,), repeats=2, warmup=1)
    assert res.exporter == "torch.onnx.export(dynamo=False)" and any("dynamo=False" in n for n in res.notes)
    assert res.max_abs_diff <= TOL * max(1.0, res.max_abs_ref) and res.latency[1]["runtime_ms"] > 0


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_missing_onnx_runtime_is_one_clear_error(missing, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` now fails
    with pytest.raises(PrunekitError, match=r"onnx export needs `pip install prunekit\[onnx\]`"):
        prunekit.export(create_model("lenet5"), tmp_path, "onnx")
    assert not list(tmp_path.iterdir())  # nothing written
    assert main(["export", "--model", "lenet5", "--format", "onnx", "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install prunekit[onnx]" in err[0] and missing in err[0]


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm folding

def test_fold_batchnorm_folds_conv_bn_pairs_only_and_keeps_outputs():
    model, size = _family("resnet20")
    x = torch.randn(3, *size)
    folded, pairs = EXPORT.fold_batchnorm(model, x)
    assert len(pairs) == 19 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is untouched
    with torch.no_grad():
        assert _max_rel(folded(x), model(x)) <= TOL

    class Shared(nn.Module):  # conv output also read by the residual: not foldable; bn -> conv: not a pair
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
            self.c2, self.b2 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
            self.b0 = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.c1(self.b0(x))
            return self.b2(self.c2(self.b1(y) + y))

    m = randomize_bn(Shared(), 1).eval()
    folded, pairs = EXPORT.fold_batchnorm(m, torch.randn(2, 3, 8, 8))
    assert pairs == [("c2", "b2")] and isinstance(folded.b1, nn.BatchNorm2d) and isinstance(folded.b2, nn.Identity)


def test_fold_batchnorm_on_a_slimmed_preresnet164():
    model, size = _family("preresnet164@slim")
    x = torch.randn(2, *size)
    folded, pairs = EXPORT.fold_batchnorm(model, x)
    assert len(pairs) == 2 * 54  # conv1 -> bn2 and conv2 -> bn3 of every block; bn1 and the head BN precede convs
    with torch.no_grad():
        assert _max_rel(folded(x), model(x)) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# CLI

def test_cli_export_end_to_end_on_a_checkpoint(tmp_path, capsys):
    model = randomize_bn(create_model("resnet20", in_channels=1), 0)
    prunekit.save_model(model, tmp_path / "ck")
    out = tmp_path / "exp"
    rc = main(["export", "--checkpoint", str(tmp_path / "ck"), "--dataset", "digits",
               "--format", "torchscript,exported-program",
               "--fold-bn", "--latency-batch-sizes", "1,4", "--latency-threads", "1", "--latency-repeats", "2",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| torchscript" in text and "| exported-program" in text and "b4 runtime ms" in text
    assert "folded 19 BatchNorm layers" in text
    s = json.loads((out / "summary.json").read_text())
    for key in ("command", "model", "input_size", "formats", "exports", "params", "nonzero_params", "flops",
                "sparse_flops", "top1", "latency_threads", "fold_bn"):
        assert key in s, key
    assert s["command"] == "export" and s["model"] == "resnet20" and s["input_size"] == [1, 8, 8]  # digits
    assert s["fold_bn"] and s["latency_threads"] == 1
    assert [e["format"] for e in s["exports"]] == ["torchscript", "exported-program"]
    for e in s["exports"]:
        assert e["file_bytes"] > 0 and e["max_abs_diff"] <= TOL and set(e["latency"]) == {"1", "4"}
        assert len(e["folded"]) == 19 and e["fold_max_abs_diff"] <= TOL
        assert e["latency"]["4"]["runtime_ms"] > 0 and e["latency"]["4"]["eager_ms"] > 0
    assert (out / "model.pt").is_file() and (out / "model.pt2").is_file()
    assert main(["export", "--model", "lenet5", "--format", "tflite", "--out", str(out)]) == 2
