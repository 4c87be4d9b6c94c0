"""DDP with 2 gloo processes on CPU: what is guaranteed and tested.

* the global batches are exactly those of the 1-process run (same samples, same augmentation, bit for bit), each
  rank holding its rows;
* the weights equal the 1-process run's to 1e-5 for the first steps (here 2); beyond that they are not promised to
  stay equal: the gradient all-reduce sums in another order than one process does, and training amplifies those
  rounding differences (docs/COMPATIBILITY.md gives measured numbers);
* evaluation is sharded and its counts all-reduced: top-1/top-5 equal single-process evaluation exactly, with no
  sample dropped or counted twice, also when the dataset size is not divisible by the world size;
* a non-finite loss on one rank makes every rank raise the same error; nobody hangs.
"""
from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
from dist_helpers import spawn

from prunekit.engine import Hook
from prunekit.engine.trainer import TrainConfig, fit
from prunekit.errors import PrunekitError
from prunekit.models import create_model

WORLD = 2


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=16, lr=0.01, seed=3, device="cpu", schedule="constant", max_steps_per_epoch=2)
    base.update(kw)
    return TrainConfig(**base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)




def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _random_masks(model, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters() if p.dim() > 1}


def _train_set(n=64):  # synthetic 8x8 one-channel images: the workers need not import scikit-learn for digits
    from prunekit.data import make_synthetic

    return make_synthetic(train=True, n=n, channels=1, size=8, classes=10)


def _val_set(n):
    from prunekit.data import make_synthetic

    return make_synthetic(train=False, n=n, channels=1, size=8, classes=10)


class _Record(Hook):
    """Keeps every step's (inputs, targets)."""

    def __init__(self):
        self.batches = []

    def transform_loss(self, trainer, loss, outputs, inputs, targets):
        self.batches.append((inputs.detach().clone(), targets.clone()))
        return loss


# -- weights for the first steps, and the exact data order / sharding ---------------------------------------------

def _ddp_worker(rank: int, world: int, port: int, model_name: str, sync_bn: bool, masked: bool, out: str) -> None:
    _env(rank, world, port)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=1)
    masks = _random_masks(model) if masked else None
    rec = _Record()
    fit(model, _train_set(), None, _cfg(sync_bn=sync_bn), masks=masks, hooks=[rec])
    torch.save({"batches": rec.batches, "state": {k: v.detach() for k, v in model.state_dict().items()}},
               f"{out}.{rank}")
    _destroy()


@pytest.mark.parametrize("model_name,sync_bn,masked", [("lenet5", False, False), ("resnet20", True, False),
                                                       ("lenet5", False, True)])
def test_ddp_first_steps_match_single_process_and_see_the_same_batches(model_name, sync_bn, masked, tmp_path):
    out = str(tmp_path / "ddp")
    spawn(_ddp_worker, (WORLD, _free_port(), model_name, sync_bn, masked, out))
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]

    torch.manual_seed(0)
    single = create_model(model_name, num_classes=10, in_channels=1)
    masks = _random_masks(single) if masked else None
    rec = _Record()
    fit(single, _train_set(), None, _cfg(), masks=masks, hooks=[rec])

    # the same global batches, bit for bit: rank r holds rows r::world of each
    assert len(rec.batches) == 2 and all(len(r["batches"]) == 2 for r in ranks)
    for step, (x, y) in enumerate(rec.batches):
        for r, got in enumerate(ranks):
            gx, gy = got["batches"][step]
            assert torch.equal(gx, x[r::WORLD]) and torch.equal(gy, y[r::WORLD]), (step, r)
    ddp_state = ranks[0]["state"]
    for n, m in (masks or {}).items():  # pruned weights stay exactly zero under DDP
        assert int((ddp_state[n][~m] != 0).sum()) == 0, n
    for k, v in single.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.allclose(ddp_state[k].float(), v.float(), atol=1e-5), (k, (ddp_state[k] - v).abs().max())
    for k, _ in single.named_parameters():  # DDP keeps the ranks' weights identical
        assert torch.equal(ranks[1]["state"][k], ddp_state[k]), k


# -- sharded evaluation, and a non-finite loss on one rank (one launch of 2 workers serves both tests) ------------

VAL_SIZES = (101, 7)  # neither divisible by the world size; 7 < one eval batch


class _NaNOnRank(Hook):
    def __init__(self, rank: int, step: int):
        self.rank, self.at = rank, step

    def transform_loss(self, trainer, loss, outputs, inputs, targets):
        if trainer.dist.rank == self.rank and trainer.step + 1 == self.at:
            return loss * float("nan")
        return loss


def _eval_and_nan_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from prunekit.engine import evaluate
    from prunekit.engine.distributed import env_dist_info

    _env(rank, world, port)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))  # a hang would end in 30 s, not 30 min
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)  # plain BN: buffers differ per rank
    res = fit(model, _train_set(), _val_set(VAL_SIZES[0]), _cfg(eval_batch_size=15))
    info = env_dist_info()
    direct = {n: evaluate(model, _val_set(n), batch_size=4, dist=info) for n in VAL_SIZES}
    torch.save({"row": {k: res.history[-1][k] for k in ("val_top1", "val_top5", "val_loss", "best_top1")},
                "direct": direct, "state": {k: v.detach() for k, v in model.state_dict().items()}}, f"{out}.{rank}")
    # rank 1 alone gets a NaN loss at step 2
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    try:
        fit(model, _train_set(), _val_set(20), _cfg(max_steps_per_epoch=3, log_interval=2),
            hooks=[_NaNOnRank(1, 2)], out_dir=f"{out}.run")
        msg = "no error"
    except PrunekitError as e:
        msg = str(e)
    with open(f"{out}.nan.{rank}", "w") as f:
        f.write(msg)
    _destroy()


@pytest.fixture(scope="module")
def eval_and_nan_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp_eval") / "w")
    spawn(_eval_and_nan_worker, (WORLD, _free_port(), out), timeout=120)
    return out


def test_sharded_evaluation_counts_every_sample_once(eval_and_nan_run):
    from prunekit.engine import evaluate

    out = eval_and_nan_run
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD))
    model = create_model("resnet20", num_classes=10, in_channels=1)
    model.load_state_dict(r0["state"])  # what rank 0 saves
    for res in (r0, r1):
        for n in VAL_SIZES:
            single = evaluate(model, _val_set(n), batch_size=64)
            got = res["direct"][n]
            assert got["n"] == single["n"] == n
            assert round(got["top1"] * n / 100) == round(single["top1"] * n / 100)  # the same counts
            assert got["top1"] == single["top1"] and got["top5"] == single["top5"]
            assert got["loss"] == pytest.approx(single["loss"], rel=1e-6)
    # the trainer's own epoch-end evaluation: identical on both ranks and equal to one process evaluating the
    # saved model (rank 0's buffers are broadcast first, so both shards are evaluated with the same model)
    assert r0["row"] == r1["row"]
    single = evaluate(model, _val_set(VAL_SIZES[0]))
    assert r0["row"]["val_top1"] == single["top1"] and r0["row"]["val_top5"] == single["top5"]
    assert r0["row"]["val_loss"] == pytest.approx(single["loss"], rel=1e-6)


def test_non_finite_loss_on_one_rank_stops_every_rank_with_the_same_error(eval_and_nan_run):
    out = eval_and_nan_run
    msgs = [open(f"{out}.nan.{r}").read() for r in range(WORLD)]
    assert msgs[0] == msgs[1], msgs
    assert "training diverged at epoch 1, step 2" in msgs[0] and "non-finite loss" in msgs[0]
    assert not os.path.exists(f"{out}.run/model.safetensors")  # nothing of the diverged run is saved


def test_unpadded_shards_partition_the_dataset():
    from prunekit.data.loader import BatchLoader

    ds = _val_set(VAL_SIZES[0])
    for world in (2, 3):
        seen = torch.cat([idx for r in range(world)
                          for idx, _, _ in BatchLoader(ds, 6, shuffle=False, rank=r, world_size=world, train=False,
                                                       pad_shards=False).batches()])
        assert sorted(seen.tolist()) == list(range(len(ds)))


# -- the CLI under torchrun ------------------------------------------------------------------------------------------

def test_prunekit_train_under_torchrun_writes_one_report(tmp_path):
    import json
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
    s = json.loads((out / "summary.json").read_text())
    assert s["top1"] is not None and s["epochs"] == 1
