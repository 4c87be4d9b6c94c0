"""fold_selections (issue 12): channel selections absorbed into their consumer or moved in front of their
BatchNorm, exactly, on slimmed zoo models and hand-made graphs; what export does with them."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.deploy import fold_selections
from prunekit.models import create_model
from prunekit.models.layers import ChannelSelection
from prunekit.pruning.structured.verify import randomize_bn

TOL = 1e-5


@lru_cache(maxsize=None)
def _slim(name: str) -> nn.Module:
    from prunekit.pruning.structured.slimming import prune_slimming

    model = randomize_bn(create_model(name, num_classes=10), 0).eval()
    return prune_slimming(model, 0.4).model.eval()


def _rel(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return float((ya - yb).abs().max()) / max(1.0, float(yb.abs().max()))


def _selections(m: nn.Module) -> list[ChannelSelection]:
    return [s for s in m.modules() if isinstance(s, ChannelSelection) and not s.all_kept]


@pytest.mark.parametrize("name", ["preresnet164", "densenet40"])
@pytest.mark.parametrize("absorb", [True, False, "auto"])
def test_slimmed_zoo_models_fold_exactly(name, absorb):
    model = _slim(name)
    n_sel = len(_selections(model))
    assert n_sel > 10
    x = torch.randn(2, 3, 32, 32)
    folded = fold_selections(model, x, absorb=absorb)
    assert _rel(folded, model, torch.randn(3, 3, 32, 32)) <= TOL
    acts = [d["action"] for d in folded.prunekit_folded]
    # every selection of these models is BN -> select -> ReLU -> one conv (or pool -> fc): each one is rewritten
    assert acts.count("absorbed") + acts.count("moved before") == n_sel
    if absorb is True:
        assert not _selections(folded) and acts.count("absorbed") == n_sel
    if absorb is False:
        assert acts.count("moved before") == n_sel
        # the BN before each gather now has the kept width only
        blk = folded.layer1[0] if name == "preresnet164" else folded.dense1[0]
        assert isinstance(blk.bn1, nn.Sequential) and blk.bn1[1].num_features == blk.conv1.in_channels
    assert len(_selections(model)) == n_sel  # the model itself is untouched


def test_absorb_zero_pads_the_consumer_and_auto_weighs_its_extra_macs():
    sel = ChannelSelection(8)
    sel.set_kept([0, 3, 4, 7])
    conv = nn.Conv2d(4, 5, 1, bias=False)
    m = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), sel, nn.ReLU(), conv,
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten()), 0).eval()
    x = torch.randn(2, 3, 6, 6)
    folded = fold_selections(m, x, absorb="auto")  # 4 dropped x 5 outputs = 20 extra MACs/pixel <= 32 x 8
    assert isinstance(folded[2], nn.Identity) and folded[4].in_channels == 8
    w = folded[4].weight[:, :, 0, 0]
    assert torch.equal(w[:, [0, 3, 4, 7]], conv.weight[:, :, 0, 0]) and not w[:, [1, 2, 5, 6]].any()
    assert _rel(folded, m, x) <= TOL
    wide = nn.Conv2d(4, 300, 3, padding=1, bias=False)  # 4 x 300 x 9 extra MACs/pixel > 32 x 8: moved instead
    m2 = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), sel, nn.ReLU(), wide), 1)
    f2 = fold_selections(m2.eval(), x)
    assert [d["action"] for d in f2.prunekit_folded] == ["moved before"] and _rel(f2, m2, x) <= TOL


def test_a_selection_read_twice_or_not_fed_by_a_bn_stays():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(6)
            self.sel = ChannelSelection(6, kept=3)
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.sel(x + self.bn(x))  # not fed by the BN alone
            return self.a(y) + self.b(y)  # and read by two layers

    m = randomize_bn(Two(), 0).eval()
    x = torch.randn(2, 6, 5, 5)
    folded = fold_selections(m, x)
    assert folded.prunekit_folded == [] and isinstance(folded.sel, ChannelSelection) and _rel(folded, m, x) <= TOL
    with pytest.raises(prunekit.PrunekitError, match="absorb must be"):
        fold_selections(m, x, absorb="yes")


def test_a_mask_variant_model_only_loses_its_identity_selections():
    """Mask slimming removes nothing: every selection keeps all channels and becomes nn.Identity."""
    from prunekit.pruning.structured.slimming import prune_slimming_mask

    model = randomize_bn(create_model("densenet40", num_classes=10), 0).eval()
    masked, _, _ = prune_slimming_mask(model, 0.4)
    folded = fold_selections(masked.eval())
    assert {d["action"] for d in folded.prunekit_folded} == {"identity"}
    assert not any(isinstance(m, ChannelSelection) for m in folded.modules())
    assert _rel(folded, masked, torch.randn(2, 3, 32, 32)) <= TOL


def test_export_folds_selections_and_stays_exact(tmp_path):
    model = _slim("preresnet164")
    part = nn.Sequential(model.conv1, model.layer1[0], model.layer2[0], model.layer3[0], model.bn, model.select,
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc).eval()
    res = prunekit.export(part, tmp_path / "m.pt2", "exported-program", (3, 16, 16), dynamic_batch=False)
    assert res.selections and res.max_abs_diff <= TOL * max(1.0, res.max_abs_ref)
    assert any("channel selections:" in n for n in res.notes)
    gathers = [n for n in res.loaded.graph.nodes if "index_select" in str(n.target)]
    moved = sum(d["action"] == "moved before" for d in res.selections)
    assert len(gathers) == moved  # absorbed selections leave no gather
    plain = prunekit.export(part, tmp_path / "p.pt2", "exported-program", (3, 16, 16), dynamic_batch=False,
                            fold_select=False)
    assert plain.selections == [] and plain.max_abs_diff <= TOL * max(1.0, plain.max_abs_ref)


def test_onnx_export_of_a_folded_slimming_block_has_no_gather(tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    sel = ChannelSelection(8)
    sel.set_kept([0, 3, 4, 7])
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), sel, nn.ReLU(),
                                       nn.Conv2d(4, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 0).eval()
    res = prunekit.export(model, tmp_path / "sel.onnx", "onnx", (3, 8, 8), dynamic_batch=False)
    ops = {n.op_type for n in onnx.load(res.path).graph.node}
    assert not ops & {"Gather", "NonZero"} and res.max_abs_diff <= TOL * max(1.0, res.max_abs_ref), ops


def test_bench_deploy_quick_runs_one_tiny_case(tmp_path, capsys):
    """benchmarks/bench_deploy.py --quick on the tiny LeNet-5 case: one table, a JSON file whose numbers agree."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_deploy.py"
    spec = importlib.util.spec_from_file_location("bench_deploy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    try:
        import onnxruntime  # noqa: F401
        runtimes = "eager,onnxruntime"
    except ImportError:
        runtimes = "eager"
    out = tmp_path / "b.json"
    assert bench.main(["--quick", "--cases", "lenet5 30% channels", "--batch-sizes", "1", "--runtimes", runtimes,
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| lenet5 30% channels" in text and "eager b1" in text
    case = json.loads(out.read_text())["cases"][0]
    assert case["macs_ratio"] == pytest.approx(case["macs_dense"] / case["macs_pruned"]) and case["macs_ratio"] > 1
    for key in (f"{rt}@1" for rt in runtimes.split(",")):
        r = case["results"][key]
        assert r["speedup"] > 0 and r["of_macs"] == pytest.approx(r["speedup"] / case["macs_ratio"])


def test_bench_pad_compares_padded_with_unpadded_on_a_tiny_case(tmp_path, capsys):
    """benchmarks/bench_pad.py on LeNet-5 (20/50/500 at 30%: 14/35/350; conv1 14 -> 16 and fc1 350 -> 352 are
    padded, conv2's 35 feeds a flatten and stays): both graphs have the MACs hand-counted from those widths, and the
    table shows their ratio."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(bench_dir))  # bench_pad imports bench_deploy as the script would
    try:
        spec = importlib.util.spec_from_file_location("bench_pad", bench_dir / "bench_pad.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        out = tmp_path / "p.json"
        assert bench.main(["--cases", "lenet5 30% channels", "--runtimes", "eager", "--batch-sizes", "1",
                           "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    finally:
        sys.path.remove(str(bench_dir))
    case = json.loads(out.read_text())["cases"][0]

    def macs(c1, c2, h):  # conv1 5x5 on 28x28 -> 24x24, conv2 5x5 on 12x12 -> 8x8, fc1 (c2·4·4 -> h), fc2 (h -> 10)
        return 24 * 24 * 25 * c1 + 8 * 8 * 25 * c1 * c2 + c2 * 16 * h + h * 10

    assert (case["macs_unpadded"], case["macs_padded"]) == (macs(14, 35, 350), macs(16, 35, 352))
    assert case["groups_padded"] == 2 and case["results"]["eager@1"]["speedup"] > 0
    assert f"{macs(16, 35, 352) / macs(14, 35, 350):.3f}" in capsys.readouterr().out


def test_as_deployed_shapes_a_slimmed_model_for_onnxruntime_only():
    """as_deployed: onnxruntime gets the export's padding (8) and folded selections, exactly; the torch runtimes
    get the model itself."""
    from prunekit.deploy import as_deployed

    model = _slim("vgg11")
    assert as_deployed(model, "eager") is model and as_deployed(model, "compile") is model
    x = torch.randn(2, 3, 32, 32)
    ort = as_deployed(model, "onnxruntime", x)
    convs = [m.out_channels for m in ort.modules() if isinstance(m, nn.Conv2d)]
    assert convs != [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in convs) and _rel(ort, model, x) <= TOL
