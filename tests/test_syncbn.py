"""The CPU SyncBatchNorm: float32 statistics with Chan's parallel merge, BatchNorm's errors, every _BatchNorm converted,
and 2 gloo ranks equal to one BatchNorm on the whole batch (outputs, running stats, gradients)."""
from __future__ import annotations

import socket

import pytest
import torch
from dist_helpers import spawn
import torch.nn as nn

from prunekit.engine.syncbn import (CPUSyncBatchNorm, CPUSyncBatchNorm1d, CPUSyncBatchNorm3d, convert_sync_batchnorm,
                                    sync_batch_stats)

CPU = torch.device("cpu")


def _bn_pair(cls_ref, cls_sync, c, **kw):
    ref, syn = cls_ref(c, **kw), cls_sync(c, **kw)
    with torch.no_grad():
        w, b = torch.linspace(0.5, 1.5, c), torch.linspace(-0.3, 0.3, c)
        for m in (ref, syn):
            m.weight.copy_(w)
            m.bias.copy_(b)
    return ref.train(), syn.train()


def test_bf16_input_matches_fp32_batchnorm_within_bf16_rounding():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 8, 8, 8, generator=g) * 2 + 8).bfloat16()  # 4,096 values per channel
    ref, syn = _bn_pair(nn.BatchNorm2d, CPUSyncBatchNorm, 8)
    with torch.no_grad():
        want = ref(x.float())
        got = syn(x)
    assert got.dtype == torch.bfloat16
    # the only error left is rounding the (fp32-computed) output to bf16: half an ulp, 2^-9 relative
    err = (got.float() - want).abs()
    assert float((err / want.abs().clamp(min=1.0)).max()) <= 1.05 * 2.0 ** -8
    assert float(err.max()) < 0.02
    assert torch.allclose(syn.running_mean, ref.running_mean, rtol=1e-6, atol=1e-6)
    assert torch.allclose(syn.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
    # what the old implementation computed (bf16 sums, E[x²] − E[x]²) is off by ~0.1 on this data
    n = x.numel() / 8
    mean = x.sum(dim=(0, 2, 3)) / n
    var = (x * x).sum(dim=(0, 2, 3)) / n - mean * mean
    old = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var + 1e-5).view(1, -1, 1, 1)
    old = old * ref.weight.detach().view(1, -1, 1, 1) + ref.bias.detach().view(1, -1, 1, 1)
    assert float((old.float() - want).abs().max()) > 0.05


def test_large_mean_keeps_its_precision():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, 6, 6, generator=g) + 1e4  # mean 1e4, std 1
    x64 = x.double()
    true_var = x64.var(dim=(0, 2, 3), unbiased=False)
    naive = (x * x).mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3)) ** 2  # E[x²] − E[x]² in float32
    assert float((naive.double() - true_var).abs().max()) > 1.0  # the naive formula is useless here
    mean, var, n = sync_batch_stats(x)
    assert n == 32 * 36
    assert torch.allclose(var.double(), true_var, rtol=1e-4)
    ref, syn = _bn_pair(nn.BatchNorm2d, CPUSyncBatchNorm, 4)
    with torch.no_grad():
        want = ref(x)
        got = syn(x)
    y64 = (x64 - x64.mean(dim=(0, 2, 3), keepdim=True)) / (true_var.view(1, -1, 1, 1) + 1e-5).sqrt()
    y64 = y64 * ref.weight.detach().double().view(1, -1, 1, 1) + ref.bias.detach().double().view(1, -1, 1, 1)
    # fp32 cannot hold 1e4 to better than 1e-3; we are as close to the float64 truth as BatchNorm itself is
    assert float((got.double() - y64).abs().max()) < 2e-3
    assert float((got - want).abs().max()) < 3e-3
    assert torch.allclose(syn.running_var, ref.running_var, rtol=1e-4)
    assert torch.allclose(syn.running_mean, ref.running_mean, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1), (1, 3, 1, 1, 1)])
def test_one_value_per_channel_is_an_error_in_training(shape):
    x = torch.randn(*shape)
    syn = {2: CPUSyncBatchNorm1d, 4: CPUSyncBatchNorm, 5: CPUSyncBatchNorm3d}[len(shape)](3).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        syn(x)
    assert torch.isfinite(syn.running_var).all() and int(syn.num_batches_tracked) == 0
    syn.eval()
    assert torch.isfinite(syn(x)).all()  # eval uses the running stats, as BatchNorm


def test_every_batchnorm_kind_is_converted_keeping_its_tensors():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(4 * 6, 5), nn.BatchNorm1d(5),
                          nn.Unflatten(1, (5, 1, 1)), nn.BatchNorm2d(5),
                          nn.Sequential(nn.Unflatten(1, (5, 1)), nn.BatchNorm3d(5, momentum=None)))
    model[4].eval()
    before = {k: v for k, v in model.state_dict().items()}
    params = {k: id(p) for k, p in model.named_parameters()}
    convert_sync_batchnorm(model, CPU)
    assert type(model[1]) is CPUSyncBatchNorm1d and type(model[4]) is CPUSyncBatchNorm1d
    assert type(model[6]) is CPUSyncBatchNorm and type(model[7][1]) is CPUSyncBatchNorm3d
    assert isinstance(model[6], nn.BatchNorm2d) and isinstance(model[1], nn.BatchNorm1d)  # isinstance checks hold
    assert model[7][1].momentum is None and not model[4].training and model[1].training
    assert {k: id(p) for k, p in model.named_parameters()} == params  # same Parameter objects
    after = model.state_dict()
    assert list(after) == list(before) and all(after[k] is before[k] or torch.equal(after[k], before[k])
                                               for k in before)
    out = model.train()(torch.randn(6, 2, 8))
    assert out.shape == (6, 5, 1, 1, 1)
    # a bare batch norm is returned converted (there is no parent to put it in)
    assert type(convert_sync_batchnorm(nn.BatchNorm1d(3), CPU)) is CPUSyncBatchNorm1d


def test_single_process_equals_batchnorm_for_1d_2d_3d():
    g = torch.Generator().manual_seed(2)
    for ref_cls, syn_cls, shape in ((nn.BatchNorm1d, CPUSyncBatchNorm1d, (10, 3)),
                                    (nn.BatchNorm1d, CPUSyncBatchNorm1d, (10, 3, 7)),
                                    (nn.BatchNorm2d, CPUSyncBatchNorm, (4, 3, 5, 5)),
                                    (nn.BatchNorm3d, CPUSyncBatchNorm3d, (2, 3, 2, 3, 4))):
        x = torch.randn(*shape, generator=g) * 2 + 1
        ref, syn = _bn_pair(ref_cls, syn_cls, 3)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        proj = torch.randn(*shape, generator=g)
        (ref(xa) * proj).sum().backward()
        (syn(xb) * proj).sum().backward()
        assert torch.allclose(xa.grad, xb.grad, atol=1e-5), ref_cls
        assert torch.allclose(ref.weight.grad, syn.weight.grad, atol=1e-4)
        assert torch.allclose(ref.running_var, syn.running_var, atol=1e-6)


# -- 2 gloo ranks with unequal shards == one BatchNorm on the whole batch --------------------------------------

SPLIT = (5, 3)  # rank 0 holds 5 samples, rank 1 holds 3: Chan's merge must weight by count


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(kind: str):
    g = torch.Generator().manual_seed(7)
    shape = {"1d": (8, 3), "2d": (8, 3, 4, 4)}[kind]
    x = torch.randn(*shape, generator=g) * 3 + 5
    x2 = torch.randn(*shape, generator=g) * 0.5 - 2
    proj = torch.randn(*shape, generator=g)
    return x, x2, proj


def _make(kind: str, sync: bool):
    ref_cls, syn_cls = {"1d": (nn.BatchNorm1d, CPUSyncBatchNorm1d), "2d": (nn.BatchNorm2d, CPUSyncBatchNorm)}[kind]
    ref, syn = _bn_pair(ref_cls, syn_cls, 3)
    return syn if sync else ref


def _run(bn, xs, proj):
    """Two training steps; returns outputs and input gradients (weight/bias gradients accumulate)."""
    outs, grads = [], []
    for x in xs:
        x = x.clone().requires_grad_()
        y = bn(x)
        (y * proj).sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
    return outs, grads


def _syncbn_worker(rank: int, world: int, port: int, kind: str, out: str) -> None:
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    x, x2, proj = _data(kind)
    lo = sum(SPLIT[:rank])
    sl = slice(lo, lo + SPLIT[rank])
    bn = _make(kind, sync=True)
    outs, grads = _run(bn, [x[sl], x2[sl]], proj[sl])
    torch.save({"outs": outs, "grads": grads, "wgrad": bn.weight.grad, "bgrad": bn.bias.grad,
                "state": {k: v.clone() for k, v in bn.state_dict().items()}}, f"{out}.{rank}")
    dist.destroy_process_group()




@pytest.mark.parametrize("kind", ["2d", "1d"])
def test_two_gloo_ranks_equal_batchnorm_on_the_whole_batch(kind, tmp_path):
    out = str(tmp_path / "bn")
    spawn(_syncbn_worker, (2, _free_port(), kind, out))
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    x, x2, proj = _data(kind)
    ref = _make(kind, sync=False)
    outs, grads = _run(ref, [x, x2], proj)
    for step in range(2):
        assert torch.allclose(torch.cat([r0["outs"][step], r1["outs"][step]]), outs[step], atol=1e-5), step
        assert torch.allclose(torch.cat([r0["grads"][step], r1["grads"][step]]), grads[step], atol=1e-5), step
    # per-rank weight/bias gradients sum (what DDP's all-reduce does, before its 1/world) to the whole batch's
    assert torch.allclose(r0["wgrad"] + r1["wgrad"], ref.weight.grad, atol=1e-4)
    assert torch.allclose(r0["bgrad"] + r1["bgrad"], ref.bias.grad, atol=1e-4)
    for k, v in ref.state_dict().items():
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # both ranks hold the same running stats
        assert torch.allclose(r0["state"][k].double(), v.double(), rtol=1e-6, atol=1e-6), k
