"""Gradual (AGP) vs one-shot magnitude pruning in a hand-written PyTorch training loop.

    python examples/agp_digits.py                    # resnet20 on digits, 90% sparsity, seeds 0,1,2 (~2 min, 2 CPUs)
    python examples/agp_digits.py --seeds 0 --ratio 0.95

One dense resnet20 is trained per seed (plain loop, SGD + cosine). From it, with the same number of epochs each:

- **AGP**: train on while ``Sparsifier(method="gp", schedule=AGP(...))`` raises the sparsity from 0 to ``--ratio``
  with Zhu & Gupta's cubic schedule over the first ``--ramp`` fraction of the epochs (masks updated twice an epoch);
- **one-shot GP**: ``Sparsifier(method="gp", ratio=...)`` prunes everything at once, then the same finetune.

Nothing here uses prunekit's Trainer: the Sparsifier's hooks keep the pruned weights at exactly 0.0 under the
user's own optimizer (SGD with momentum and weight decay).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

import prunekit
from prunekit.data import BatchLoader, get_dataset
from prunekit.engine import evaluate
from prunekit.pruning import AGP, Sparsifier


def train(model, loader, epochs, lr, sparsifier=None, wd=1e-4):
    """The user's loop: SGD + momentum + weight decay, cosine LR per step; ``sparsifier.step()`` after each step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    if sparsifier is not None:
        sparsifier.attach(opt)
    model.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if sparsifier is not None:
                sparsifier.step()
    return model


def run_seed(seed, args, train_ds, test_ds):
    torch.manual_seed(seed)
    loader = BatchLoader(train_ds, batch_size=64, shuffle=True, seed=seed)
    dense = prunekit.create_model("resnet20", num_classes=10, in_channels=1)
    train(dense, loader, args.epochs, lr=0.1)
    row = {"dense": evaluate(dense, test_ds)["top1"]}
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    steps = args.finetune_epochs * len(loader)
    half_epoch = max(1, len(loader) // 2)

    end = max(half_epoch, round(args.ramp * steps) // half_epoch * half_epoch)
    row["agp"], row["agp_sparsity"], _ = pruned_run(
        state, seed, lambda m: Sparsifier(m, method="gp", schedule=AGP(0, end, half_epoch, 0.0, args.ratio)),
        train_ds, test_ds, args)
    row["oneshot"], row["oneshot_sparsity"], row["oneshot_before"] = pruned_run(
        state, seed, lambda m: Sparsifier(m, method="gp", ratio=args.ratio), train_ds, test_ds, args)
    return row


def pruned_run(state, seed, make_sparsifier, train_ds, test_ds, args):
    """From the dense ``state``: build the Sparsifier, train ``--finetune-epochs`` in the user's loop with it, bake
    the masks in; returns (top-1 after, sparsity, top-1 right after the Sparsifier's first masks)."""
    torch.manual_seed(seed)
    model = prunekit.create_model("resnet20", num_classes=10, in_channels=1)
    model.load_state_dict(state)
    sp = make_sparsifier(model)
    before = evaluate(model, test_ds)["top1"]
    train(model, BatchLoader(train_ds, batch_size=64, shuffle=True, seed=seed + 1), args.finetune_epochs,
          lr=args.lr, sparsifier=sp)
    rep = sp.sparsity()
    assert rep["revived"] == 0
    sp.squash()
    return evaluate(model, test_ds)["top1"], rep["sparsity"], before


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ratio", type=float, default=0.9, help="final sparsity of conv + linear weights")
    p.add_argument("--epochs", type=int, default=15, help="dense training epochs (lr 0.1, cosine)")
    p.add_argument("--finetune-epochs", type=int, default=8, help="epochs of AGP / of one-shot finetune")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate of the AGP / finetune epochs (cosine)")
    p.add_argument("--ramp", type=float, default=0.75, help="fraction of those epochs over which AGP prunes")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args(argv)
    train_ds, test_ds = get_dataset("digits", train=True), get_dataset("digits", train=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    rows = []
    for seed in seeds:
        rows.append(run_seed(seed, args, train_ds, test_ds))
        r = rows[-1]
        print(f"seed {seed}: dense {r['dense']:.2f}  AGP {r['agp']:.2f}  one-shot {r['oneshot']:.2f} "
              f"(before finetune {r['oneshot_before']:.2f})", flush=True)

    def cell(key):
        vals = [r[key] for r in rows]
        return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"

    print(f"\nresnet20 on digits, {100 * args.ratio:g}% of conv+linear weights pruned (gp scope); "
          f"dense {args.epochs} epochs, then {args.finetune_epochs} epochs each; top-1 % over seeds {args.seeds}")
    print("| schedule                     | sparsity | top-1 %        |")
    print("|------------------------------|----------|----------------|")
    print(f"| dense                        | 0.00%    | {cell('dense'):<14} |")
    print(f"| one-shot GP, no finetune     | {100 * rows[0]['oneshot_sparsity']:.2f}%   | "
          f"{cell('oneshot_before'):<14} |")
    print(f"| one-shot GP + finetune       | {100 * rows[0]['oneshot_sparsity']:.2f}%   | {cell('oneshot'):<14} |")
    print(f"| AGP (gradual, same epochs)   | {100 * rows[0]['agp_sparsity']:.2f}%   | {cell('agp'):<14} |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
