"""``prunekit info``: list the zoo, or show params/FLOPs per layer of a model or checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunekitError
from ..options import CommonOptions, option, redefault
from ..utils.io import write_csv, write_json
from ..utils.table import markdown_table
from .common import input_size, model_from_args, parse_input_size


def input_size_option(help_text: str = "C,H,W (default: the dataset's, or 3,32,32)") -> object:
    """``--input-size C,H,W`` (parsed and bounded by :func:`prunekit.commands.common.parse_input_size`)."""
    return option(None, help=help_text, metavar="C,H,W", raw=True)


@dataclass
class InfoOptions(CommonOptions):
    """Options of ``prunekit info``."""

    COMMAND: ClassVar[str] = "info"
    out: str | None = redefault(CommonOptions, "out", None, required=False)
    list: bool = option(False, bool, "list the registered models and datasets")
    input_size: str | None = input_size_option()


OPTIONS = InfoOptions


def execute(opts: InfoOptions) -> int:
    """Print the zoo (``list``) or the per-layer table of a model or checkpoint (written to ``out`` if given)."""
    from ..data import get_dataset, list_datasets
    from ..metrics import layer_table, summarize
    from ..models import list_models

    if opts.list:
        print("models:   " + ", ".join(list_models()))
        print("datasets: " + ", ".join(list_datasets()))
        return 0
    data = None
    size = parse_input_size(opts.input_size)
    if size is None:
        try:
            data = get_dataset(opts.dataset, root=opts.data_dir, train=False)
        except PrunekitError:  # info is useful without the data: fall back to a default input size
            data = None
    ckpt = model_from_args(opts, data if not opts.checkpoint else None)
    model = ckpt.model
    if size is None:
        size = input_size(data if data is not None and data.num_classes == model.num_classes
                          and data.in_channels == model.in_channels else None, model)
    rows = layer_table(model, (1, *size))
    totals = summarize(model, (1, *size))
    keys = ["name", "type", "params", "nonzero_params", "macs", "flops"]
    print(markdown_table(keys, [[r.get(k) for k in keys] for r in rows]))
    print(f"total: {totals['params']:,} params ({totals['nonzero_params']:,} non-zero), "
          f"{totals['macs']:,} MACs dense, {totals['sparse_macs']:,} MACs sparse-aware, input {size}")
    if opts.out:
        from .common import out_dir

        out = out_dir(opts)
        write_csv(out / "layers.csv", rows)
        write_json(out / "summary.json", {"command": "info", "model": model.prunekit_name,
                                          "input_size": list(size), **totals})
    return 0
