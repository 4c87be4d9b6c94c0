"""prunekit inside PyTorch Lightning (the real package): SparsityCallback and StructuredPruningCallback.

Oracles are independent of the callbacks: sparsity is counted from the weights' exact zeros, "revived" from every
weight that was exactly zero at some batch end and is not at the end, N:M from the weights' blocks, the exactness
of a structured prune from the dense network with the removed units zeroed, resume from an uninterrupted run.
"""
from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pl = pytest.importorskip("lightning.pytorch")

from dist_helpers import spawn  # noqa: E402

import prunekit  # noqa: E402
from prunekit.errors import PrunekitError  # noqa: E402
from prunekit.integrations.lightning import SparsityCallback, StructuredPruningCallback  # noqa: E402
from prunekit.pruning import AGP  # noqa: E402

HIDDEN = 80
N_WEIGHTS = 64 * HIDDEN + HIDDEN * 10  # 5920: 80% is 4736 weights exactly


def _digits(n: int = 512) -> torch.utils.data.TensorDataset:
    ds = prunekit.get_dataset("digits", train=True)
    x = ds.eval_transform(ds.images[:n]).float()
    return torch.utils.data.TensorDataset(x, ds.labels[:n].long())


def _loader(n: int = 512, batch: int = 64) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(_digits(n), batch_size=batch, shuffle=False)


class MLP(pl.LightningModule):
    def __init__(self, seed: int = 0, optimizer: str = "sgd", lr: float = 0.05, net: nn.Module | None = None):
        super().__init__()
        torch.manual_seed(seed)
        self.model = net if net is not None else nn.Sequential(
            nn.Flatten(), nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
        self.optimizer, self.lr = optimizer, lr

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        if self.optimizer == "none":
            return None
        if self.optimizer == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=self.lr * 0.1, weight_decay=0.01)
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)]


class ZeroTracker(pl.Callback):
    """Every weight matrix's positions that were exactly 0.0 at some batch end (independent of the masks)."""

    def __init__(self):
        self.ever_zero: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for name, p in pl_module.named_parameters():
            if p.dim() > 1:
                z = p.detach() == 0
                self.ever_zero[name] = z if name not in self.ever_zero else (self.ever_zero[name] | z)

    def revived(self, pl_module) -> int:
        params = dict(pl_module.named_parameters())
        return sum(int((params[n].detach()[z] != 0).sum()) for n, z in self.ever_zero.items())


class Kill(pl.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("killed")


def _trainer(tmp_path: Path, callbacks, **kw) -> pl.Trainer:
    base = dict(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    base.update(kw)
    return pl.Trainer(callbacks=callbacks, **base)


def _zeros(module: nn.Module) -> int:
    return sum(int((p.detach() == 0).sum()) for p in module.parameters() if p.dim() > 1)


# ------------------------------------------------------------------------------------------------ weight-level
def test_agp_to_80_exact_no_revived(tmp_path):
    module, tracker = MLP(), ZeroTracker()
    cb = SparsityCallback(method="gp", schedule=AGP(0, 24, 4, 0.0, 0.8))
    trainer = _trainer(tmp_path, [cb, tracker])
    trainer.fit(module, _loader())
    assert trainer.global_step == 32 and cb.sparsifier.step_count == 32
    assert _zeros(module) == round(0.8 * N_WEIGHTS) == 4736        # exact 80% of the Linear weights
    assert tracker.revived(module) == 0
    assert trainer.callback_metrics["sparsity/total"].item() == pytest.approx(0.8)
    assert "sparsity/model.1.weight" in trainer.callback_metrics
    assert trainer.callback_metrics["sparsity/revived"].item() == 0


def test_accumulation_bf16_squash(tmp_path):
    """accumulate_grad_batches=2: the schedule counts optimizer steps; bf16 autocast on CPU; squash at the end."""
    module, tracker = MLP(seed=1, optimizer="adamw"), ZeroTracker()
    cb = SparsityCallback(method="gp", schedule=AGP(0, 12, 2, 0.0, 0.8), squash=True)
    trainer = _trainer(tmp_path, [cb, tracker], accumulate_grad_batches=2, precision="bf16-mixed")
    trainer.fit(module, _loader())
    assert trainer.global_step == 16 and cb.sparsifier.step_count == 16   # 8 batches/epoch -> 4 steps
    assert _zeros(module) == 4736 and tracker.revived(module) == 0
    assert cb.masks is not None and sum(int((~m).sum()) for m in cb.masks.values()) == 4736
    assert not cb.sparsifier.attached                                      # hooks removed by squash


def test_nm_2_4(tmp_path):
    module, tracker = MLP(seed=2, optimizer="adamw"), ZeroTracker()
    cb = SparsityCallback(method="2:4", scope="linear")
    trainer = _trainer(tmp_path, [cb, tracker], max_epochs=1)
    trainer.fit(module, _loader(256))
    for name in ("model.1.weight", "model.3.weight"):
        w = module.get_parameter(name).detach()
        blocks = (w != 0).reshape(w.shape[0], -1, 4).sum(-1)   # 4 consecutive inputs of each output row
        assert bool((blocks == 2).all()), name
    assert tracker.revived(module) == 0


class AtFitStart(pl.Callback):
    """What the SparsityCallback holds when fit starts (after a checkpoint's state was loaded)."""

    def __init__(self, cb: SparsityCallback):
        self.cb, self.seen = cb, None

    def on_fit_start(self, trainer, pl_module):
        sp = self.cb.sparsifier
        self.seen = (sp.step_count, sp.target, _zeros(pl_module))


def test_calibrated_wanda_once_then_held(tmp_path):
    """A calibrated method prunes once at setup with the calibration batches; the masks are then held."""
    module, tracker = MLP(seed=3), ZeroTracker()
    calib = [_digits(64).tensors[0]]
    cb = SparsityCallback(method="wanda", ratio=0.5, scope="linear", calibration_data=calib)
    trainer = _trainer(tmp_path, [cb, tracker], max_epochs=2)
    trainer.fit(module, _loader(256))
    for name in ("model.1.weight", "model.3.weight"):
        w = module.get_parameter(name).detach()
        assert bool(((w == 0).sum(1) == w.shape[1] // 2).all()), name   # Wanda: half of every output row
    assert tracker.revived(module) == 0


def _ckpt_run(tmp_path: Path, kill_at: int | None, ckpt: str | None, seed: int):
    module = MLP(seed=seed)
    cb = SparsityCallback(method="gp", schedule=AGP(0, 24, 4, 0.0, 0.8))
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="{step}", save_top_k=-1,
                                           every_n_epochs=1)
    cbs = [cb, ckpt_cb, AtFitStart(cb)] + ([Kill(kill_at)] if kill_at is not None else [])
    trainer = _trainer(tmp_path, cbs, enable_checkpointing=True)
    if kill_at is not None:
        with pytest.raises(RuntimeError, match="killed"):
            trainer.fit(module, _loader(), ckpt_path=ckpt)
    else:
        trainer.fit(module, _loader(), ckpt_path=ckpt)
    return module, cb, cbs[2]


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    full, full_cb, _ = _ckpt_run(tmp_path / "a", None, None, seed=0)
    _ckpt_run(tmp_path / "b", 16, None, seed=0)                       # killed at the start of epoch 3
    ckpt = tmp_path / "b" / "ckpt" / "step=16.ckpt"
    assert ckpt.is_file()
    resumed, res_cb, start = _ckpt_run(tmp_path / "b", None, str(ckpt), seed=7)  # other init: weights from ckpt
    # the schedule's state came back with the checkpoint: step 16, AGP target 0.8 - 0.8 (1 - 16/24)^3
    target = 0.8 - 0.8 * (1 - 16 / 24) ** 3
    assert start.seen[0] == 16 and start.seen[1] == pytest.approx(target)
    assert start.seen[2] == int(target * N_WEIGHTS + 0.5)
    assert res_cb.sparsifier.step_count == 32
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n                                   # bit-identical on CPU
    for n, m in full_cb.sparsifier.masks.items():
        assert torch.equal(m, res_cb.sparsifier.masks[n])


# ---------------------------------------------------------------------------------------------------- errors
def test_setup_errors(tmp_path):
    with pytest.raises(PrunekitError, match="no optimizer"):
        _trainer(tmp_path, [SparsityCallback(method="gp", ratio=0.5)], max_epochs=1).fit(
            MLP(optimizer="none"), _loader(64))
    module, tracker = MLP(), ZeroTracker()
    with pytest.raises(PrunekitError, match="only 8 optimizer steps"):
        _trainer(tmp_path, [SparsityCallback(method="gp", schedule=AGP(0, 20, 4, 0.0, 0.8)), tracker],
                 max_epochs=1).fit(module, _loader())
    assert not tracker.ever_zero                                       # failed before the first batch
    with pytest.raises(PrunekitError, match="calibration_data"):
        SparsityCallback(method="wanda", ratio=0.5)
    with pytest.raises(PrunekitError, match="ratio .* or a schedule"):
        SparsityCallback(method="gp")
    with pytest.raises(PrunekitError, match="never reached"):
        _trainer(tmp_path, [StructuredPruningCallback(at_epoch=3, ratio=0.5, input_size=(1, 8, 8))],
                 max_epochs=2).fit(MLP(), _loader(64))
    with pytest.raises(PrunekitError, match="list the StructuredPruningCallback first"):
        _trainer(tmp_path, [SparsityCallback(method="gp", ratio=0.5),
                            StructuredPruningCallback(at_epoch=1, ratio=0.5, input_size=(1, 8, 8))],
                 max_epochs=2).fit(MLP(), _loader(64))


# ------------------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), NODE_RANK="0",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    module = MLP(seed=10 + rank)                    # different init per rank: DDP broadcasts rank 0's weights
    # 30% pruned at step 0, i.e. in setup, on each rank's own init: the callback gives every rank rank 0's masks
    cb = SparsityCallback(method="gp", schedule=AGP(0, 12, 2, 0.3, 0.8))
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=out, callbacks=[cb])
    trainer.fit(module, _loader(512, 64))
    torch.save({"masks": cb.sparsifier.masks, "state": module.state_dict(), "step": trainer.global_step},
               os.path.join(out, f"rank{rank}.pt"))


def test_ddp_two_processes_masks_identical(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spawn(_ddp_worker, (port, str(tmp_path)), nprocs=2, timeout=90)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 16                               # 4 batches of 64 per rank and epoch
    assert r0["masks"].keys() == r1["masks"].keys()
    for n, m in r0["masks"].items():
        assert torch.equal(m, r1["masks"][n]), n
        assert torch.equal(r0["state"][n] == 0, ~m)                     # pruned exactly where masked
    assert sum(int((~m).sum()) for m in r0["masks"].values()) == 4736
    for n, t in r0["state"].items():
        assert torch.equal(t, r1["state"][n]), n


# ------------------------------------------------------------------------------------------------ structured
class Snapshot(pl.Callback):
    """A copy of the network at the start of epoch ``at`` (before the structured prune of that epoch)."""

    def __init__(self, at: int):
        self.at, self.model, self.params_after = at, None, None

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at and self.model is None:
            self.model = copy.deepcopy(pl_module.model)

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            self.params_after = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}


def _zeroed_reference(dense: nn.Module, keep: dict[str, list[int]]) -> nn.Module:
    """The dense network with every removed output unit (weight row and bias) set to zero."""
    ref = copy.deepcopy(dense)
    with torch.no_grad():
        for layer, kept in keep.items():
            mod = getattr(ref, layer)
            drop = [i for i in range(mod.weight.shape[0]) if i not in kept]
            mod.weight[drop] = 0
            mod.bias[drop] = 0
    return ref


def test_structured_prune_at_epoch_continues(tmp_path):
    net = prunekit.create_model("lenet5", num_classes=10, in_channels=1)
    module, snap, snap_after = MLP(net=net), Snapshot(2), Snapshot(2)
    cb = StructuredPruningCallback(at_epoch=2, ratio=0.5, input_size=(1, 8, 8), save_to=tmp_path / "pruned")
    x, y = _digits(256).tensors
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.reshape(-1, 1, 8, 8), y), batch_size=64)
    trainer = _trainer(tmp_path, [snap, cb, snap_after], max_epochs=3)   # the callbacks run in this order
    trainer.fit(module, loader)
    dense, at_prune, final = snap.model, snap_after.model, module.model
    assert cb.pruned_at == {"epoch": 2, "global_step": 8} and trainer.global_step == 12
    # the largest-L1 half of every layer's filters is kept (ratio 0.5 per group)
    keep = {}
    for layer, n in (("conv1", 20), ("conv2", 50), ("fc1", 500)):
        w = getattr(dense, layer).weight.detach()
        keep[layer] = sorted(torch.topk(w.abs().flatten(1).sum(1), n // 2).indices.tolist())
        assert getattr(at_prune, layer).weight.shape[0] == n // 2
    assert torch.equal(at_prune.conv1.weight, dense.conv1.weight[keep["conv1"]])
    # exact at the prune step: equal to the dense network with the removed units zeroed
    xs = x[:64].reshape(-1, 1, 8, 8)
    with torch.no_grad():
        ref, got = _zeroed_reference(dense, keep)(xs), at_prune(xs)
    assert (got - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    assert prunekit.count_params(final) < prunekit.count_params(dense) / 2
    # training continued with the rebuilt optimizer: it holds exactly the pruned network's parameters, which moved
    assert snap.params_after == {id(p) for p in module.parameters()}
    assert not torch.equal(final.fc1.weight, at_prune.fc1.weight)
    # the prunekit checkpoint (builder + plan + weights) reloads to the finetuned network
    loaded = prunekit.load_model(tmp_path / "pruned")
    with torch.no_grad():
        assert torch.equal(loaded(xs), final(xs))


def _structured_run(tmp_path: Path, kill_at: int | None, ckpt: str | None, seed: int):
    torch.manual_seed(seed)
    module = MLP(net=prunekit.create_model("lenet5", num_classes=10, in_channels=1))
    cb = StructuredPruningCallback(at_epoch=1, ratio=0.5, input_size=(1, 8, 8))
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="{step}", save_top_k=-1,
                                           every_n_epochs=1)
    x, y = _digits(256).tensors
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.reshape(-1, 1, 8, 8), y), batch_size=64)
    trainer = _trainer(tmp_path, [cb, ckpt_cb] + ([Kill(kill_at)] if kill_at else []), max_epochs=3,
                       enable_checkpointing=True)
    if kill_at:
        with pytest.raises(RuntimeError, match="killed"):
            trainer.fit(module, loader, ckpt_path=ckpt)
    else:
        trainer.fit(module, loader, ckpt_path=ckpt)
    return module, cb


def test_structured_killed_after_prune_resumes_exactly(tmp_path):
    full, _ = _structured_run(tmp_path / "a", None, None, seed=0)
    _structured_run(tmp_path / "b", 8, None, seed=0)                 # pruned at step 4, killed at step 8
    resumed, cb = _structured_run(tmp_path / "b", None, str(tmp_path / "b" / "ckpt" / "step=8.ckpt"), seed=3)
    assert cb.pruned_at == {"epoch": 1, "global_step": 4}             # the saved plan, not a new prune
    assert resumed.model.conv1.out_channels == 10
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n


def test_optional_dependency_errors(monkeypatch):
    """prunekit.integrations imports nothing heavy; a missing extra is one PrunekitError naming it."""
    import subprocess
    import sys

    code = ("import sys, prunekit.integrations; "
            "print(any(m in sys.modules for m in ('lightning', 'transformers', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    for mod, dep, extra in (("prunekit.integrations.lightning", "lightning.pytorch", "lightning"),
                            ("prunekit.integrations.transformers", "transformers", "transformers")):
        monkeypatch.delitem(sys.modules, mod, raising=False)
        monkeypatch.setitem(sys.modules, dep, None)                   # import of it raises ImportError
        with pytest.raises(PrunekitError, match=rf"pip install 'prunekit\[{extra}\]'"):
            __import__(mod)


def test_structured_before_fit_then_sparsity(tmp_path):
    """at_epoch=0 prunes channels before the optimizers exist; a SparsityCallback listed after it masks the
    smaller network's weights."""
    module = MLP(net=prunekit.create_model("lenet5", num_classes=10, in_channels=1))
    structured = StructuredPruningCallback(at_epoch=0, ratio=0.5, input_size=(1, 8, 8))
    sparsity, tracker = SparsityCallback(method="gp", ratio=0.5), ZeroTracker()
    x, y = _digits(128).tensors
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.reshape(-1, 1, 8, 8), y), batch_size=64)
    _trainer(tmp_path, [structured, sparsity, tracker], max_epochs=1).fit(module, loader)
    net = module.model
    assert (net.conv1.out_channels, net.conv2.out_channels, net.fc1.out_features) == (10, 25, 250)
    total = sum(m.weight.numel() for m in (net.conv1, net.conv2, net.fc1, net.fc2))
    assert _zeros(module) == round(0.5 * total) and tracker.revived(module) == 0
