"""Training engine: schedules, exact resume, reproducibility, masks under every optimizer, DDP equivalence."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from prunekit.engine.optim import lr_factor, resolve_milestones
from prunekit.engine.trainer import TrainConfig, fit
from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.pruning.masks import apply_masks


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=32, lr=0.05, seed=3, device="cpu", schedule="multistep")
    base.update(kw)
    return TrainConfig(**base)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_multistep_milestones_as_fractions_and_epochs():
    assert resolve_milestones((0.5, 0.75), 160) == [80, 120]
    assert resolve_milestones((20, 30), 40) == [20, 30]
    f = [lr_factor("multistep", e, 0, 10, 160) for e in (0, 79, 80, 119, 120)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_cosine_and_warmup_schedules():
    assert lr_factor("cosine", 0, 0, 10, 10) == pytest.approx(1.0)
    assert lr_factor("cosine", 5, 0, 10, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 5, 3, 10, 10, per_step=True) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.53)))
    assert lr_factor("constant", 0, 0, 10, 10, warmup_epochs=1) == pytest.approx(0.1)
    assert lr_factor("constant", 0, 9, 10, 10, warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor("linear", 4, 0, 10, 8) == pytest.approx(0.5)


def test_bad_config_is_a_user_error():
    with pytest.raises(PrunekitError, match="epochs"):
        _cfg(epochs=0).validate()
    with pytest.raises(PrunekitError, match="optimizer"):
        _cfg(optimizer="lion").validate()


def test_training_is_bit_reproducible_on_cpu(digits_small):
    train, test = digits_small
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        m = create_model("resnet20", num_classes=10, in_channels=1)
        fit(m, train, None, _cfg(epochs=1, max_steps_per_epoch=4))
        states.append(_state(m))
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_resume_equals_uninterrupted_training(tmp_path, digits_small):
    train, test = digits_small
    torch.manual_seed(0)
    full = create_model("resnet20", num_classes=10, in_channels=1)
    fit(full, train, test, _cfg(epochs=3, milestones=(1, 2), max_steps_per_epoch=3), out_dir=tmp_path / "full")

    torch.manual_seed(0)
    part = create_model("resnet20", num_classes=10, in_channels=1)
    fit(part, train, test, _cfg(epochs=1, milestones=(1, 2), max_steps_per_epoch=3), out_dir=tmp_path / "part")
    torch.manual_seed(123)  # a resumed process starts from a different RNG state: resume must restore it
    resumed = create_model("resnet20", num_classes=10, in_channels=1)
    res = fit(resumed, train, test, _cfg(epochs=3, milestones=(1, 2), max_steps_per_epoch=3),
              out_dir=tmp_path / "part", resume=True)
    a, b = _state(full), _state(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    log = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert len(log) == 4 and log[0].startswith("epoch,")


def test_resume_is_exact_even_if_killed_between_the_model_and_state_writes(tmp_path, digits_small):
    from prunekit import save_model

    train, _ = digits_small
    torch.manual_seed(0)
    full = create_model("resnet20", num_classes=10, in_channels=1)
    fit(full, train, None, _cfg(epochs=2, milestones=(1,), max_steps_per_epoch=3), out_dir=tmp_path / "full")
    torch.manual_seed(0)
    part = create_model("resnet20", num_classes=10, in_channels=1)
    fit(part, train, None, _cfg(epochs=1, milestones=(1,), max_steps_per_epoch=3), out_dir=tmp_path / "part")
    # the next epoch's model file landed but its train_state did not: resume must not use those weights
    save_model(create_model("resnet20", num_classes=10, in_channels=1), tmp_path / "part")
    resumed = create_model("resnet20", num_classes=10, in_channels=1)
    fit(resumed, train, None, _cfg(epochs=2, milestones=(1,), max_steps_per_epoch=3), out_dir=tmp_path / "part", resume=True)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_refuses_a_run_of_another_model(tmp_path, digits_small):
    train, _ = digits_small
    fit(create_model("resnet20", num_classes=10, in_channels=1), train, None, _cfg(epochs=1, max_steps_per_epoch=1),
        out_dir=tmp_path)
    with pytest.raises(PrunekitError, match="resume"):
        fit(create_model("lenet5", num_classes=10, in_channels=1), train, None, _cfg(epochs=2, max_steps_per_epoch=1),
            out_dir=tmp_path, resume=True)


def _random_masks(model, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters() if p.dim() > 1}


@pytest.mark.parametrize("optimizer,amp", [("sgd", False), ("adam", False), ("adamw", False), ("sgd", True)])
def test_masked_weights_stay_exactly_zero(optimizer, amp, digits_small, tmp_path):
    train, _ = digits_small
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    masks = _random_masks(model)
    cfg = _cfg(epochs=2, optimizer=optimizer, lr=0.01 if optimizer != "sgd" else 0.1, weight_decay=5e-4, amp=amp,
               max_steps_per_epoch=3)
    fit(model, train, None, cfg, masks=masks, out_dir=tmp_path)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert int((params[n][~m] != 0).sum()) == 0, n
        assert int((params[n][m] != 0).sum()) > 0.9 * int(m.sum()), n  # kept weights still train
    # resumed optimizer state (momentum / Adam moments) cannot revive pruned weights either
    fit(model, train, None, _cfg(**{**cfg.to_dict(), "epochs": 4}), masks=masks, out_dir=tmp_path, resume=True)
    for n, m in masks.items():
        assert int((dict(model.named_parameters())[n][~m] != 0).sum()) == 0, n


def test_checkpoint_of_a_masked_run_carries_its_masks(tmp_path, digits_small):
    from prunekit import load_checkpoint

    train, _ = digits_small
    model = create_model("resnet20", num_classes=10, in_channels=1)
    masks = _random_masks(model)
    apply_masks(model, masks)
    fit(model, train, None, _cfg(epochs=1, max_steps_per_epoch=2), masks=masks, out_dir=tmp_path)
    ck = load_checkpoint(tmp_path)
    assert set(ck.masks) == set(masks)
    assert all(torch.equal(ck.masks[k], masks[k]) for k in masks)


# -- DDP: 2 gloo processes == 1 process with the same global batch ---------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, model_name: str, sync_bn: bool, masked: bool, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from prunekit.data import get_dataset, subset

    train = subset(get_dataset("digits", train=True), 64)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=1)
    masks = _random_masks(model) if masked else None
    fit(model, train, None, _cfg(epochs=1, batch_size=16, lr=0.1, sync_bn=sync_bn, max_steps_per_epoch=2),
        masks=masks)
    if rank == 0:
        torch.save({k: v.detach() for k, v in model.state_dict().items()}, out)
    import torch.distributed as dist

    dist.destroy_process_group()


@pytest.mark.parametrize("model_name,sync_bn,masked", [("lenet5", False, False), ("resnet20", True, False),
                                                       ("lenet5", False, True)])
def test_ddp_two_processes_match_single_process(model_name, sync_bn, masked, tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(), model_name, sync_bn, masked, out), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)

    from prunekit.data import get_dataset, subset

    train = subset(get_dataset("digits", train=True), 64)
    torch.manual_seed(0)
    single = create_model(model_name, num_classes=10, in_channels=1)
    masks = _random_masks(single) if masked else None
    fit(single, train, None, _cfg(epochs=1, batch_size=16, lr=0.1, max_steps_per_epoch=2), masks=masks)
    for n, m in (masks or {}).items():  # pruned weights stay exactly zero under DDP
        assert int((ddp_state[n][~m] != 0).sum()) == 0, n
    for k, v in single.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.allclose(ddp_state[k].float(), v.float(), atol=1e-5), (k, (ddp_state[k] - v).abs().max())


def test_prunekit_train_under_torchrun_writes_one_report(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "prunekit", "train", "--model", "lenet5", "--dataset", "digits", "--limit", "64", "--epochs", "1",
           "--batch-size", "16", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 only
    import json

    s = json.loads((out / "summary.json").read_text())
    assert s["top1"] is not None and s["epochs"] == 1
