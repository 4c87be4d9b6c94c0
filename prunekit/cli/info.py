"""``prunekit info``: list the zoo, or show params/FLOPs per layer of a model or checkpoint."""
from __future__ import annotations

import argparse

from ..errors import PrunekitError
from ..utils.io import write_csv, write_json
from ..utils.table import markdown_table
from .common import add_common_args, input_size, model_from_args


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, out_required=False)
    parser.add_argument("--list", action="store_true", help="list the registered models and datasets")
    parser.add_argument("--input-size", default=None, help="C,H,W (default: the dataset's, or 3,32,32)")


def run(args: argparse.Namespace) -> int:
    from ..data import get_dataset, list_datasets
    from ..metrics import layer_table, summarize
    from ..models import list_models
    from .common import parse_input_size

    if args.list:
        print("models:   " + ", ".join(list_models()))
        print("datasets: " + ", ".join(list_datasets()))
        return 0
    data = None
    size = parse_input_size(args.input_size)
    if size is None:
        try:
            data = get_dataset(args.dataset, root=args.data_dir, train=False)
        except PrunekitError:  # info is useful without the data: fall back to a default input size
            data = None
        size = None
    ckpt = model_from_args(args, data if not args.checkpoint else None)
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
    if args.out:
        from .common import out_dir

        out = out_dir(args)
        write_csv(out / "layers.csv", rows)
        write_json(out / "summary.json", {"command": "info", "model": model.prunekit_name,
                                          "input_size": list(size), **totals})
    return 0
