"""``prunekit ensemble``: evaluate an ensemble "E-1-k" of checkpoints (e.g. the rounds of iterative pruning)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from ..errors import PrunekitError
from ..experiments.ensemble import MODES
from ..options import CommonOptions, DeviceOption, option, redefault
from ..utils.io import write_csv, write_json
from ..utils.table import markdown_table
from .common import check_compatible, load_datasets, out_dir

CSV_FIELDS = ["member", "checkpoint", "model", "params", "nonzero_params", "top1", "top5"]


def parse_checkpoint_list(items: str | Sequence[str] | None, flag: str) -> list[str]:
    """Paths from ``"A,B,C"`` or ``["A", "B,C"]``; an empty list or an empty entry is a PrunekitError naming
    ``flag``."""
    parts = [items] if isinstance(items, str) or items is None else list(items)
    paths = [t.strip() for p in parts for t in str(p or "").split(",")]
    if not any(paths):
        raise PrunekitError(f"{flag} needs at least one checkpoint (comma-separated paths), got {items!r}")
    if not all(paths):
        raise PrunekitError(f"{flag} has an empty entry: {items!r} (comma-separated paths, no blanks)")
    return paths


def checkpoints_option(help_text: str) -> Any:
    """A list of checkpoints: ``--flag A B`` or ``--flag A,B`` (a YAML list in recipes); blanks are errors."""
    return option(None, help=help_text, many=True, split=False, required=True, metavar="CHECKPOINT")


@dataclass
class EnsembleOptions(DeviceOption):
    """Options of ``prunekit ensemble``: the members and the test data."""

    COMMAND: ClassVar[str] = "ensemble"
    checkpoints: list[str] = checkpoints_option("model files or prunekit output folders: the members, in order")
    mode: str = option("sum_logits", help="sum_logits: argmax of summed logits (seed E-x-y); mean_softmax: mean "
                       "probabilities", choices=MODES)
    dataset: str | None = redefault(CommonOptions, "dataset", "digits")
    data_dir: str | None = redefault(CommonOptions, "data_dir", None)
    limit: int | None = redefault(CommonOptions, "limit", None)
    batch_size: int = redefault(CommonOptions, "batch_size", 256)
    out: str | None = redefault(CommonOptions, "out", None)
    debug: bool = redefault(CommonOptions, "debug", False)


OPTIONS = EnsembleOptions


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


def execute(opts: EnsembleOptions) -> int:
    """Evaluate the members of ``opts.checkpoints`` and their ensemble on the test split."""
    from ..engine.distributed import resolve_device
    from ..experiments.ensemble import evaluate_ensemble, load_members

    paths = parse_checkpoint_list(opts.checkpoints, "--checkpoints")
    _, test_ds = load_datasets(opts, train=False)
    device = resolve_device(opts.device)
    ckpts = load_members(paths, num_classes=test_ds.num_classes)
    for p, c in zip(paths, ckpts):
        check_compatible(c.model, test_ds, p)
    result = evaluate_ensemble([c.model for c in ckpts], test_ds, opts.mode, opts.batch_size, device, names=paths)
    rows = member_rows(paths, ckpts, result)
    out = out_dir(opts)
    summary = {"command": "ensemble", "name": rows[-1]["member"], "mode": opts.mode, "dataset": opts.dataset,
               "samples": result["n"], "top1": result["top1"], "top5": result["top5"],
               "params": rows[-1]["params"], "nonzero_params": rows[-1]["nonzero_params"], "members": rows[:-1]}
    write_json(out / "summary.json", summary)
    write_csv(out / "ensemble.csv", rows, CSV_FIELDS)
    print(markdown_table(["member", "checkpoint", "model", "params", "top-1", "top-5"],
                         [[r["member"], r["checkpoint"], r["model"], r["params"], r["top1"], r["top5"]]
                          for r in rows]))
    print(f"wrote {out / 'summary.json'}, {out / 'ensemble.csv'}")
    return 0
