"""Weight-level pruning methods: exact counts, deterministic ties, thresholds, scopes, GPMT, empty layers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import prunekit.pruning.unstructured as U
from prunekit.errors import EmptyLayerError, PrunekitError, UnknownNameError
from prunekit.pruning.scope import Scope, select_layers
from prunekit.pruning.unstructured import count_to_prune, gpmt_allocation, prune_unstructured, select_smallest


class Net(nn.Module):
    """conv(3->8) -> conv(8->16) -> conv(16->16) -> fc(16->32) -> fc(32->10)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 3, bias=False)     # 216
        self.c2 = nn.Conv2d(8, 16, 3)                 # 1152
        self.c3 = nn.Conv2d(16, 16, 1)                # 256
        self.bn = nn.BatchNorm2d(16)
        self.f1 = nn.Linear(16, 32)                   # 512
        self.f2 = nn.Linear(32, 10)                   # 320

    def forward(self, x):
        x = self.bn(self.c3(self.c2(self.c1(x)))).mean((2, 3))
        return self.f2(self.f1(x))


def reference_keep(weights: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Brute force: stable sort of |w| over the concatenation, prune the first k."""
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:k]] = False
    return list(keep.split([w.numel() for w in weights]))


def quantize_(model: nn.Module, levels: int = 7) -> None:
    """Make many exact ties: round every weight to a few values (signs kept)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * levels) / levels)


def test_count_to_prune_rounds_half_up_exactly():
    assert count_to_prune(0.5, 3) == 2
    assert count_to_prune(0.25, 10) == 3
    assert count_to_prune(0.15, 10) == 2
    assert count_to_prune(0.3, 10) == 3
    assert count_to_prune(0.0, 10) == 0 and count_to_prune(1.0, 7) == 7
    assert count_to_prune(0.8, 25_502_912) == 20_402_330


@pytest.mark.filterwarnings("ignore:.*removes every weight")
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.37, 0.5, 0.9])
@pytest.mark.parametrize("method", ["global", "gp", "per-kind", "random"])
def test_methods_prune_exactly_round_p_n(method, ratio):
    model = Net()
    res = prune_unstructured(model, method, ratio, allow_empty_layers=True)
    layers = select_layers(model, Scope(kinds=U.DEFAULT_KINDS[method]))
    sizes = {lay.name: lay.numel for lay in layers}
    if method == "per-kind":
        conv = sum(v for k, v in sizes.items() if k.startswith("c"))
        fc = sum(v for k, v in sizes.items() if k.startswith("f"))
        expected = math.floor(ratio * conv + 0.5) + math.floor(ratio * fc + 0.5)
    else:
        expected = math.floor(ratio * sum(sizes.values()) + 0.5)
    pruned = sum(int((~m).sum()) for m in res.masks.values())
    assert set(res.masks) == set(sizes)
    assert pruned == expected == res.report.total_pruned == res.report.target_pruned
    assert res.report.sparsity == pytest.approx(expected / sum(sizes.values()))
    # apply=True zeroed exactly the pruned entries
    params = dict(model.named_parameters())
    for name, m in res.masks.items():
        assert torch.equal(params[name].detach() == 0, ~m)


def test_layerwise_prunes_every_layer_by_the_same_fraction():
    model = Net()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    res = prune_unstructured(model, "layerwise", 0.3)
    for lay in res.report.layers:
        assert lay.pruned == math.floor(0.3 * lay.weights + 0.5)
        w = before[lay.name].abs()
        # threshold = largest pruned magnitude of that layer
        assert lay.threshold == float(torch.kthvalue(w.flatten(), lay.pruned).values)
    assert res.report.thresholds == {}


def test_global_default_scope_is_conv_only_as_rethinking():
    model = Net()
    res = prune_unstructured(model, "global", 0.5)
    assert sorted(res.masks) == ["c1.weight", "c2.weight", "c3.weight"]
    assert int((model.f1.weight == 0).sum()) == 0


def test_ties_are_broken_by_position_and_match_stable_sort_reference():
    model = Net(seed=3)
    quantize_(model, levels=20)
    layers = select_layers(model, Scope(kinds=("conv", "linear")))
    n = sum(lay.numel for lay in layers)
    k = count_to_prune(0.61, n)
    res = prune_unstructured(model, "gp", 0.61, apply=False, allow_empty_layers=True)
    ref = reference_keep([lay.weight for lay in layers], k)
    for lay, r in zip(layers, ref):
        assert torch.equal(res.masks[lay.name].flatten(), r)
    t = res.report.thresholds["global"]
    assert t == float(torch.kthvalue(torch.cat([lay.weight.detach().abs().flatten() for lay in layers]), k).values)


@pytest.mark.parametrize("data", ["ties", "periodic", "sorted"])
def test_sampled_selection_path_is_exact(monkeypatch, data):
    monkeypatch.setattr(U, "_EXACT_LIMIT", 0)
    monkeypatch.setattr(U, "_SAMPLE", 64)
    g = torch.Generator().manual_seed(1)
    if data == "ties":
        scores = [torch.randint(0, 5, (n,), generator=g).float() for n in (3000, 1000, 5000)]
    elif data == "periodic":  # the strided sample (stride 312) sees only zeros: the bracket misses, falls back
        scores = [torch.where(torch.arange(n) % 312 == 0, 0.0, (torch.arange(n) % 312).float() + 100.0)
                  for n in (7000, 13000)]
    else:
        scores = [torch.sort(torch.rand(n, generator=g)).values for n in (4000, 4000)]
    total = sum(s.numel() for s in scores)
    fallbacks = []
    exact = U._exact_kth
    monkeypatch.setattr(U, "_exact_kth", lambda sc, k: fallbacks.append(k) or exact(sc, k))
    for k in (1, 17, total // 3, total // 2, total - 1, total):
        keeps, t = select_smallest(scores, k)
        ref = reference_keep(scores, k)
        assert all(torch.equal(a, b) for a, b in zip(keeps, ref)), k
        assert t == float(torch.kthvalue(torch.cat(scores), k).values)
    assert bool(fallbacks) == (data == "periodic")


def test_per_kind_uses_independent_conv_and_linear_thresholds():
    model = Net()
    res = prune_unstructured(model, "per-kind", 0.4, apply=False)
    conv = torch.cat([p.detach().abs().flatten() for n, p in model.named_parameters() if n.startswith("c") and
                      n.endswith("weight")])
    fc = torch.cat([p.detach().abs().flatten() for n, p in model.named_parameters() if n.startswith("f") and
                    n.endswith("weight")])
    assert res.report.thresholds["conv"] == float(torch.kthvalue(conv, count_to_prune(0.4, conv.numel())).values)
    assert res.report.thresholds["linear"] == float(torch.kthvalue(fc, count_to_prune(0.4, fc.numel())).values)
    by_kind = res.report.kind_totals()
    assert by_kind["conv"]["pruned"] == count_to_prune(0.4, conv.numel())
    assert by_kind["linear"]["pruned"] == count_to_prune(0.4, fc.numel())


def test_scope_kinds_patterns_and_first_last_switches():
    model = Net()
    names = lambda s: [lay.name for lay in select_layers(model, s)]  # noqa: E731
    assert names(Scope(kinds=("conv", "linear"), skip_first=True, skip_last=True)) == \
        ["c2.weight", "c3.weight", "f1.weight"]
    assert names(Scope(kinds=("linear",))) == ["f1.weight", "f2.weight"]
    assert names(Scope(kinds=("conv", "linear"), include=(r"^c",), exclude=(r"c2",))) == ["c1.weight", "c3.weight"]
    res = prune_unstructured(model, "gp", 0.5, scope=Scope(kinds=("conv", "linear"), skip_first=True))
    assert "c1.weight" not in res.masks and int((model.c1.weight == 0).sum()) == 0
    with pytest.raises(PrunekitError, match="no prunable layer"):
        select_layers(model, Scope(kinds=("conv",), include=("nothing",)))
    with pytest.raises(PrunekitError, match="scope kinds"):
        Scope(kinds=("bn",))
    with pytest.raises(PrunekitError, match="regex"):
        Scope(include=("(",))


def seed_gpmt_sparsities(s: list[float], w: list[int], target: float, m: int) -> list[float]:
    """Float re-statement of REFERENCE §2 (rescale + clamp until the target is reached)."""
    s = [0.0 if wi < m else si for si, wi in zip(s, w)]
    total = sum(w)
    for _ in range(1000):
        cur = sum(si * wi for si, wi in zip(s, w)) / total
        s = [min(1.0, si * target / cur) for si in s]
        s = [1 - m / wi if (1 - si) * wi < m and wi >= m else si for si, wi in zip(s, w)]
        if abs(sum(si * wi for si, wi in zip(s, w)) / total - target) < 1e-12:
            break
    return s


def test_gpmt_allocation_matches_the_seed_algorithm_in_integers():
    sizes = [100, 5000, 20000, 800, 3000, 40]
    gp = [10, 4600, 19000, 700, 1500, 39]
    k = sum(gp)
    m = 300
    counts = gpmt_allocation(gp, sizes, k, m)
    assert sum(counts) == k
    assert counts[0] == 0 and counts[5] == 0  # W_i < m: not pruned at all
    assert all(w - c >= min(m, w) for w, c in zip(sizes, counts))
    ref = seed_gpmt_sparsities([g / w for g, w in zip(gp, sizes)], sizes, k / sum(sizes), m)
    for c, r, w in zip(counts, ref, sizes):
        assert abs(c - r * w) <= 1.0


def test_gpmt_keeps_minimum_per_layer_and_exact_total():
    model = Net()
    with torch.no_grad():
        model.c1.weight.mul_(0.01)  # GP would nearly empty c1
    res = prune_unstructured(model, "gpmt", 0.9, min_threshold=1.5)
    n = res.report.total_weights
    m = int(n * 1.5 / 100)
    assert res.report.min_weights == m == 36
    assert res.report.total_pruned == count_to_prune(0.9, n)
    assert all(lay.kept >= min(m, lay.weights) for lay in res.report.layers)
    assert res.report.gp_layers is not None and res.report.gp_layers[0].kept < m  # the refinement mattered
    assert res.report.layers[0].kept == m
    assert sum(lay.pruned for lay in res.report.gp_layers) == res.report.total_pruned
    with pytest.raises(PrunekitError, match="min-threshold"):
        prune_unstructured(Net(), "gpmt", 0.99, min_threshold=1.5)


def test_empty_layer_fails_naming_it_or_warns_when_allowed():
    model = Net()
    with torch.no_grad():
        model.c3.weight.mul_(1e-6)
    with pytest.raises(EmptyLayerError, match=r"c3\.weight"):
        prune_unstructured(model, "global", 0.2)
    assert int((model.c3.weight == 0).sum()) == 0  # nothing applied on failure
    with pytest.warns(UserWarning, match=r"c3\.weight"):
        res = prune_unstructured(model, "global", 0.2, allow_empty_layers=True)
    assert res.report.empty_layers == ["c3.weight"]


def test_random_is_seeded_and_exact():
    a = prune_unstructured(Net(), "random", 0.5, seed=1, apply=False).masks
    b = prune_unstructured(Net(), "random", 0.5, seed=1, apply=False).masks
    c = prune_unstructured(Net(), "random", 0.5, seed=2, apply=False).masks
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_arguments_are_user_errors():
    with pytest.raises(UnknownNameError, match="valid"):
        prune_unstructured(Net(), "magic", 0.5)
    with pytest.raises(PrunekitError, match="ratio"):
        prune_unstructured(Net(), "global", 1.5)
    with pytest.raises(PrunekitError, match="min-threshold"):
        prune_unstructured(Net(), "gpmt", 0.5)
    with pytest.raises(PrunekitError, match="only applies to gpmt"):
        prune_unstructured(Net(), "gp", 0.5, min_threshold=1.0)
    model = Net()
    with torch.no_grad():
        model.c2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(PrunekitError, match=r"c2\.weight"):
        prune_unstructured(model, "global", 0.5)
