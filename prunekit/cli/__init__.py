"""``prunekit`` command line: a thin layer over the library. Each command is a module here."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ..errors import PrunekitError

# (module, one-line help) in the order `prunekit --help` lists them.
COMMANDS = [
    ("run", "run a recipe: a whole experiment, resumable, with a summary table and plots"),
    ("quickstart", "train, prune and finetune a small model on digits; print before/after"),
    ("train", "train a model (baseline, or sparsity training with --sparsity-reg)"),
    ("eval", "evaluate a checkpoint: top-1/top-5, params, FLOPs, latency"),
    ("info", "list models, or params/FLOPs per layer of a model or checkpoint"),
    ("prune", "prune a model: weight-level, or structured on any model (L1-filter, slimming, budgets)"),
    ("sweep", "sensitivity sweep: accuracy without finetune across pruning ratios"),
    ("finetune", "finetune a pruned checkpoint (masks kept)"),
    ("scratch", "retrain a pruned architecture from scratch (Scratch-E / Scratch-B)"),
    ("ensemble", "evaluate an ensemble (E-1-k) of checkpoints: sum of logits or mean softmax"),
    ("distill", "ensemble distillation: train a (pruned) student against frozen teacher checkpoints"),
    ("export", "export a checkpoint to ONNX / TorchScript / torch.export, verified against eager and timed"),
]


class UserErrorParser(argparse.ArgumentParser):
    """argparse's own errors become PrunekitErrors: one line + exit 2 like ours, and catchable by recipes."""

    def error(self, message: str):
        raise PrunekitError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    from .. import __version__

    parser = UserErrorParser(prog="prunekit", description="Neural-network pruning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UserErrorParser)
    for name, help_text in COMMANDS:
        mod = importlib.import_module(f"{__name__}.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prunekit`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except PrunekitError as exc:
        print(f"prunekit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130


def _console() -> None:  # pragma: no cover
    sys.exit(main())
