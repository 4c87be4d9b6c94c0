"""Pruning inside a PyTorch Lightning ``trainer.fit``: gradual (AGP) weight sparsity, then structured pruning.

    pip install 'prunekit[lightning]'
    python examples/lightning_agp.py                 # resnet20 on scikit-learn's digits (about 1.5 min on 2 busy CPUs)
    python examples/lightning_agp.py --ratio 0.9 --epochs 10

1. ``SparsityCallback(method="gp", schedule=AGP(...))``: one fit trains resnet20 and raises the sparsity of its
   conv+linear weights from 0 to ``--ratio`` with Zhu & Gupta's cubic schedule (masks updated twice an epoch,
   gradient accumulation over 2 batches); the callback's state goes into Lightning's checkpoints, so
   ``trainer.fit(module, ckpt_path=...)`` resumes the schedule exactly.
2. ``StructuredPruningCallback(at_epoch=2, ratio=0.5)``: another fit trains 2 epochs, removes half the channels of
   every prunable group (proved exact), rebuilds the optimizer and LR scheduler through ``configure_optimizers``
   and finetunes; the pruned model is saved in prunekit's format (``prunekit.load_model`` reads it back).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

import prunekit
from prunekit.integrations.lightning import SparsityCallback, StructuredPruningCallback
from prunekit.pruning import AGP


def loaders(batch_size: int = 64) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """Digits (bundled with scikit-learn, no download), normalised; train shuffled with a fixed generator."""
    out = []
    for train in (True, False):
        ds = prunekit.get_dataset("digits", train=train)
        data = torch.utils.data.TensorDataset(ds.eval_transform(ds.images).float(), ds.labels.long())
        out.append(torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=train,
                                               generator=torch.Generator().manual_seed(0) if train else None))
    return out[0], out[1]


class Classifier(pl.LightningModule):
    """The user's LightningModule: ``self.model`` is the network, SGD + cosine LR over the whole fit."""

    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.model = prunekit.create_model("resnet20", num_classes=10, in_channels=1)
        self.lr = lr

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_top1", (self(x).argmax(1) == y).float().mean() * 100, on_epoch=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        steps = max(1, self.trainer.estimated_stepping_batches - self.trainer.global_step)
        return [opt], [{"scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps), "interval": "step"}]


class PrintEpochs(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):  # after the epoch's validation
        m = trainer.callback_metrics
        extra = f"  sparsity {m['sparsity/total']:.4f}" if "sparsity/total" in m else ""
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: loss {m['loss']:.4f}  val top-1 "
              f"{m['val_top1']:.2f}%  params {prunekit.count_params(pl_module.model):,}{extra}", flush=True)


def trainer(out: Path, epochs: int, callbacks: list, **kw) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=pl.loggers.CSVLogger(out),
                      log_every_n_steps=5,
                      callbacks=[*callbacks, PrintEpochs()], enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(out), num_sanity_val_steps=0, **kw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = p.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(0)
    out = Path(args.out or tempfile.mkdtemp(prefix="prunekit-lightning-"))
    train, val = loaders()

    t0 = time.perf_counter()
    steps = args.epochs * -(-len(train) // 2)                       # optimizer steps with accumulation over 2
    per_epoch = steps // args.epochs
    schedule = AGP(start_step=per_epoch, end_step=steps - 2 * per_epoch, frequency=max(1, per_epoch // 2),
                   initial=0.0, final=args.ratio)
    print(f"[1/2] resnet20 on digits, {args.epochs} epochs, AGP to {args.ratio:.0%} of the conv+linear weights "
          f"over optimizer steps {schedule.start_step}..{schedule.end_step} of {steps}")
    module = Classifier()
    sparsity = SparsityCallback(method="gp", schedule=schedule)
    trainer(out / "agp", args.epochs, [sparsity], accumulate_grad_batches=2).fit(module, train, val)
    st = sparsity.sparsifier.sparsity()
    print(f"final sparsity {st['sparsity']:.4f}, {st['revived']} revived  "
          f"({st['pruned']:,} of {st['total']:,} weights; {time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    print("[2/2] resnet20: 2 epochs, remove 50% of the channels of every group at epoch 3, finetune 2 epochs")
    module = Classifier()
    structured = StructuredPruningCallback(at_epoch=2, ratio=0.5, input_size=(1, 8, 8), save_to=out / "pruned")
    trainer(out / "structured", 4, [structured]).fit(module, train, val)
    info = structured.result.info
    reloaded = prunekit.load_model(structured.saved)
    print(f"pruned at step {structured.pruned_at['global_step']}: max |pruned - dense| {info['max_abs_diff']:.1e}; "
          f"saved {structured.saved} ({prunekit.count_params(reloaded):,} params reloaded; "
          f"{time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
