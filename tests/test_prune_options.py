"""``prunekit prune``'s typed options: every numeric flag is finite- and range-checked for every method (one-line
error, exit 2, nothing written), empty layers are a clear error, the random filter criterion, and the library's
:func:`prune_and_report` checked against numbers derived by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunekit.cli import main
from prunekit.errors import EmptyLayerError, PrunekitError

WEIGHT_METHODS = ["gp", "layerwise", "global", "random", "gpmt", "per-kind"]
BASE = {m: ["--ratio", "0.5"] for m in WEIGHT_METHODS}
BASE["gpmt"] = ["--ratio", "0.5", "--min-threshold", "1"]
BASE.update({"l1-filter": ["--ratios", "0.5"], "slimming": ["--percent", "0.3"],
             "slimming-mask": ["--percent", "0.3"]})
METHODS = list(BASE)

# flag -> bad values beyond nan/inf/-inf (out of range; non-integers for integer flags)
BAD = {
    "--ratio": ["1.5", "-0.1"],
    "--min-threshold": ["-1", "101"],
    "--batch-size": ["0", "2.5"],
    "--seed": ["-1", "1.5"],
    "--limit": ["0", "1.5"],
    "--stage-ratios": ["1.0", "-0.1"],
    "--percent": ["1.0", "-0.1"],
    "--rounds": ["0", "1.5"],
    "--target-macs": ["0", "1.5"],
    "--target-params": ["0", "1.5"],
    "--target-latency": ["0", "1.5", "-3ms"],
    "--latency-batch": ["0", "1.5"],
    "--round-to": ["0", "2.5"],
    "--max-group-ratio": ["1.0", "-0.1"],
    "--taylor-batches": ["0", "1.5"],
    "--latency-batch-sizes": ["0", "1.5"],
    "--latency-repeats": ["0", "1.5"],
    "--latency-threads": ["0", "1.5"],
    "--input-size": ["3,0,32", "3,2.5,32"],
}
NON_FINITE = ["nan", "inf", "-inf"]


def _value(flag: str, v: str) -> str:
    return f"3,{v},32" if flag == "--input-size" and v in NON_FINITE else v


def _cases():
    cases = []
    for method in METHODS:  # every flag x every method: nan
        cases += [(method, flag, "nan") for flag in BAD]
    for method in ("gp", "l1-filter", "slimming"):  # every bad value of every flag for one method of each family
        for flag, values in BAD.items():
            cases += [(method, flag, v) for v in [*NON_FINITE[1:], *values]]
    return cases


def _one_line_error(argv, tmp_path, capsys) -> str:
    out = tmp_path / "out"
    code = main(["prune", "--model", "resnet20", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prunekit: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert not out.exists(), "a refused prune must not write into --out"
    return errors[0]


@pytest.mark.parametrize("method,flag,value", _cases())
def test_every_numeric_flag_rejects_non_finite_and_out_of_range_values(method, flag, value, tmp_path, capsys):
    line = _one_line_error([*BASE[method], "--method", method, flag, _value(flag, value)], tmp_path, capsys)
    assert flag in line or "target latency" in line, line


@pytest.mark.parametrize("argv,needle", [
    (["--method", "l1-filter", "--ratio", "1.0"], "--ratio must be in [0.0, 1.0)"),
    (["--method", "l1-filter", "--ratios", "0.5", "--criterion", "taylor"], "the L1-filter rules take"),
    (["--method", "slimming", "--percent", "0.3", "--criterion", "random"], "need --ratio"),
    (["--method", "gp", "--ratio", "0.5", "--strict-empty"], "only apply to structured methods"),
    (["--method", "gp", "--ratio", "0.5", "--ratios", "0.5"], "--stage-ratios only apply to structured"),
    (["--method", "l1-filter", "--ratios", "0.5", "--criterion", "magic"], "--criterion must be one of"),
    (["--method", "l1-filter", "--ratios", "0.5", "--latency-runtime", "warp"], "--latency-runtime must be one"),
])
def test_combinations_are_refused_before_anything_is_loaded(argv, needle, tmp_path, capsys):
    assert needle in _one_line_error(argv, tmp_path, capsys)


def test_ratios_that_would_empty_a_layer_are_a_clear_error(tmp_path, capsys):
    line = _one_line_error(["--method", "l1-filter", "--ratios", "0.95", "--strict-empty"], tmp_path, capsys)
    assert "would remove every channel of layer" in line  # 16 filters x (1 - 0.95) -> floor 0 kept
    line = _one_line_error(["--method", "global", "--ratio", "0.9999"], tmp_path, capsys)
    assert "removes every weight" in line


def test_recipe_mapping_errors_name_the_stage_and_field():
    from prunekit.cli.prune import PruneOptions
    from prunekit.options import from_mapping

    with pytest.raises(PrunekitError, match=r"stage 'p'.*'stage_ratios'.*finite"):
        from_mapping(PruneOptions, {"method": "l1-filter", "stage_ratios": [0.5, float("nan")], "out": "x"},
                     "stage 'p'")
    # the old key `ratios` (= the old flag --ratios) is an accepted alias of stage_ratios
    assert from_mapping(PruneOptions, {"method": "l1-filter", "ratios": [0.5], "out": "x"}, "s").stage_ratios == [0.5]
    with pytest.raises(PrunekitError, match=r"^stage 'p': --percent is a slimming option"):
        from_mapping(PruneOptions, {"method": "l1-filter", "ratios": "0.5", "percent": 0.3, "out": "x"}, "stage 'p'")
    opts = from_mapping(PruneOptions, {"method": "l1-filter", "criterion": "random", "ratios": "0.3,0.5",
                                       "skip": "a,b", "global": False, "out": "x"}, "stage 'p'")
    assert opts.stage_ratios == [0.3, 0.5] and opts.skip == ["a", "b"] and opts.latency_batch_sizes == [1, 64]


# -- the library: prune_and_report on a tiny model, against hand-derived numbers ----------------------------------
class Tiny(nn.Module):
    """conv(1->8) -> BN -> conv(8->8) -> BN -> mean pool -> linear(8->4); 3x3 convs without bias, padding 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    m = Tiny().eval()
    with torch.no_grad():  # distinct BN statistics so that removal is not trivially exact
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    return m


def _params(c1: int, c2: int) -> int:
    """Params of Tiny with c1 / c2 filters kept: conv1 c1*1*9, bn1 2*c1, conv2 c2*c1*9, bn2 2*c2, fc 4*c2 + 4."""
    return c1 * 9 + 2 * c1 + c2 * c1 * 9 + 2 * c2 + 4 * c2 + 4


def _macs(c1: int, c2: int) -> int:
    """Conv/linear MACs of Tiny on 1x8x8 (same padding: 64 output positions)."""
    return c1 * 9 * 64 + c2 * c1 * 9 * 64 + c2 * 4


def _by_hand(m: Tiny, k1: list[int], k2: list[int]) -> Tiny:
    """A second implementation of filter removal: slice every tensor by the kept indexes."""
    small = Tiny().eval()
    small.conv1 = nn.Conv2d(1, len(k1), 3, padding=1, bias=False)
    small.bn1 = nn.BatchNorm2d(len(k1))
    small.conv2 = nn.Conv2d(len(k1), len(k2), 3, padding=1, bias=False)
    small.bn2 = nn.BatchNorm2d(len(k2))
    small.fc = nn.Linear(len(k2), 4)
    with torch.no_grad():
        small.conv1.weight.copy_(m.conv1.weight[k1])
        small.conv2.weight.copy_(m.conv2.weight[k2][:, k1])
        for dst, src, k in ((small.bn1, m.bn1, k1), (small.bn2, m.bn2, k2)):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, attr).copy_(getattr(src, attr)[k])
        small.fc.weight.copy_(m.fc.weight[:, k2])
        small.fc.bias.copy_(m.fc.bias)
    return small.eval()


def _top(conv: nn.Conv2d, n: int) -> list[int]:
    norms = conv.weight.detach().abs().sum((1, 2, 3))
    return sorted(torch.argsort(norms, descending=True, stable=True)[:n].tolist())


FAST = dict(input_size=(1, 8, 8), latency_batch_sizes=[1], latency_repeats=1)


def test_prune_and_report_counts_match_a_hand_count_and_a_second_implementation():
    from prunekit.pruning.structured.api import prune_and_report

    m = _tiny()
    rep = prune_and_report(m, "l1-filter", ratios=[0.5], **FAST)  # one stage: both convs keep floor(8*0.5) = 4
    assert rep.before["params"] == _params(8, 8) == 716 and rep.dense["dense_params"] == 716
    assert rep.after["params"] == _params(4, 4) == 216
    assert rep.before["macs"] == _macs(8, 8) and rep.after["macs"] == _macs(4, 4)
    assert rep.after["flops"] == 2 * rep.after["macs"]
    k1, k2 = _top(m.conv1, 4), _top(m.conv2, 4)
    assert rep.result.keep == {"conv1": k1, "conv2": k2}
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = _by_hand(m, k1, k2)(x)
        assert float((rep.model(x) - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max()))
    assert rep.exactness is not None and rep.result.info["rel_diff"] <= 1e-5
    assert any(n.startswith("exactness:") for n in rep.notes)
    ratio = {r["metric"]: r["ratio"] for r in rep.compare_rows()}
    assert ratio["params"] == round(716 / 216, 4)
    assert [r["kept"] for r in rep.channel_rows] == [4, 4]


def test_chained_rounds_and_accuracy_callback():
    from prunekit.pruning.structured.api import MASKED, prune_and_report

    m = _tiny()
    seen = []
    rep = prune_and_report(m, "l1-filter", ratios=[0.5], rounds=2, evaluate=lambda mod: seen.append(mod) or 50.0,
                           **FAST)
    assert [r["params"] for r in rep.rounds] == [_params(4, 4), _params(2, 2)]  # 8 -> 4 -> 2 filters
    assert [(r["total"], r["kept"]) for r in rep.channel_rows] == [(8, 2), (8, 2)]
    assert rep.accuracy == {"before": 50.0, MASKED: 50.0, "after": 50.0} and len(seen) == 3
    assert seen[0] is m and seen[2] is rep.model


def test_strict_empty_and_masks_rules_of_the_library():
    from prunekit.pruning.structured.api import merge_masks, prune_and_report

    with pytest.raises(EmptyLayerError, match="conv1"):
        prune_and_report(_tiny(), "l1-filter", ratios=[0.95], strict_empty=True, **FAST)
    with pytest.raises(PrunekitError, match="carries weight masks"):
        prune_and_report(_tiny(), "l1-filter", ratios=[0.5], masks={"fc.weight": torch.ones(4, 8)}, **FAST)
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    merged = merge_masks({"w": a, "only_old": a}, {"w": b, "only_new": b})
    assert merged["w"].tolist() == [True, False, False, False]
    assert torch.equal(merged["only_old"], a) and torch.equal(merged["only_new"], b)


# -- the random filter criterion (the control of claim (e)) -----------------------------------------------------
def test_random_criterion_same_widths_other_filters_reproducible():
    from prunekit.pruning.structured import prune_iterative, prune_l1_filter

    m = _tiny()
    l1 = prune_l1_filter(m, ratios=[0.5], input_size=(1, 8, 8))
    runs = {s: prune_l1_filter(m, ratios=[0.5], input_size=(1, 8, 8), criterion="random", seed=s) for s in range(4)}
    for s, r in runs.items():
        assert [len(k) for k in r.keep.values()] == [len(k) for k in l1.keep.values()] == [4, 4]
        # the specification: one generator seeded by the seed, one randperm per pruned layer in module order
        gen = torch.Generator().manual_seed(s)
        assert r.keep == {"conv1": sorted(torch.randperm(8, generator=gen)[:4].tolist()),
                          "conv2": sorted(torch.randperm(8, generator=gen)[:4].tolist())}
        assert r.info["rel_diff"] <= 1e-5 and r.plan["method"] == "random-filter"
    assert any(r.keep != l1.keep for r in runs.values())
    again = prune_l1_filter(m, ratios=[0.5], input_size=(1, 8, 8), criterion="random", seed=2)
    assert again.keep == runs[2].keep and torch.equal(again.model.conv2.weight, runs[2].model.conv2.weight)
    two = prune_iterative(m, 2, ratios=[0.5], input_size=(1, 8, 8), criterion="random", seed=0)
    assert [len(k) for k in two[-1].keep.values()] == [2, 2]
    state = torch.random.get_rng_state()
    prune_l1_filter(m, ratios=[0.5], input_size=(1, 8, 8), criterion="random", seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # a private generator: the global RNG is untouched


def test_cli_random_criterion_matches_l1_widths(tmp_path):
    from prunekit import load_model

    fast = ["--latency-batch-sizes", "1", "--latency-repeats", "1"]
    args = ["prune", "--model", "resnet20", "--method", "l1-filter", "--ratios", "0.3", "0.3", "0.5", "--skip",
            "layer3.0", "--rounds", "2", *fast]
    assert main([*args, "--out", str(tmp_path / "l1")]) == 0
    assert main([*args, "--criterion", "random", "--seed", "5", "--out", str(tmp_path / "rnd")]) == 0
    l1, rnd = load_model(tmp_path / "l1"), load_model(tmp_path / "rnd")
    # 16 -> floor(16*0.7) = 11 -> floor(11*0.7) = 7; 32 -> 22 -> 15; layer3.0 kept whole; 64 -> 32 -> 16
    assert rnd.prunekit_cfg == l1.prunekit_cfg == [7, 7, 7, 15, 15, 15, 64, 16, 16]
    assert not torch.equal(rnd.layer1[0].conv1.weight, l1.layer1[0].conv1.weight)
