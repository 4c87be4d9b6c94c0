"""Latency-targeted structured pruning (:mod:`prunekit.pruning.structured.latency_target`).

Most tests inject a deterministic latency model (MACs of every conv/linear + a per-layer and a per-call constant),
for which the lookup-table prediction is exact, so the algorithm must meet the target with the least pruning. One
test measures for real on a small CNN with a loose tolerance.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from prunekit.errors import PrunekitError, UnknownNameError
from prunekit.pruning.structured import latency_target as LT
from prunekit.pruning.structured import prune_to_latency
from prunekit.pruning.structured.latency_target import parse_latency_target

SIZE = (3, 16, 16)


class TinyNet(nn.Module):
    """conv-bn-relu stem, a residual pair, a plain conv, a depthwise conv, a linear head."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
                               nn.Conv2d(2 * w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w))
        self.b = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1, groups=2 * w), nn.ReLU())
        self.fc = nn.Linear(2 * w * 8 * 8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = self.dw(self.b(x))
        return self.fc(torch.flatten(x, 1))


def fake_latency(module: nn.Module, shape) -> float:
    """0.5 ms per call + 0.02 ms per conv/linear call + 1e-6 ms per MAC (batch included)."""
    macs, calls = [0.0], [0]

    def hook(m, args, out):
        calls[0] += 1
        if isinstance(m, nn.Linear):
            macs[0] += out.numel() * m.in_features
        else:
            macs[0] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    hooks = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            module(torch.zeros(shape))
    finally:
        for h in hooks:
            h.remove()
    return 0.5 + 0.02 * calls[0] + 1e-6 * macs[0]


def _model(seed: int = 0, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet(width).eval()


def _prune(target, **kw):
    model = _model()
    res = prune_to_latency(model, input_size=SIZE, target=target, latency_fn=fake_latency, **kw)
    return model, res, res.info["latency_target"]


@pytest.mark.parametrize("batch", [1, 4])
def test_the_target_is_met_with_the_least_pruning_and_the_removal_is_exact(batch):
    model, res, lt = _prune(0.6, batch_size=batch, rel_tol=0.0)
    shape = (batch, *SIZE)
    dense = fake_latency(model, shape)
    assert lt["dense_ms"] == pytest.approx(dense, rel=1e-6)
    got = fake_latency(res.model, shape)
    assert lt["measured_ms"] == [pytest.approx(got, rel=1e-6)] * 2
    assert got <= 0.6 * dense + 1e-9 and lt["target_met"] and lt["within_5pct"]
    # the lookup table is exact for this cost model: prediction = measurement
    assert lt["predicted_ms"] == pytest.approx(got, rel=1e-6)
    # the least pruning: one unit fewer (the neighbour in the ranking) misses the target
    assert any(it["k"] == lt["k"] - 1 and not it["feasible"] for it in lt["iterations"])
    assert len(lt["iterations"]) <= 3
    assert res.info["rel_diff"] <= 1e-5
    assert lt["macs_after"] < lt["macs_before"] and lt["params_after"] < lt["params_before"]
    assert res.model.prunekit_plan["groups"]


def test_tighter_targets_give_monotonically_faster_smaller_models():
    lats, macs = [], []
    for t in (0.9, 0.75, 0.6, 0.45, 0.3):
        _, res, lt = _prune(t)
        assert lt["measured_ms"][0] <= lt["target_ms"] + 1e-9
        lats.append(lt["measured_ms"][0])
        macs.append(lt["macs_after"])
    assert lats == sorted(lats, reverse=True) and len(set(lats)) == len(lats)
    assert macs == sorted(macs, reverse=True)


def test_a_target_in_milliseconds_and_round_to():
    dense = fake_latency(_model(), (1, *SIZE))
    _, res, lt = _prune(f"{0.7 * dense:.6f}ms", round_to=4)
    assert lt["target_given"] == {"ms": pytest.approx(0.7 * dense, rel=1e-5)}
    assert lt["measured_ms"][0] <= lt["target_ms"] + 1e-9
    convs = [m for m in res.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.out_channels % 4 == 0 for m in convs)


@pytest.mark.parametrize("text,expected", [
    (0.6, ("fraction", 0.6)), ("0.25", ("fraction", 0.25)), ("12ms", ("ms", 12.0)), ("12 MS", ("ms", 12.0)),
    ("0.5s", ("ms", 500.0)), ("800us", ("ms", 0.8)), ("1.5e1ms", ("ms", 15.0)),
])
def test_target_parsing(text, expected):
    kind, value = parse_latency_target(text)
    assert kind == expected[0] and value == pytest.approx(expected[1])


@pytest.mark.parametrize("bad", [0, 0.0, 1.0, 1.5, -0.2, "abc", "5 parsecs", "0ms", "-3ms", "nan", "ms", True, None,
                                 [0.5]])
def test_bad_targets_are_user_errors(bad):
    with pytest.raises(PrunekitError):
        prune_to_latency(_model(), input_size=SIZE, target=bad, latency_fn=fake_latency)


def test_a_target_above_the_dense_latency_and_an_unreachable_target_are_clear_errors():
    dense = fake_latency(_model(), (1, *SIZE))
    with pytest.raises(PrunekitError, match="already runs"):
        _prune(f"{2 * dense}ms")
    with pytest.raises(PrunekitError, match=r"cannot reach the target latency .* measures [0-9.]+ ms") as e:
        _prune(0.05)
    assert "max_group_ratio=0.9" in str(e.value)


def test_bad_options_are_user_errors():
    with pytest.raises(UnknownNameError, match="unknown latency runtime"):
        _prune(0.6, runtime="tensorrt")
    with pytest.raises(UnknownNameError):
        _prune(0.6, criterion="magic")
    with pytest.raises(PrunekitError, match="taylor"):
        _prune(0.6, criterion="taylor")
    with pytest.raises(PrunekitError, match="batch_size"):
        _prune(0.6, batch_size=0)
    with pytest.raises(PrunekitError, match="max_group_ratio"):
        _prune(0.6, max_group_ratio=1.0)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        with pytest.raises(PrunekitError, match="onnxruntime"):
            prune_to_latency(_model(), input_size=SIZE, target=0.6, runtime="onnxruntime")


def test_the_lookup_table_times_each_layer_configuration_once_along_the_prunable_widths():
    calls = []

    def counting(m, shape):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            calls.append((type(m).__name__, tuple(shape), out, getattr(m, "groups", 1), getattr(m, "stride", None),
                          m.bias is not None))
        return fake_latency(m, shape)

    prune_to_latency(_model(), input_size=SIZE, target=0.6, latency_fn=counting)
    assert len(calls) == len(set(calls))
    stem = [c for c in calls if c[1] == (1, 3, 16, 16)]  # the model's input is fixed: output widths only
    assert sorted(c[2] for c in stem) == [4, 8, 12, 16]
    fc = [c for c in calls if c[0] == "Linear"]  # the logits are fixed: input widths only
    assert {c[2] for c in fc} == {10} and len(fc) == 4
    dw = [c for c in calls if c[3] > 1]  # depthwise: one tied width
    assert sorted(c[2] for c in dw) == [8, 16, 24, 32] and all(c[1][1] == c[3] == c[2] for c in dw)


def test_real_measurement_on_a_small_cnn_meets_the_target_loosely():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(),
                          nn.Conv2d(48, 96, 3, padding=1), nn.BatchNorm2d(96), nn.ReLU(),
                          nn.Conv2d(96, 96, 3, padding=1), nn.BatchNorm2d(96), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10)).eval()
    res = prune_to_latency(model, input_size=(3, 32, 32), target=0.6, batch_size=4, threads=1, repeats=7,
                           max_iters=5)
    lt = res.info["latency_target"]
    assert lt["runtime"] == "eager" and lt["threads"] == 1 and lt["lut_timings"] > 0
    assert min(lt["measured_over_target"]) <= 1.35  # loose: the machine is shared
    assert lt["macs_after"] < 0.9 * lt["macs_before"]
    assert res.info["rel_diff"] <= 1e-5


# ---------------------------------------------------------------------------------------------------------------
# CLI

FAST = ["--latency-batch-sizes", "1", "--latency-repeats", "1"]


@pytest.mark.parametrize("argv,message", [
    (["--target-latency", "0.6", "--ratio", "0.3"], "give one of"),
    (["--target-latency", "0.6", "--target-macs", "0.5"], "give one of"),
    (["--target-latency", "fast"], "target latency must be"),
    (["--target-latency", "1.2"], "must be in (0.0, 1.0)"),
    (["--target-latency", "0ms"], "positive time"),
    (["--target-latency", "0.6", "--latency-runtime", "tensorrt"], "--latency-runtime must be one of"),
    (["--target-latency", "0.6", "--latency-batch", "0"], "--latency-batch must be"),
    (["--ratio", "0.3", "--latency-runtime", "eager"], "go with --target-latency"),
    (["--plan", "resnet56-A", "--latency-batch", "8"], "go with --target-latency"),
    (["--target-latency", "0.6", "--plan", "resnet56-A"], "do not combine"),
    (["--target-latency", "0.6", "--criterion", "taylor"], "not taylor"),
])
def test_bad_latency_flags_are_one_line_errors(argv, message, tmp_path, capsys):
    from prunekit.cli import main

    assert main(["prune", "--model", "resnet20", "--method", "l1-filter", *argv, "--out", str(tmp_path / "x"),
                 *FAST]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prunekit: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_slimming_does_not_take_a_latency_target(tmp_path, capsys):
    from prunekit.cli import main

    assert main(["prune", "--model", "resnet20", "--method", "slimming", "--target-latency", "0.6",
                 "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "applies to --method structured" in capsys.readouterr().err


def test_cli_target_latency_end_to_end_with_a_fake_runtime(tmp_path, capsys, monkeypatch):
    from prunekit import load_model
    from prunekit.cli import main

    seen = {}

    def fake_default(runtime, device, threads, repeats, warmup):
        seen.update(runtime=runtime, threads=threads)
        return fake_latency, fake_latency, LT._fn_pair(fake_latency)

    monkeypatch.setattr(LT, "_default_latency_fn", fake_default)
    out = tmp_path / "lat"
    assert main(["prune", "--model", "resnet20", "--method", "l1-filter", "--target-latency", "0.6",
                 "--latency-batch", "2", "--latency-threads", "1", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert seen == {"runtime": "eager", "threads": 1}
    assert "target latency:" in printed and "measured latency:" in printed and "MACs " in printed
    s = json.loads((out / "summary.json").read_text())
    lt = s["info"]["latency_target"]
    assert lt["batch_size"] == 2 and lt["target_fraction"] == pytest.approx(0.6) and lt["target_met"]
    assert lt["measured_ms"][0] <= lt["target_ms"] + 1e-9
    report = (out / "structured_report.md").read_text()
    assert "target latency:" in report and "params" in report
    back = load_model(out)
    assert fake_latency(back, (2, 3, 32, 32)) == pytest.approx(lt["measured_ms"][0], rel=1e-6)


def test_measure_pair_times_two_models_interleaved():
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).train()
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)).train()
    a, b, ratio = LT.measure_pair(small, big, (2, 3, 32, 32), repeats=6, warmup=1, threads=1)
    assert a > 0 and b > 0 and ratio > 1.5  # ~60x the MACs
    assert small.training and big.training  # train/eval flags restored


def test_each_runtime_times_the_models_and_the_layer_table_where_documented(monkeypatch):
    """onnxruntime: models and layer table in ONNX Runtime; compile: models compiled, the table eager; the device
    and threads reach every measurement; a missing onnxruntime is one clear error."""
    import sys

    import prunekit.metrics as M

    seen = []

    def fake_measure(m, size, *, batch_size, warmup, repeats, device, threads, runtime):
        seen.append((runtime, device, threads, batch_size))
        return M.LatencyReport(1.0, 1.0, 1.0, 0.0, batch_size, str(device), repeats, threads or 1, runtime)

    monkeypatch.setattr(M, "measure_latency", fake_measure)
    conv = nn.Conv2d(3, 4, 3)
    for runtime, table_runtime in (("eager", "eager"), ("compile", "eager"), ("onnxruntime", "onnxruntime")):
        if runtime == "onnxruntime":
            pytest.importorskip("onnxruntime")
            pytest.importorskip("onnx")
        seen.clear()
        model_fn, layer_fn, _ = LT._default_latency_fn(runtime, "cpu", 1, 3, 1)
        model_fn(conv, (2, 3, 8, 8))
        layer_fn(conv, (2, 3, 8, 8))
        assert seen == [(runtime, "cpu", 1, 2), (table_runtime, "cpu", 1, 2)]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PrunekitError, match=r"--latency-runtime onnxruntime: .*pip install prunekit\[onnx\]"):
        LT._default_latency_fn("onnxruntime", None, None, 3, 1)


def test_measure_pair_on_onnxruntime():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    small = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    a, b, ratio = LT.measure_pair(small, big, (2, 3, 16, 16), repeats=5, warmup=1, threads=1, runtime="onnxruntime")
    assert 0 < a and 0 < b and ratio > 1  # ~200x the MACs


def test_onnxruntime_candidates_are_measured_as_the_export_ships_them(monkeypatch):
    """On onnxruntime every whole-model candidate is measured padded to multiples of 8 (the ONNX export default)
    and the dense model as it is; the result is the unpadded model (the checkpoint)."""
    measured, shaped = [], []

    def widths(m):
        return sorted({c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups == 1})

    def model_fn(m, shape):
        measured.append(widths(m))
        return fake_latency(m, shape)

    def pair_fn(a, b, shape):
        da, db = model_fn(a, shape), model_fn(b, shape)
        return da, db, db / da

    real = LT.as_deployed

    def spy(m, *a, **k):
        out = real(m, *a, **k)
        shaped.append((widths(m), widths(out)))
        return out

    monkeypatch.setattr(LT, "_default_latency_fn", lambda *a, **k: (model_fn, fake_latency, pair_fn))
    monkeypatch.setattr(LT, "as_deployed", spy)
    torch.manual_seed(0)
    model = TinyNet(20).eval()  # widths 20 and 40: pruned widths land off multiples of 8
    res = prune_to_latency(model, input_size=SIZE, target=0.6, runtime="onnxruntime", repeats=1, rounds=1)
    dense = widths(model)
    assert shaped and all(v % 8 == 0 for _, after in shaped for v in after), shaped
    assert any(v % 8 for before, _ in shaped for v in before)  # some candidate really was padded
    assert [w for w in measured if w != dense] == [after for _, after in shaped]  # what was timed is the shaped one
    assert widths(res.model) in [before for before, _ in shaped]  # the result is a candidate as pruned
    shaped.clear()
    prune_to_latency(model, input_size=SIZE, target=0.6, latency_fn=fake_latency, runtime="onnxruntime")
    assert not shaped  # a latency_fn replaces the runtime: nothing to shape for
