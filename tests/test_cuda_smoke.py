"""GPU smoke tests (``-m cuda``): skipped cleanly on a machine without CUDA; ``scripts/cuda_smoke.sh`` runs them.

What they check on a real GPU, each in seconds on tiny data (digits, resnet20 / lenet5):
train → prune → finetune with ``--amp`` (float16 autocast + GradScaler) keeping masks exactly zero; resume; sharded
evaluation; and, with two GPUs, 2-rank NCCL DDP (weights vs one process, identical batches, SyncBatchNorm, the
same error on every rank for a non-finite loss) and ``torchrun prunekit train --sync-bn``.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


def _main(*argv: str) -> int:
    from prunekit.cli import main

    return main([str(a) for a in argv])


def _digits(n_train=512, n_test=256):
    from prunekit.data import get_dataset, subset

    return subset(get_dataset("digits", train=True), n_train), subset(get_dataset("digits", train=False), n_test)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "base"
    rc = _main("train", "--model", "resnet20", "--dataset", "digits", "--epochs", 4, "--lr", 0.1, "--device", "cuda",
               "--no-progress", "--out", out)
    assert rc == 0
    return out


def test_train_on_cuda(trained):
    s = json.loads((trained / "summary.json").read_text())
    assert s["top1"] is not None and s["top1"] > 30.0, s["top1"]  # chance is 10%
    state = torch.load(trained / "train_state.pt", weights_only=True)
    assert state["cuda_rng"], "the CUDA RNG state is saved for resume"


def test_prune_then_finetune_with_fp16_amp_keeps_masks_exact(trained):
    from prunekit import load_checkpoint

    pruned, ft = trained.parent / "gp80", trained.parent / "ft"
    assert _main("prune", "--checkpoint", trained, "--dataset", "digits", "--method", "gp", "--ratio", 0.8,
                 "--device", "cuda", "--out", pruned) == 0
    assert _main("finetune", "--checkpoint", pruned, "--dataset", "digits", "--epochs", 2, "--lr", 0.01, "--amp",
                 "--device", "cuda", "--no-progress", "--out", ft) == 0
    ck = load_checkpoint(ft)
    assert ck.masks, "finetune keeps the masks"
    params = dict(ck.model.named_parameters())
    for name, m in ck.masks.items():
        assert int((params[name][~m] != 0).sum()) == 0, name  # exactly 0.0 after fp16 AMP training
        assert int((params[name][m] != 0).sum()) > 0, name
    state = torch.load(ft / "train_state.pt", weights_only=True)
    assert state["scaler"] and state["scaler"].get("scale") is not None, "GradScaler was enabled"
    s = json.loads((ft / "summary.json").read_text())
    assert s["top1"] is not None and s["top1"] > 30.0


def test_amp_step_is_float16_with_loss_scaling():
    from prunekit.engine import Hook
    from prunekit.engine.trainer import TrainConfig, Trainer
    from prunekit.models import create_model

    seen = {}

    class Peek(Hook):
        def transform_loss(self, trainer, loss, outputs, inputs, targets):
            seen["dtype"] = outputs.dtype
            return loss

    train, _ = _digits(128, 32)
    t = Trainer(create_model("lenet5", num_classes=10, in_channels=1), train, None,
                TrainConfig(epochs=1, batch_size=32, lr=0.01, device="cuda", amp=True, max_steps_per_epoch=2),
                hooks=[Peek()])
    t.fit()
    assert seen["dtype"] == torch.float16 and t.scaler.is_enabled() and t.scaler.get_scale() > 1


def test_resume_continues_the_run(tmp_path):
    from prunekit.engine.trainer import TrainConfig, fit
    from prunekit.models import create_model

    train, test = _digits(256, 64)

    def cfg(epochs):
        return TrainConfig(epochs=epochs, batch_size=32, lr=0.05, seed=3, device="cuda", milestones=(1, 2),
                           max_steps_per_epoch=3)

    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        torch.manual_seed(0)
        full = create_model("resnet20", num_classes=10, in_channels=1)
        fit(full, train, test, cfg(3), out_dir=tmp_path / "full")
        torch.manual_seed(0)
        part = create_model("resnet20", num_classes=10, in_channels=1)
        fit(part, train, test, cfg(1), out_dir=tmp_path / "part")
        torch.manual_seed(123)
        resumed = create_model("resnet20", num_classes=10, in_channels=1)
        res = fit(resumed, train, test, cfg(3), out_dir=tmp_path / "part", resume=True,
                  resume_anyway=True)  # 1 -> 3 epochs is a changed configuration
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    worst = max(float((a.float() - b.float()).abs().max())
                for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    print(f"resume vs uninterrupted on CUDA: max weight difference {worst:.3e} (0 = bit-exact)")
    assert worst < 1e-3


def test_evaluation_on_cuda_matches_cpu():
    from prunekit.engine import evaluate
    from prunekit.models import create_model

    _, test = _digits(8, 101)
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    cpu = evaluate(model, test, batch_size=16, device="cpu")
    gpu = evaluate(model.to("cuda"), test, batch_size=16, device="cuda")
    assert gpu["n"] == cpu["n"] == 101
    assert abs(gpu["top1"] - cpu["top1"]) <= 100.0 / 101 + 1e-9  # at most one near-tie may flip
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-3)


# -- two GPUs: NCCL ------------------------------------------------------------------------------------------------

def _nccl_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch.distributed as dist

    from prunekit.engine import Hook, evaluate
    from prunekit.engine.distributed import env_dist_info
    from prunekit.engine.trainer import TrainConfig, fit
    from prunekit.errors import PrunekitError
    from prunekit.models import create_model

    torch.cuda.set_device(rank)
    torch.backends.cudnn.allow_tf32 = False  # compare float32 with float32: TF32 convs round to 10 bits
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=60))
    train, test = _digits(128, 101)
    cfg = dict(epochs=1, batch_size=32, lr=0.01, seed=3, device="cuda", schedule="constant", max_steps_per_epoch=2)
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    fit(model, train, None, TrainConfig(**cfg, sync_bn=True))
    direct = evaluate(model, test, batch_size=16, dist=env_dist_info())
    torch.save({"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "eval": direct},
               f"{out}.{rank}")

    class NaNOnRank1(Hook):
        def transform_loss(self, trainer, loss, outputs, inputs, targets):
            return loss * float("nan") if trainer.dist.rank == 1 and trainer.step == 1 else loss

    try:
        fit(create_model("lenet5", num_classes=10, in_channels=1), train, None,
            TrainConfig(**{**cfg, "max_steps_per_epoch": 3}, log_interval=2), hooks=[NaNOnRank1()])
        msg = "no error"
    except PrunekitError as e:
        msg = str(e)
    with open(f"{out}.nan.{rank}", "w") as f:
        f.write(msg)
    dist.destroy_process_group()


@two_gpus
def test_two_rank_nccl_ddp(tmp_path):
    import torch.multiprocessing as mp

    from prunekit.engine import evaluate
    from prunekit.engine.trainer import TrainConfig, fit
    from prunekit.models import create_model

    out = str(tmp_path / "nccl")
    ctx = mp.spawn(_nccl_worker, args=(2, _free_port(), out), nprocs=2, join=False)
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("NCCL workers hung")
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    train, test = _digits(128, 101)
    torch.manual_seed(0)
    single = create_model("resnet20", num_classes=10, in_channels=1)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        fit(single, train, None, TrainConfig(epochs=1, batch_size=32, lr=0.01, seed=3, device="cuda:0",
                                             schedule="constant", max_steps_per_epoch=2))
    worst = max(float((r0["state"][k].float() - v.detach().cpu().float()).abs().max())
                for k, v in single.state_dict().items() if not k.endswith("num_batches_tracked"))
    print(f"NCCL DDP (SyncBatchNorm) vs one GPU after 2 steps: max difference {worst:.3e}")
    assert worst < 1e-4
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # SyncBN: identical buffers too
    assert r0["eval"] == r1["eval"] and r0["eval"]["n"] == 101
    single_eval = evaluate(single, test, batch_size=16)
    assert abs(r0["eval"]["top1"] - single_eval["top1"]) <= 100.0 / 101 + 1e-9
    msgs = [open(f"{out}.nan.{r}").read() for r in (0, 1)]
    assert msgs[0] == msgs[1] and "diverged at epoch 1, step 2" in msgs[0], msgs


@two_gpus
def test_torchrun_train_with_sync_bn_on_two_gpus(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "prunekit", "train", "--model", "resnet20", "--dataset", "digits", "--limit", "256", "--epochs", "2",
           "--batch-size", "64", "--device", "cuda", "--sync-bn", "--amp", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["top1"] is not None and s["epochs"] == 2
