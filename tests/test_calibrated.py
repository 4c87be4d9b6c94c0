"""Calibrated one-shot pruning (Wanda, SparseGPT): independent oracles written here, sequential == whole-model."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.pruning.calibrated import find_blocks, prune_calibrated, sparsegpt_prune
from prunekit.pruning.calibrated.sparsegpt import inverse_cholesky
from prunekit.pruning.nm import nm_block_counts


def _inputs(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Correlated inputs with very different column scales (so |W| alone ranks badly)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, cols, generator=g)
    mix = torch.eye(cols) + 0.3 * torch.randn(cols, cols, generator=g)
    scale = torch.logspace(-1, 1, cols)[torch.randperm(cols, generator=g)]
    return (base @ mix) * scale


def _linear(out: int, cols: int, seed: int = 1) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(cols, out)


def _rel_err(w: torch.Tensor, w_new: torch.Tensor, x: torch.Tensor) -> float:
    x = x.double()
    return float((x @ (w.double() - w_new.double()).t()).norm() / (x @ w.double().t()).norm())


# ------------------------------------------------------------------------------------------------------- Wanda
def test_wanda_mask_is_a_per_row_topk_of_abs_w_times_input_norm():
    x = _inputs(300, 24)
    lin = _linear(10, 24)
    w = lin.weight.detach().clone()
    res = prunekit.prune_unstructured(lin, "wanda", 0.5, data=[x[:150], x[150:]])
    norms = [sum(float(x[t, j]) ** 2 for t in range(x.shape[0])) ** 0.5 for j in range(24)]
    for r in range(10):
        scores = [abs(float(w[r, j])) * norms[j] for j in range(24)]
        pruned = sorted(range(24), key=lambda j: scores[j])[:12]  # round(0.5 * 24) per row
        expect = [j not in pruned for j in range(24)]
        assert res.masks["weight"][r].tolist() == expect
    assert torch.equal(lin.weight, w * res.masks["weight"])  # Wanda never updates the kept weights


def test_wanda_nm_keeps_the_two_best_of_every_four_inputs():
    x = _inputs(200, 16, seed=3)
    lin = _linear(6, 16, seed=4)
    w = lin.weight.detach().clone()
    res = prunekit.prune_unstructured(lin, "wanda", None, data=[x], n=2, m=4)
    norms = x.double().pow(2).sum(0).sqrt()
    for r in range(6):
        for g0 in range(0, 16, 4):
            s = {j: abs(float(w[r, j])) * float(norms[j]) for j in range(g0, g0 + 4)}
            keep = set(sorted(s, key=s.get)[2:])
            assert {j for j in range(g0, g0 + 4) if res.masks["weight"][r, j]} == keep
    assert res.report.total_pruned == 6 * 16 // 2 and res.report.nm == (2, 4)


# --------------------------------------------------------------------------------------------------- SparseGPT
def _slow_obs(w: torch.Tensor, x: torch.Tensor, ratio: float | None, nm: tuple[int, int] | None, block: int,
              damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Unblocked OBS in float64: explicit inverse, one column at a time, every update applied at once, the inverse
    Hessian of the remaining columns by Gaussian elimination. Masks: per block of ``block`` columns from
    w² / d (d = the eliminated inverse's diagonal when the column is reached), or N:M per group of m columns."""
    w = w.double().clone()
    h = 2 * x.double().t() @ x.double() / x.shape[0]
    h += damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    rows, cols = w.shape
    keep = torch.ones(rows, cols, dtype=torch.bool)

    def future_diag(start: int, stop: int) -> torch.Tensor:
        t = hinv.clone()
        out = []
        for j in range(start, stop):
            out.append(float(t[j, j]))
            t = t - torch.outer(t[:, j], t[j, :]) / t[j, j]
        return torch.tensor(out, dtype=torch.float64)

    for i in range(cols):
        if nm is None and i % block == 0:
            score = w[:, i:i + block] ** 2 / future_diag(i, i + block)
            k = round(ratio * score.numel())
            flat = sorted(range(score.numel()), key=lambda f: (float(score.flatten()[f]), f))[:k]
            for f in flat:
                keep[f // score.shape[1], i + f % score.shape[1]] = False
        if nm is not None and i % nm[1] == 0:
            n, m = nm
            score = w[:, i:i + m] ** 2 / future_diag(i, i + m)
            for r in range(rows):
                for j in sorted(range(m), key=lambda j: (float(score[r, j]), j))[: m - n]:
                    keep[r, i + j] = False
        d = hinv[i, i]
        for r in range(rows):
            if not keep[r, i]:
                w[r, :] -= (w[r, i] / d) * hinv[i, :]
                w[r, i] = 0.0
        hinv = hinv - torch.outer(hinv[:, i], hinv[i, :]) / d
    return w, keep


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_equals_a_slow_unblocked_obs(nm):
    x = _inputs(400, 48, seed=5)
    w = torch.randn(8, 48, generator=torch.Generator().manual_seed(6))
    h = 2 * x.double().t() @ x.double() / x.shape[0]
    got_w, got_keep = sparsegpt_prune(w, h.float(), ratio=0.5, nm=nm, blocksize=16)
    exp_w, exp_keep = _slow_obs(w, x, 0.5, nm, block=16)
    assert torch.equal(got_keep, exp_keep)
    assert torch.allclose(got_w.double(), exp_w, atol=1e-5, rtol=0)
    assert int((~got_keep).sum()) == 8 * 48 // 2 and bool((got_w[~got_keep] == 0).all())


def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda():
    x = _inputs(500, 32, seed=7)
    errs = {}
    for method in ("layerwise", "wanda", "sparsegpt"):
        lin = _linear(16, 32, seed=8)
        w = lin.weight.detach().clone()
        kw = {} if method == "layerwise" else {"data": [x]}
        res = prunekit.prune_unstructured(lin, method, 0.5, scope=prunekit.pruning.Scope(kinds=("linear",)), **kw)
        assert res.report.total_pruned == 16 * 32 // 2
        errs[method] = _rel_err(w, lin.weight.detach(), x)
        if method != "layerwise":  # the report's error is the same quantity, from XᵀX
            assert res.report.layer_errors["weight"] == pytest.approx(errs[method], rel=1e-4)
    assert errs["sparsegpt"] < errs["wanda"] < errs["layerwise"], errs


def test_sparsegpt_damping_retry_and_clear_error():
    ones = torch.ones(4, 4)  # rank 1: no Cholesky without damping
    up, lam = inverse_cholesky(ones, damp=0.0)
    assert lam == pytest.approx(1e-4) and bool(torch.isfinite(up).all())
    with pytest.raises(PrunekitError, match="cannot be factorised"):
        inverse_cholesky(torch.tensor([[1.0, 100.0], [100.0, 1.0]]), damp=0.01)  # indefinite even at 10x diag
    with pytest.raises(PrunekitError, match="negative diagonal"):
        inverse_cholesky(-torch.eye(4), damp=0.01)
    with pytest.raises(PrunekitError, match="not finite"):
        inverse_cholesky(torch.full((3, 3), float("nan")))


def test_sparsegpt_dead_inputs_are_zeroed():
    x = _inputs(100, 8, seed=9)
    x[:, 3] = 0.0
    w = torch.randn(4, 8)
    h = 2 * x.t() @ x / 100
    new, keep = sparsegpt_prune(w, h, ratio=0.25)
    assert bool((new[:, 3] == 0).all()) and int((~keep).sum()) == 8


# ---------------------------------------------------------------------------------------- sequential calibration
class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)

    def forward(self, x, mask=None, scale=1.0):
        y = self.down(torch.relu(self.up(x))) * scale
        return (x + (y if mask is None else y * mask), None)  # a tuple, like HF layers of old


class _Net(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.layers = nn.ModuleList([_Block(d) for _ in range(3)])
        self.head = nn.Linear(d, 5)

    def forward(self, x, mask=None):
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, mask=mask, scale=0.5)[0]
        return self.head(h)


@pytest.mark.parametrize("method,kw", [("wanda", {"ratio": 0.6}), ("sparsegpt", {"ratio": 0.5}),
                                       ("sparsegpt", {"n": 4, "m": 8})])
def test_sequential_equals_whole_model_calibration(method, kw):
    torch.manual_seed(0)
    base = _Net()
    data = [{"x": torch.randn(2, 6, 8), "mask": (torch.rand(2, 6, 1) > 0.3).float()} for _ in range(3)]
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ra = prune_calibrated(a, method, data=data, **kw)
    rb = prune_calibrated(b, method, data=data, sequential=False, **kw)
    assert ra.report.blocks == ["layers.0", "layers.1", "layers.2"]
    assert sorted(ra.masks) == sorted(rb.masks) == sorted(f"layers.{i}.{n}.weight" for i in range(3)
                                                          for n in ("up", "down"))
    for k in ra.masks:
        assert torch.equal(ra.masks[k], rb.masks[k]), k
    for (n1, p1), (_, p2) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p1, p2), n1
    assert torch.equal(a.embed.weight, base.embed.weight) and torch.equal(a.head.weight, base.head.weight)
    # the later blocks saw the *pruned* earlier blocks: calibrating all blocks on dense inputs differs
    c = copy.deepcopy(base)
    rc = prune_calibrated(c, method, data=data, blocks="layers.2", **kw)
    assert not torch.equal(rc.masks["layers.2.down.weight"], ra.masks["layers.2.down.weight"])


def test_cnn_zoo_model_blocks_and_nm_counts():
    torch.manual_seed(0)
    model = prunekit.create_model("resnet20")
    chain = find_blocks(model)
    assert chain.names == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    data = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    ref = copy.deepcopy(model)
    res = prunekit.prune_unstructured(model, "sparsegpt", None, data=data, n=2, m=4)
    assert "conv1.weight" not in res.masks and "fc.weight" not in res.masks  # stem and classifier: outside
    assert len(res.masks) == 18
    for name, mask in res.masks.items():
        assert bool((nm_block_counts(mask, 4) == 2).all()), name
        assert bool((model.get_parameter(name)[~mask] == 0).all())
    whole = prunekit.prune_unstructured(ref, "sparsegpt", None, data=data, n=2, m=4, sequential=False)
    for name in res.masks:
        assert torch.equal(res.masks[name], whole.masks[name])
        assert torch.allclose(model.get_parameter(name), ref.get_parameter(name), atol=1e-6)


def test_model_without_blocks_is_one_block_and_apply_false_restores():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = [p.detach().clone() for p in model.parameters()]
    res = prunekit.prune_unstructured(model, "wanda", 0.25, data=[torch.randn(5, 8)], apply=False)
    assert res.report.blocks == [""] and sorted(res.masks) == ["0.weight", "2.weight"]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert res.report.sparsity == 0.25 and res.report.seconds > 0 and res.report.peak_rss > 0


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,match", [
    ({"data": None}, "needs calibration data"),
    ({"data": []}, "no calibration data"),
    ({"data": [torch.randn(3, 7)]}, "does not accept the calibration inputs"),
    ({"data": [torch.randn(3, 6)], "n": 2, "m": 4}, "does not divide layer"),
    ({"data": [torch.randn(3, 6)], "ratio": 1.5}, "ratio"),
    ({"data": [torch.randn(3, 6)], "n": 2}, "both n and m"),
    ({"data": [torch.randn(3, 6)], "blocks": "nope"}, "no module 'nope'"),
])
def test_user_errors_are_prunekit_errors(kwargs, match):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    kwargs = {"ratio": 0.5, **kwargs}
    if "n" in kwargs:
        kwargs["ratio"] = None
    ratio = kwargs.pop("ratio")
    with pytest.raises(PrunekitError, match=match):
        prunekit.prune_unstructured(model, "sparsegpt", ratio, **kwargs)


def test_existing_methods_reject_calibration_arguments():
    with pytest.raises(PrunekitError, match="calibrated methods"):
        prunekit.prune_unstructured(nn.Linear(4, 4), "layerwise", 0.5, data=[torch.randn(2, 4)])
