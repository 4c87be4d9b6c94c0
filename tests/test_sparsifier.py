"""Sparsifier (hooks that keep masks exact in any training loop), sparsity schedules and N:M masks."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import CheckpointError, PrunekitError, UnknownNameError
from prunekit.pruning import (AGP, Linear, OneShot, Rounds, Sparsifier, SparsifierHook, nm_masks,
                              prune_unstructured, to_semi_structured)
from prunekit.pruning.nm import nm_block_counts
from prunekit.pruning.schedules import check_monotone
from prunekit.pruning.unstructured import count_to_prune


class Tiny(nn.Module):
    """conv + BN + conv + two linears on 1x8x8 inputs (BN buffers make the resume test meaningful)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv1(x))), 2)
        x = F.relu(self.conv2(x)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


PRUNABLE = ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")
N_PRUNABLE = 72 + 576 + 2048 + 160


def tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def batch(step: int, micro: int = 0, n: int = 16):
    g = torch.Generator().manual_seed(1000 * step + micro)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def make_opt(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def train_steps(model, opt, sp, steps, start=0, accum=1, bf16=False, check_grads=False):
    model.train()
    for t in range(start, start + steps):
        for micro in range(accum):
            x, y = batch(t, micro)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(x)
                loss = F.cross_entropy(out.float(), y) / accum
            loss.backward()
            if check_grads and sp is not None:
                params = dict(model.named_parameters())
                for name, m in sp.masks.items():
                    g = params[name].grad
                    assert g is not None and int((g[~m] != 0).sum()) == 0, (name, t, micro)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sp is not None:
            sp.step()


def pruned_values(model, masks):
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach()[~m] for n, m in masks.items()])


def pruned_count(masks):
    return sum(int((~m).sum()) for m in masks.values())


# ------------------------------------------------------------------------------------------------- schedules
def test_agp_formula_at_hand_computed_points():
    s = AGP(start_step=10, end_step=50, frequency=10, initial=0.0, final=0.8)
    assert s(0) == 0.0 and s(9) == 0.0  # dense before t0
    assert s(10) == 0.0  # s_i at t0
    assert s(20) == pytest.approx(0.8 - 0.8 * 0.75 ** 3)  # (t - t0)/(n dt) = 1/4: 0.4625
    assert s(20) == pytest.approx(0.4625)
    assert s(25) == s(20)  # constant between update steps
    assert s(30) == pytest.approx(0.7)  # midpoint: 0.8 - 0.8 / 8
    assert s(40) == pytest.approx(0.8 - 0.8 / 64)
    assert s(49) == s(40)
    assert s(50) == 0.8 and s(10_000) == 0.8  # final exactly at and after end_step
    s2 = AGP(0, 100, 25, initial=0.2, final=0.9)
    assert s2(0) == 0.2 and s2(50) == pytest.approx(0.9 - 0.7 / 8) and s2(100) == 0.9
    assert s.update_steps() == [10, 20, 30, 40, 50]
    check_monotone(s, 60)
    check_monotone(s2, 120)


def test_agp_frequency_not_dividing_the_span_ends_exactly_at_end_step():
    s = AGP(0, 25, 10, 0.0, 0.5)
    assert s.update_steps() == [0, 10, 20, 25]
    assert s(24) == s(20) == pytest.approx(0.5 - 0.5 * 0.2 ** 3)
    assert s(25) == 0.5


def test_linear_oneshot_rounds():
    lin = Linear(0, 100, 25, 0.0, 0.8)
    assert [lin(t) for t in (0, 24, 25, 50, 60, 75, 99, 100, 500)] == pytest.approx(
        [0.0, 0.0, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8])
    one = OneShot(0.7, step=3)
    assert (one(0), one(2), one(3), one(100), one.final) == (0.0, 0.0, 0.7, 0.7, 0.7)
    r = Rounds([0.5, 0.5, 0.2], every=10, start_step=5)
    assert r(4) == 0.0
    assert [r(t) for t in (5, 14, 15, 25, 1000)] == pytest.approx([0.5, 0.5, 0.75, 0.8, 0.8])
    assert r.final == pytest.approx(0.8) and r.update_steps() == [5, 15, 25]
    for s in (lin, one, r):
        check_monotone(s, 200)
    with pytest.raises(PrunekitError, match="masks only grow"):
        AGP(0, 10, 1, initial=0.5, final=0.2)
    with pytest.raises(PrunekitError, match="end_step"):
        Linear(10, 5, 1)
    with pytest.raises(PrunekitError, match="frequency"):
        AGP(0, 10, 0)
    with pytest.raises(PrunekitError, match="decreases"):
        check_monotone(lambda t: 0.5 if t < 3 else 0.1, 5)


# ------------------------------------------------------------------------------------------ exact zeros, loops
@pytest.mark.parametrize("opt_name,accum,bf16", [("sgd", 1, False), ("adam", 1, False), ("adamw", 1, False),
                                                 ("sgd", 1, True), ("adamw", 3, False), ("adam", 2, True)])
def test_no_weight_revives_in_a_hand_written_loop(opt_name, accum, bf16):
    model = tiny()
    # dense for 3 steps (optimizer state builds up), then AGP to 80% by step 12, then 13 more steps
    sp = Sparsifier(model, method="gp", schedule=AGP(3, 12, 3, 0.0, 0.8))
    opt = make_opt(opt_name, model)
    sp.attach(opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = [sp.masks]
    for t in range(25):
        train_steps(model, opt, sp, 1, start=t, accum=accum, bf16=bf16, check_grads=True)
        masks = sp.masks
        prev = history[-1]
        for n in masks:  # masks only grow: pruned stays pruned
            assert not bool((masks[n] & ~prev[n]).any()), (n, t)
        history.append(masks)
        vals = pruned_values(model, masks)
        assert int((vals != 0).sum()) == 0 and not bool(torch.signbit(vals).any())  # exactly +0.0
    target = count_to_prune(0.8, N_PRUNABLE)
    assert [pruned_count(m) for m in history[12:]] == [target] * len(history[12:])
    assert sp.sparsity()["revived"] == 0 and sp.sparsity()["pruned"] == target
    params = dict(model.named_parameters())
    for n, m in sp.masks.items():  # the kept weights did train
        assert not torch.equal(params[n].detach()[m], before[n][m])


def test_without_hooks_the_same_loop_revives_weights():
    """The control: masks applied once, then AdamW + SGD momentum/weight decay move the pruned weights."""
    for opt_name in ("sgd", "adamw"):
        model = tiny()
        res = prune_unstructured(model, "gp", 0.8)
        opt = make_opt(opt_name, model)
        train_steps(model, opt, None, 3)
        assert int((pruned_values(model, res.masks) != 0).sum()) > 0


def test_newly_pruned_weights_lose_their_optimizer_state():
    model = tiny()
    sp = Sparsifier(model, method="gp", schedule=OneShot(0.6, step=3))
    opt = make_opt("adam", model)
    sp.attach(opt)
    train_steps(model, opt, sp, 3)
    params = dict(model.named_parameters())
    for n, m in sp.masks.items():
        st = opt.state[params[n]]
        assert int((st["exp_avg"][~m] != 0).sum()) == 0 and int((st["exp_avg_sq"][~m] != 0).sum()) == 0


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_a_dense_optimizer_state_loaded_after_attach_cannot_revive(opt_name):
    """Momentum / Adam moments of the pruned weights are non-zero here (loaded from a dense run after attach):
    the step post-hook alone keeps the weights at 0.0."""
    model = tiny()
    opt = make_opt(opt_name, model)
    train_steps(model, opt, None, 3)
    dense_state = copy.deepcopy(opt.state_dict())  # state_dict() shares the state tensors
    sp = Sparsifier(model, method="gp", ratio=0.8)
    sp.attach(opt)
    opt.load_state_dict(dense_state)
    params = dict(model.named_parameters())
    key = "momentum_buffer" if opt_name == "sgd" else "exp_avg"
    assert any(int((opt.state[params[n]][key][~m] != 0).sum()) for n, m in sp.masks.items())
    train_steps(model, opt, sp, 3, start=3)
    assert sp.sparsity()["revived"] == 0 and int((pruned_values(model, sp.masks) != 0).sum()) == 0


def test_auto_step_and_grad_scaler_free_bf16():
    model = tiny()
    sp = Sparsifier(model, method="layerwise", schedule=Linear(0, 4, 1, 0.0, 0.5))
    opt = make_opt("sgd", model)
    sp.attach(opt, auto_step=True)
    train_steps(model, opt, None, 6, bf16=True)  # the loop never calls sp.step()
    assert sp.step_count == 6 and sp.target == 0.5
    assert sp.sparsity()["revived"] == 0
    assert all(int((~m).sum()) == count_to_prune(0.5, m.numel()) for m in sp.masks.values())


# ------------------------------------------------------------------------------------------------ state dict
@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_state_dict_resume_is_bit_exact(tmp_path, opt_name):
    def build():
        model = tiny(seed=0)
        sp = Sparsifier(model, method="gp", schedule=AGP(0, 8, 2, 0.0, 0.8))
        opt = make_opt(opt_name, model)
        sp.attach(opt)
        return model, opt, sp

    model_a, opt_a, sp_a = build()
    train_steps(model_a, opt_a, sp_a, 10)

    model_b, opt_b, sp_b = build()
    train_steps(model_b, opt_b, sp_b, 5)
    path = tmp_path / "state.pt"
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "sp": sp_b.state_dict()}, path)
    del model_b, opt_b, sp_b

    state = torch.load(path, weights_only=True)
    model_c = tiny(seed=123)  # a different init: everything comes from the file
    sp_c = Sparsifier(model_c, method="gp", schedule=AGP(0, 8, 2, 0.0, 0.8))
    opt_c = make_opt(opt_name, model_c)
    sp_c.attach(opt_c)
    model_c.load_state_dict(state["model"])
    opt_c.load_state_dict(state["opt"])
    sp_c.load_state_dict(state["sp"])
    assert sp_c.step_count == 5
    train_steps(model_c, opt_c, sp_c, 5, start=5)

    assert sp_c.step_count == sp_a.step_count == 10 and sp_c.target == sp_a.target == 0.8
    for n in sp_a.masks:
        assert torch.equal(sp_a.masks[n], sp_c.masks[n])
    for (n, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), n


def test_state_dict_is_plain_and_checked(tmp_path):
    model = tiny()
    sp = Sparsifier(model, method="global", ratio=0.5)
    st = sp.state_dict()
    assert set(st) >= {"step", "target", "masks", "method"}
    assert all(v.dtype == torch.bool and v.device.type == "cpu" for v in st["masks"].values())
    torch.save(st, tmp_path / "sp.pt")
    back = torch.load(tmp_path / "sp.pt", weights_only=True)
    other = Sparsifier(tiny(), method="gp", ratio=0.5)
    with pytest.raises(CheckpointError, match="method"):
        other.load_state_dict(back)
    same = Sparsifier(tiny(seed=1), method="global", ratio=0.5)
    same.load_state_dict(back)
    assert all(torch.equal(same.masks[n], sp.masks[n]) for n in sp.masks)
    with pytest.raises(CheckpointError, match="schedule"):
        Sparsifier(tiny(), method="global", schedule=OneShot(0.5, step=2)).load_state_dict(back)


# ------------------------------------------------------------------------------------------ remove / squash
def test_remove_really_detaches():
    model = tiny()
    sp = Sparsifier(model, method="gp", ratio=0.7)
    opt = make_opt("sgd", model)
    sp.attach(opt)
    train_steps(model, opt, sp, 2)
    assert sp.sparsity()["revived"] == 0
    sp.remove()
    assert not sp.attached
    x, y = batch(99)
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    assert any(int((params[n].grad[~m] != 0).sum()) > 0 for n, m in sp.masks.items())  # grad hook gone
    opt.step()
    assert sp.sparsity()["revived"] > 0  # step hook gone: the weights move


def test_squash_bakes_masks_and_detaches():
    model = tiny()
    sp = Sparsifier(model, method="gp", ratio=0.7)
    opt = make_opt("adamw", model)
    sp.attach(opt)
    train_steps(model, opt, sp, 3)
    masks = sp.squash()
    assert set(masks) == set(PRUNABLE) and pruned_count(masks) == count_to_prune(0.7, N_PRUNABLE)
    assert int((pruned_values(model, masks) != 0).sum()) == 0
    assert not sp.attached
    with pytest.raises(PrunekitError, match="squashed"):
        sp.step()
    train_steps(model, opt, None, 1)
    assert int((pruned_values(model, masks) != 0).sum()) > 0  # no hooks left


def test_constructor_errors_and_scope():
    with pytest.raises(UnknownNameError, match="unknown sparsifier method"):
        Sparsifier(tiny(), method="magic", ratio=0.5)
    with pytest.raises(PrunekitError, match="ratio"):
        Sparsifier(tiny(), method="gp")
    with pytest.raises(PrunekitError, match="contradicts"):
        Sparsifier(tiny(), method="gp", ratio=0.5, schedule=AGP(0, 10, 1, 0.0, 0.9))
    with pytest.raises(PrunekitError, match="min-threshold"):
        Sparsifier(tiny(), method="gpmt", ratio=0.5)
    sp = Sparsifier(tiny(), method="gpmt", ratio=0.5, min_threshold=1.0, scope="conv,linear")
    assert set(sp.masks) == set(PRUNABLE)
    assert set(Sparsifier(tiny(), method="global", ratio=0.5).masks) == {"conv1.weight", "conv2.weight"}
    assert set(Sparsifier(tiny(), method="gp", ratio=0.5, scope="linear").masks) == {"fc1.weight", "fc2.weight"}


@pytest.mark.parametrize("method,kw", [("random", {"seed": 3}), ("gpmt", {"min_threshold": 2.0}),
                                       ("per-kind", {})])
def test_masks_only_grow_for_every_criterion(method, kw):
    model = tiny()
    sp = Sparsifier(model, method=method, schedule=Rounds([0.3, 0.3, 0.3], every=2), **kw)
    opt = make_opt("sgd", model)
    sp.attach(opt)
    prev = sp.masks
    for t in range(7):
        train_steps(model, opt, sp, 1, start=t)
        for n, m in sp.masks.items():
            assert not bool((m & ~prev[n]).any())
        prev = sp.masks
    assert sp.target == pytest.approx(1 - 0.7 ** 3)
    assert pruned_count(sp.masks) >= count_to_prune(1 - 0.7 ** 3, N_PRUNABLE)
    if method == "random":  # nested criteria: the count is exact
        assert pruned_count(sp.masks) == count_to_prune(sp.target, N_PRUNABLE)
    if method == "per-kind":  # exact per kind
        assert pruned_count(sp.masks) == count_to_prune(sp.target, 72 + 576) + count_to_prune(sp.target, 2208)
    assert sp.sparsity()["revived"] == 0


def test_agp_reaches_final_sparsity_exactly_at_end_step():
    model = tiny()
    sp = Sparsifier(model, method="gp", schedule=AGP(2, 10, 2, 0.0, 0.9))
    opt = make_opt("sgd", model)
    sp.attach(opt)
    seen = [sp.sparsity()["pruned"]]
    for t in range(14):
        train_steps(model, opt, sp, 1, start=t)
        seen.append(sp.sparsity()["pruned"])
    target = count_to_prune(0.9, N_PRUNABLE)
    assert seen == sorted(seen) and seen[0] == 0
    assert seen[9] < target and seen[10] == target and seen[-1] == target
    # the intermediate counts follow the cubic at the update steps 4, 6, 8
    for t in (4, 6, 8):
        assert seen[t] == count_to_prune(sp.schedule(t), N_PRUNABLE)


# ------------------------------------------------------------------------------------------------------- N:M
def test_nm_masks_exact_counts_ties_and_skipped_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 12, 3), nn.Flatten(), nn.Linear(12, 20),
                          nn.Linear(20, 6))
    res = nm_masks(model, 2, 4)
    assert set(res.masks) == {"1.weight", "3.weight", "4.weight"}
    assert "0.weight" in res.skipped and "multiple of 4" in res.notes[0]
    for name, m in res.masks.items():
        counts = nm_block_counts(m, 4)
        assert bool((counts == 2).all()), name
    # the kept ones are the 2 largest |w| of their block (conv: along input channels at each (out, kh, kw))
    w = model[1].weight.detach()
    blocks = w.abs().movedim(1, -1).reshape(-1, 4)
    keptb = res.masks["1.weight"].movedim(1, -1).reshape(-1, 4)
    assert bool((blocks[keptb].view(-1, 2).min(1).values >= blocks[~keptb].view(-1, 2).max(1).values).all())
    assert res.pruned == res.total // 2
    # ties: equal |w| in a block -> the lower positions are pruned first (as prune_unstructured)
    lin = nn.Linear(8, 2)
    with torch.no_grad():
        lin.weight.fill_(0.5)
        lin.weight[0, 4] = -0.5
    m = nm_masks(lin, 2, 4).masks["weight"]
    assert m.tolist() == [[False, False, True, True] * 2] * 2
    m14 = nm_masks(lin, 1, 4).masks["weight"]
    assert bool((nm_block_counts(m14, 4) == 1).all())
    with pytest.raises(PrunekitError, match="1 <= n < m"):
        nm_masks(lin, 4, 4)
    with pytest.raises(PrunekitError, match="nothing to prune"):
        nm_masks(nn.Linear(6, 3), 2, 4)


def test_nm_as_sparsifier_method_keeps_pattern_in_training():
    model = tiny()
    sp = Sparsifier(model, method="2:4")
    assert set(sp.masks) == {"conv2.weight", "fc1.weight", "fc2.weight"}  # conv1 has 1 input channel: skipped
    assert any("conv1.weight" in note for note in sp.notes)
    opt = make_opt("adamw", model)
    sp.attach(opt)
    train_steps(model, opt, sp, 4, accum=2)
    params = dict(model.named_parameters())
    for n, m in sp.masks.items():
        assert bool((nm_block_counts(m, 4) == 2).all())
        assert bool((nm_block_counts(params[n].detach() != 0, 4) <= 2).all())
    sp14 = Sparsifier(tiny(), method="nm", n=1, m=4)
    assert sp14.target == 0.75 and sp14.method == "1:4"
    with pytest.raises(PrunekitError, match="fixed sparsity"):
        Sparsifier(tiny(), method="2:4", ratio=0.5)


def test_to_semi_structured_on_cpu_says_unsupported():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    res = nm_masks(model, 2, 4)
    with pytest.raises(PrunekitError) as err:
        to_semi_structured(model, res.masks)
    msg = str(err.value)  # says where the kernels run, where the weights are, and that the masks still hold
    assert "only on CUDA GPUs of compute capability >= 8.0" in msg and "the weights are on cpu" in msg
    assert "masks still hold as ordinary zeros" in msg
    assert isinstance(model[0].weight, nn.Parameter) and model[0].weight.layout == torch.strided  # untouched


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
                    reason="needs a CUDA GPU of compute capability >= 8.0")
def test_to_semi_structured_on_cuda():  # pragma: no cover - GPU only
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 64)).half().cuda().eval()
    res = nm_masks(model, 2, 4, apply=True)
    x = torch.randn(64, 128, device="cuda", dtype=torch.half)
    dense = model(x)
    out = to_semi_structured(model, res.masks)
    assert out["converted"], out
    torch.testing.assert_close(model(x), dense, rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------- prunekit's Trainer
def _digits():
    from prunekit.data import get_dataset, subset

    return subset(get_dataset("digits", train=True), 64), subset(get_dataset("digits", train=False), 64)


def test_trainer_with_sparsifier_hook_saves_masks_and_resumes_exactly(tmp_path):
    from prunekit.checkpoint import load_checkpoint
    from prunekit.engine import TrainConfig, fit
    from prunekit.models import create_model

    train, test = _digits()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, weight_decay=5e-4, schedule="constant")
    schedule = AGP(0, 6, 2, 0.0, 0.8)  # 4 steps per epoch: final sparsity at step 6, mid epoch 2

    def run(epochs, out, resume=False):
        torch.manual_seed(0)
        model = create_model("resnet20", num_classes=10, in_channels=1)
        sp = Sparsifier(model, method="gp", schedule=schedule)
        c = TrainConfig(**{**cfg.to_dict(), "epochs": epochs})
        # resuming a 1-epoch run for 2 epochs changes the configuration: on purpose (constant LR, so exact)
        res = fit(model, train, test, c, hooks=[SparsifierHook(sp)], out_dir=out, resume=resume,
                  resume_anyway=resume)
        return model, sp, res

    model, sp, res = run(2, tmp_path / "straight")
    n = sum(m.numel() for m in sp.masks.values())
    assert sp.step_count == 8 and sp.sparsity()["pruned"] == count_to_prune(0.8, n)
    assert sp.sparsity()["revived"] == 0
    assert [r["sparsifier_step"] for r in res.history] == [4, 8]
    assert res.history[0]["sparsity"] < res.history[1]["sparsity"] == pytest.approx(0.8, abs=1e-5)
    ckpt = load_checkpoint(tmp_path / "straight")
    assert set(ckpt.masks) == set(sp.masks)
    assert all(torch.equal(ckpt.masks[k], sp.masks[k].cpu()) for k in sp.masks)

    run(1, tmp_path / "resumed")
    model2, sp2, _ = run(2, tmp_path / "resumed", resume=True)
    assert sp2.step_count == 8
    assert all(torch.equal(sp.masks[k], sp2.masks[k]) for k in sp.masks)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k


def test_sparsifier_hook_refuses_trainer_masks():
    from prunekit.engine import TrainConfig, fit

    train, test = _digits()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model.prunekit_name = None
    res = prune_unstructured(model, "gp", 0.5)
    sp = Sparsifier(model, method="gp", ratio=0.6)
    with pytest.raises(PrunekitError, match="owns the masks"):
        fit(model, train, test, TrainConfig(epochs=1, batch_size=32), masks=res.masks, hooks=[SparsifierHook(sp)])


def test_fixed_mask_sparsifier_keeps_a_pruned_model_exact_in_a_user_loop_and_is_what_the_trainer_uses():
    """``Sparsifier.from_masks``: fixed masks held under AdamW in a hand-written loop (step() changes nothing),
    and prunekit's Trainer enforces its masks= through the same object (MaskHook wraps one)."""
    from prunekit.engine.trainer import Trainer, TrainConfig
    from prunekit.pruning.sparsifier import MaskHook

    model = tiny(3)
    masks = {n: p.detach().abs() > p.detach().abs().median() for n, p in model.named_parameters() if n in PRUNABLE}
    sp = Sparsifier.from_masks(model, masks).attach(opt := make_opt("adamw", model))
    expected = sum(int((~m).sum()) for m in masks.values())  # about half of each layer: counted here, independently
    assert sp.method == "fixed" and sp.sparsity()["pruned"] == expected
    train_steps(model, opt, sp, 5)
    assert sp.step_count == 5 and all(torch.equal(sp.masks[n], masks[n]) for n in masks)
    assert int((pruned_values(model, masks) != 0).sum()) == 0

    class Data:
        num_classes, in_channels, image_size, name = 10, 1, (8, 8), "t"

    trainer = Trainer(tiny(4), Data(), None, TrainConfig(epochs=1), masks=masks)
    hook = next(h for h in trainer.hooks if isinstance(h, MaskHook))
    hook.on_fit_start(trainer)
    assert isinstance(hook.sparsifier, Sparsifier) and hook.sparsifier.method == "fixed"
    assert int((pruned_values(trainer.module, masks) != 0).sum()) == 0


def test_train_gradual_ratio_prunes_exactly_to_the_final_sparsity_on_the_hand_computed_schedule(tmp_path):
    """``prunekit train --gradual-ratio``: a Sparsifier in the trainer. 64 samples at batch 16 = 4 steps an epoch,
    3 epochs = 12 steps; start 0.25 -> step 3, end 0.75 -> step 9, 3 updates -> every 2 steps (hand-derived);
    the saved masks prune exactly round(0.5 * N) of the gp scope and every pruned weight is 0.0."""
    import json

    from prunekit import load_checkpoint
    from prunekit.cli import main
    from prunekit.commands.train import TrainOptions, gradual_schedule
    from prunekit.pruning.unstructured import prune_unstructured

    opts = TrainOptions(epochs=3, gradual_ratio=0.5, gradual_schedule="linear", gradual_start=0.25,
                        gradual_end=0.75, gradual_updates=3).validate()
    s = gradual_schedule(opts, 4).to_dict()
    assert (s["kind"], s["start_step"], s["end_step"], s["frequency"], s["final"]) == ("Linear", 3, 9, 2, 0.5)
    out = tmp_path / "g"
    assert main(["train", "--model", "lenet5", "--dataset", "digits", "--limit", "64", "--batch-size", "16",
                 "--epochs", "3", "--lr", "0.01", "--gradual-ratio", "0.5", "--gradual-schedule", "linear",
                 "--gradual-start", "0.25", "--gradual-end", "0.75", "--gradual-updates", "3", "--out", str(out),
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gradual"]["step"] == 12 and summary["gradual"]["revived"] == 0
    ck = load_checkpoint(out)
    n = sum(m.numel() for m in ck.masks.values())
    scope_n = prune_unstructured(ck.model, "gp", 0.5, apply=False).report.total_weights
    assert n == scope_n and sum(int((~m).sum()) for m in ck.masks.values()) == round(0.5 * n)
    params = dict(ck.model.named_parameters())
    assert all(int((params[k].detach()[~m] != 0).sum()) == 0 for k, m in ck.masks.items())
