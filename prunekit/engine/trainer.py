"""The training loop: one loop for baseline training, sparsity training, finetuning, Scratch-E/B and distillation.

Features plug in through :mod:`prunekit.engine.hooks`; masks are first-class (enforced exactly and saved with
every checkpoint). Outputs in ``out_dir``: ``model.safetensors`` (last), ``best.safetensors``, ``log.csv`` (one
row per epoch), ``train_state.pt`` (optimizer, RNG, progress, the run's configuration) for an exact ``resume``
and, with ``TrainConfig(tensorboard=True)``, TensorBoard scalars in ``tensorboard/``.

The caller's global RNG state is left as it was: the run seeds and uses torch's global generators inside
``torch.random.fork_rng`` (so dropout & co. are bit-reproducible from ``config.seed``), and restores them after.
A resume refuses a run whose configuration or inputs changed (:mod:`prunekit.engine.resume`: the result-changing
config fields, the initial weights, the data) unless ``resume_anyway``; the changes are then reported in
``FitResult.resumed_with_changes``.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import load_state_strict, load_train_state, save_model, save_train_state
from ..errors import CheckpointError, PrunekitError, check_range
from ..utils.io import write_csv
from .distributed import (DistInfo, all_reduce_min, all_reduce_sum, barrier, env_dist_info, init_distributed,
                          resolve_device)
from .evaluate import accumulator_dtype, accuracy_hits, evaluate
from .hooks import Hook
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, lr_factor
from .resume import check_resume, run_inputs

log = logging.getLogger(__name__)

LOG_FIELDS = ["epoch", "time_s", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "best_top1"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (all JSON-able).

    >>> import prunekit
    >>> cfg = prunekit.TrainConfig(epochs=40, lr=0.01, weight_decay=0.0, milestones=(0.5, 0.75))
    >>> cfg.optimizer, cfg.to_dict()["milestones"]
    ('sgd', [0.5, 0.75])
    """

    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "multistep"
    milestones: Sequence[float] = (0.5, 0.75)
    gamma: float = 0.1
    step_size: int = 30
    warmup_epochs: float = 0.0
    per_step_schedule: bool = False
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    sync_bn: bool = False
    eval_batch_size: int = 256
    max_steps_per_epoch: int | None = None
    progress: bool = False
    num_workers: int = 0
    log_interval: int = 50  # steps between the host reads of loss / accuracy / the finite check (and epoch end)
    tensorboard: bool = False  # scalars per epoch (+ sparsity per layer) in out_dir/tensorboard


    def validate(self) -> "TrainConfig":
        """Raise a PrunekitError naming the first out-of-range field."""
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise PrunekitError(f"epochs must be a positive integer, got {self.epochs}")
        if self.batch_size < 1:
            raise PrunekitError(f"batch size must be positive, got {self.batch_size}")
        if int(self.log_interval) != self.log_interval or self.log_interval < 1:
            raise PrunekitError(f"log interval must be a positive number of steps, got {self.log_interval}")
        check_range("lr", self.lr, 0.0, 100.0, low_open=True)
        check_range("weight decay", self.weight_decay, 0.0, 1.0)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("label smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        if self.optimizer not in OPTIMIZERS:
            raise PrunekitError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise PrunekitError(f"unknown LR schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


@dataclass
class FitResult:
    """What a training run produced."""

    best_top1: float | None
    best_epoch: int | None
    final: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    #: ``{field: [old, new]}`` when the run was resumed with ``resume_anyway`` under a changed configuration
    resumed_with_changes: dict[str, list[Any]] | None = None


class Trainer:
    """Runs :class:`TrainConfig` on a model; hooks receive this object (``module``, ``optimizer``, ``epoch``...)."""

    def __init__(self, model: nn.Module, train_data: Any, val_data: Any, config: TrainConfig, *,
                 masks: Mapping[str, torch.Tensor] | None = None, hooks: Sequence[Hook] = (),
                 out_dir: str | Path | None = None, extra_meta: Mapping[str, Any] | None = None):
        from ..pruning.sparsifier import MaskHook

        self.config = config.validate()
        self.dist: DistInfo = env_dist_info()
        self.device = resolve_device(config.device, self.dist)
        init_distributed(self.device)
        self.module = model.to(self.device)
        if config.sync_bn and self.dist.enabled:
            from .syncbn import convert_sync_batchnorm

            self.module = convert_sync_batchnorm(self.module, self.device)
        self.train_data, self.val_data = train_data, val_data
        self.masks = {k: v.to(torch.bool) for k, v in masks.items()} if masks else None
        self.hooks: list[Hook] = list(hooks) + ([MaskHook(self.masks)] if self.masks else [])
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.tensorboard = None
        if config.tensorboard and self.dist.is_main:
            from .tensorboard import TensorBoardWriter

            if self.out_dir is None:
                raise PrunekitError("TensorBoard logging writes into the output folder: give out_dir (--out)")
            self.tensorboard = TensorBoardWriter(self.out_dir / "tensorboard")
        self.extra_meta = dict(extra_meta or {})
        self.optimizer = build_optimizer(self.module.parameters(), config.optimizer, config.lr,
                                         momentum=config.momentum, nesterov=config.nesterov,
                                         weight_decay=config.weight_decay)
        # AMP: float16 + loss scaling on CUDA; bfloat16 autocast (no scaling needed) on CPU.
        self.amp = bool(config.amp)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self.epoch = 0
        self.step = 0
        self.best_top1: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.inputs: dict[str, Any] = {}
        self.resumed_with_changes: dict[str, list[Any]] | None = None

    # -- model wrapping ---------------------------------------------------------------------------------------
    def _wrapped(self) -> nn.Module:
        if not self.dist.enabled:
            return self.module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.module, device_ids=ids)

    def _loader(self):
        from ..data.loader import BatchLoader

        return BatchLoader(self.train_data, batch_size=self.config.batch_size, shuffle=True, seed=self.config.seed,
                           rank=self.dist.rank, world_size=self.dist.world_size, device=self.device, train=True,
                           num_workers=self.config.num_workers)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _save(self) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        extra = dict(self.extra_meta, epoch=self.epoch + 1, train_config=self.config.to_dict())
        save_model(self.module, self.out_dir / "model.safetensors", masks=self.masks, extra=extra)
        if self.history and self.history[-1].get("best_epoch_now"):
            save_model(self.module, self.out_dir / "best.safetensors", masks=self.masks, extra=extra)
        rows = [{k: v for k, v in r.items() if k in LOG_FIELDS} for r in self.history]
        write_csv(self.out_dir / "log.csv", rows, LOG_FIELDS)
        state = {  # one atomic file holds everything resume needs, weights included: never out of step
            "model_name": getattr(self.module, "prunekit_name", None),
            "model": {k: v.detach().to("cpu") for k, v in self.module.state_dict().items()},
            "masks": dict(self.masks or {}),
            "epoch": self.epoch + 1,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "config": self.config.to_dict(),
            "inputs": self.inputs,
            "resumed_with_changes": self.resumed_with_changes,
        }
        save_train_state(state, self.out_dir / "train_state.pt")

    def _run_inputs(self) -> dict[str, Any]:
        """What, besides the config, determines the run: the weights and masks it starts from, the data, and the
        settings the caller records with it (``extra_meta``: e.g. distillation temperature, sparsity_reg)."""
        import json

        inputs = run_inputs(self.module, self.masks, self.train_data, self.val_data)
        inputs["settings"] = json.loads(json.dumps(self.extra_meta, default=str))
        return inputs

    def _check_resume(self, state: Mapping[str, Any], resume_anyway: bool) -> None:
        """Refuse (or, with ``resume_anyway``, record) a resume under another configuration or other inputs."""
        self.resumed_with_changes = check_resume(state, self.config.to_dict(), self.inputs, self.out_dir,
                                                 resume_anyway)

    def _try_resume(self, resume_anyway: bool = False) -> int:
        """Restore model, optimizer, RNG and progress from ``out_dir``; return the epoch to start from."""
        if self.out_dir is None or not (self.out_dir / "train_state.pt").is_file():
            return 0
        state = load_train_state(self.out_dir / "train_state.pt")
        name = getattr(self.module, "prunekit_name", None)
        if state.get("model_name") != name:
            raise CheckpointError(f"cannot resume: {self.out_dir} holds a {state.get('model_name')!r} run, "
                                  f"not {name!r}")
        self._check_resume(state, resume_anyway)
        load_state_strict(self.module, state["model"], str(self.out_dir / "train_state.pt"))
        if state["masks"]:
            self.masks = {k: v.to(torch.bool) for k, v in state["masks"].items()}
            from ..pruning.sparsifier import MaskHook

            for h in self.hooks:
                if isinstance(h, MaskHook):
                    h.set_masks(self.masks)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            if index < len(state["cuda_rng"]):
                torch.cuda.set_rng_state(state["cuda_rng"][index], self.device)
        self.best_top1, self.best_epoch = state["best_top1"], state["best_epoch"]
        self.history = list(state["history"])
        return int(state["epoch"])

    # -- the loop ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _seeded_global_rng(self) -> Iterator[None]:
        """Fork the global generators this run uses (CPU, and its CUDA device) and seed them with ``config.seed``;
        the caller's states come back when the block ends."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.random.default_generator.manual_seed(int(self.config.seed))
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(int(self.config.seed))
            yield

    def fit(self, resume: bool = False, resume_anyway: bool = False) -> FitResult:
        """Train for ``config.epochs`` (continuing a previous run in ``out_dir`` when ``resume``).

        A resume under a changed configuration (see :data:`.resume.RESULT_FIELDS`) or from other initial weights or data
        raises a :class:`CheckpointError` listing the differences, unless ``resume_anyway`` (then they are in
        ``FitResult.resumed_with_changes``). The caller's global RNG state is unchanged afterwards."""
        try:
            with self._seeded_global_rng():
                return self._fit(resume, resume_anyway)
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()

    def _fit(self, resume: bool, resume_anyway: bool) -> FitResult:
        cfg = self.config
        self.inputs = self._run_inputs()
        start = self._try_resume(resume_anyway) if resume else 0
        net = self._wrapped()
        loader = self._loader()
        steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        if steps == 0:
            raise PrunekitError("the training set is empty")
        for h in self.hooks:
            h.on_fit_start(self)
        for epoch in range(start, cfg.epochs):
            self.epoch = epoch
            t0 = time.perf_counter()
            train_stats, lr = self._train_epoch(net, loader, steps)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, **train_stats}
            if self.val_data is not None:  # every rank evaluates its shard; all get the whole set's counts
                self._broadcast_buffers()
                val = evaluate(self.module, self.val_data, cfg.eval_batch_size, self.device, dist=self.dist)
                row.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"])
                improved = self.best_top1 is None or val["top1"] > self.best_top1
                if improved:
                    self.best_top1, self.best_epoch = val["top1"], epoch + 1
                row["best_epoch_now"] = improved
            row["best_top1"] = self.best_top1
            row["time_s"] = round(time.perf_counter() - t0, 3)
            for h in self.hooks:
                h.on_epoch_end(self, epoch, row)
            self.history.append(row)
            self._save()
            if self.tensorboard is not None:  # after the save: a killed run's resume does not log an epoch twice
                self.tensorboard.log_epoch(row, self.masks)
            if self.dist.is_main:
                self._log_epoch(row)
            barrier(self.dist)
        final = dict(self.history[-1]) if self.history else {}
        return FitResult(best_top1=self.best_top1, best_epoch=self.best_epoch, final=final,
                         history=list(self.history), out_dir=self.out_dir,
                         resumed_with_changes=self.resumed_with_changes)

    def _broadcast_buffers(self) -> None:
        """Give every rank rank 0's buffers (BN running stats): without SyncBN each rank's last forward updated them
        from its own shard, and the sharded evaluation must use one model, the one rank 0 saves. (DDP broadcasts
        them from rank 0 again at the next forward anyway, so training is unchanged.)"""
        if not self.dist.enabled:
            return
        import torch.distributed as dist

        for b in self.module.buffers():
            dist.broadcast(b, src=0)

    def _train_epoch(self, net: nn.Module, loader, steps: int) -> tuple[dict[str, float], float]:
        """One epoch. Loss sum, top-1 hits, sample count and the non-finite-loss flag are accumulated on the device
        and read by the host (and, under DDP, all-reduced) only every ``log_interval`` steps and at the epoch end:
        no per-step synchronisation stalls a GPU. A non-finite loss on any rank makes every rank raise the same
        error at the next check (after at most ``log_interval`` steps; nothing of those steps is saved)."""
        cfg = self.config
        net.train()
        loader.set_epoch(self.epoch)
        # loss sum, top-1 hits, samples, non-finite losses, first non-finite step (inf: none). float64 sums of the
        # float32 loss times the batch size: the same rounding, in the same order, as summing Python floats.
        acc = torch.zeros(5, dtype=accumulator_dtype(self.device), device=self.device)
        acc[4] = float("inf")
        lr = cfg.lr
        bar = self._progress(steps)
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            self.step = step
            lr = cfg.lr * lr_factor(cfg.schedule, self.epoch, step, steps, cfg.epochs, milestones=cfg.milestones,
                                    gamma=cfg.gamma, step_size=cfg.step_size, warmup_epochs=cfg.warmup_epochs,
                                    per_step=cfg.per_step_schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                out = net(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
                for h in self.hooks:
                    loss = h.transform_loss(self, loss, out, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.scaler.is_enabled():
                self.scaler.unscale_(self.optimizer)
            for h in self.hooks:
                h.after_backward(self)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for h in self.hooks:
                h.after_step(self)
            with torch.no_grad():
                lossd = loss.detach().to(acc.dtype)
                bad = ~torch.isfinite(lossd)
                acc[0] += lossd * y.numel()
                acc[1] += accuracy_hits(out.detach().float(), y, (1,))[0].to(acc.dtype)
                acc[2] += y.numel()
                acc[3] += bad.to(acc.dtype)
                acc[4] = torch.where(bad, acc[4].clamp(max=float(step)), acc[4])  # scalars only: no copy
            if bar is not None:
                bar.update(1)
            if (step + 1) % cfg.log_interval == 0 and step + 1 < steps:
                loss_so_far = self._sync_totals(acc)[0]
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_so_far:.3f}", lr=f"{lr:.4g}")
        if bar is not None:
            bar.close()
        loss_mean, top1 = self._sync_totals(acc)
        return {"train_loss": loss_mean, "train_top1": top1}, lr

    def _sync_totals(self, acc: torch.Tensor) -> tuple[float, float]:
        """The host read (one per log interval): global ``(mean loss, top-1 %)`` so far; raises on every rank
        alike if any rank has seen a non-finite loss."""
        totals = all_reduce_sum(acc[:4].clone(), self.dist)
        loss_sum, hits, n, bad = totals.tolist()
        if bad > 0:
            first = all_reduce_min(acc[4:5].clone(), self.dist).item()
            raise PrunekitError(f"training diverged at epoch {self.epoch + 1}, step {int(first) + 1}: non-finite "
                                f"loss (nan or inf) in {int(bad)} step(s) summed over ranks; try a lower --lr")
        n = max(n, 1.0)
        return loss_sum / n, 100.0 * hits / n

    def _progress(self, steps: int):
        if not (self.config.progress and self.dist.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=steps, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", leave=False, unit="batch")

    def _log_epoch(self, row: Mapping[str, Any]) -> None:
        val = f" val top1 {row['val_top1']:.2f}" if row.get("val_top1") is not None else ""
        log.info("epoch %d/%d: loss %.4f train top1 %.2f%s lr %.4g (%.1fs)", row["epoch"], self.config.epochs,
                 row["train_loss"], row["train_top1"], val, row["lr"], row["time_s"])


def fit(model: nn.Module, train_data: Any, val_data: Any, config: TrainConfig, *,
        masks: Mapping[str, torch.Tensor] | None = None, hooks: Sequence[Hook] = (),
        out_dir: str | Path | None = None, resume: bool = False, resume_anyway: bool = False,
        extra_meta: Mapping[str, Any] | None = None) -> FitResult:
    """Train ``model`` in place; see :class:`Trainer` and :meth:`Trainer.fit`.

    >>> import prunekit
    >>> train = prunekit.get_dataset("digits", train=True)         # 8x8 digits, bundled: no download
    >>> test = prunekit.get_dataset("digits", train=False)
    >>> model = prunekit.create_model("resnet20", in_channels=1)
    >>> res = prunekit.prune_unstructured(model, "global", 0.5)
    >>> cfg = prunekit.TrainConfig(epochs=1, lr=0.05, max_steps_per_epoch=3, device="cpu")
    >>> out = prunekit.fit(model, train, test, cfg, masks=res.masks)   # out_dir="runs/a" to keep checkpoints
    >>> out.final["epoch"], all(bool((model.get_parameter(n)[~m] == 0).all()) for n, m in res.masks.items())
    (1, True)
    """
    trainer = Trainer(model, train_data, val_data, config, masks=masks, hooks=hooks, out_dir=out_dir,
                      extra_meta=extra_meta)
    return trainer.fit(resume=resume, resume_anyway=resume_anyway)

