"""``prunekit ensemble``: evaluate an ensemble "E-1-k" of checkpoints (e.g. the rounds of iterative pruning)."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import PrunekitError
from ..utils.io import write_csv, write_json
from ..utils.table import markdown_table
from .common import DEFAULT_DATASET, check_compatible, load_datasets, out_dir

CSV_FIELDS = ["member", "checkpoint", "model", "params", "nonzero_params", "top1", "top5"]


def parse_checkpoint_list(text: str | None, flag: str) -> list[str]:
    """Split ``"A,B,C"`` into paths; an empty list or an empty entry is a PrunekitError naming ``flag``."""
    items = [t.strip() for t in str(text or "").split(",")]
    if not any(items):
        raise PrunekitError(f"{flag} needs at least one checkpoint (comma-separated paths), got {text!r}")
    if not all(items):
        raise PrunekitError(f"{flag} has an empty entry: {text!r} (comma-separated paths, no blanks)")
    return items


def add_data_args(parser: argparse.ArgumentParser, batch_size: int = 256) -> None:
    """``--dataset --data-dir --limit --batch-size --device --out`` for commands that only evaluate."""
    g = parser.add_argument_group("common options")
    g.add_argument("--dataset", default=DEFAULT_DATASET, help="digits, fashion-mnist, mnist, cifar10, cifar100, "
                                                               "imagenet, synthetic (default digits)")
    g.add_argument("--data-dir", default=None, help="dataset root folder (default: the dataset's usual place)")
    g.add_argument("--limit", type=int, default=None, help="use only the first N test samples (quick runs)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="evaluation batch size")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--out", required=True, help="output folder")


def add_parser(parser: argparse.ArgumentParser) -> None:
    from ..experiments.ensemble import MODES

    parser.add_argument("--checkpoints", required=True,
                        help="comma-separated model files or prunekit output folders: the members, in order")
    parser.add_argument("--mode", default="sum_logits", choices=MODES,
                        help="sum_logits: argmax of summed logits (seed E-x-y); mean_softmax: mean probabilities")
    add_data_args(parser)


def member_rows(paths: list[str], ckpts: list, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per member plus the "E-1-k" ensemble row (params summed over members)."""
    from ..metrics import count_nonzero_params, count_params

    rows = []
    for i, (p, c) in enumerate(zip(paths, ckpts)):
        rows.append({"member": str(i + 1), "checkpoint": p, "model": c.meta["model"], "cfg": c.meta.get("cfg"),
                     "params": count_params(c.model, trainable_only=False),
                     "nonzero_params": count_nonzero_params(c.model, trainable_only=False),
                     "top1": result["members"][i], "top5": result["members_top5"][i]})
    rows.append({"member": f"E-1-{len(paths)}", "checkpoint": "", "model": "ensemble (" + result["mode"] + ")",
                 "params": sum(r["params"] for r in rows),
                 "nonzero_params": sum(r["nonzero_params"] for r in rows), "top1": result["top1"],
                 "top5": result["top5"]})
    return rows


def run(args: argparse.Namespace) -> int:
    from ..engine.distributed import resolve_device
    from ..experiments.ensemble import evaluate_ensemble, load_members

    paths = parse_checkpoint_list(args.checkpoints, "--checkpoints")
    if args.batch_size < 1:
        raise PrunekitError(f"--batch-size must be positive, got {args.batch_size}")
    _, test_ds = load_datasets(args, train=False)
    device = resolve_device(args.device)
    ckpts = load_members(paths, num_classes=test_ds.num_classes)
    for p, c in zip(paths, ckpts):
        check_compatible(c.model, test_ds, p)
    result = evaluate_ensemble([c.model for c in ckpts], test_ds, args.mode, args.batch_size, device, names=paths)
    rows = member_rows(paths, ckpts, result)
    out = out_dir(args)
    summary = {"command": "ensemble", "name": rows[-1]["member"], "mode": args.mode, "dataset": args.dataset,
               "samples": result["n"], "top1": result["top1"], "top5": result["top5"],
               "params": rows[-1]["params"], "nonzero_params": rows[-1]["nonzero_params"], "members": rows[:-1]}
    write_json(out / "summary.json", summary)
    write_csv(out / "ensemble.csv", rows, CSV_FIELDS)
    print(markdown_table(["member", "checkpoint", "model", "params", "top-1", "top-5"],
                         [[r["member"], r["checkpoint"], r["model"], r["params"], r["top1"], r["top5"]]
                          for r in rows]))
    print(f"wrote {out / 'summary.json'}, {out / 'ensemble.csv'}")
    return 0
