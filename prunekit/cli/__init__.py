"""``prunekit`` command line: a thin layer over the library. Each command is a module here.

A command module exposes ``OPTIONS`` (its options dataclass, :mod:`prunekit.options`) and ``execute``: the parser
is generated from the dataclass and the command runs through :func:`prunekit.commands.run_command` (inside the
``--out`` lock). Global flags: ``-q/--quiet`` (warnings only), ``-v/--verbose`` (debug messages), ``--debug``
(user errors show their traceback too).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import traceback
import warnings
from typing import Any, Iterator, Sequence

from ..errors import PrunekitError
from ..utils.warn import HeldWarning

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


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=argparse.SUPPRESS,
                   help="print only warnings and errors")
    g.add_argument("-v", "--verbose", dest="verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also print debug messages")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    from .. import __version__
    from ..options import add_arguments

    parser = UserErrorParser(prog="prunekit", description="Neural-network pruning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    _add_verbosity(parser)
    parser.add_argument("--debug", dest="debug_global", action="store_true",
                        help="show the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UserErrorParser)
    for name, help_text in COMMANDS:
        mod = importlib.import_module(f"{__name__}.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_verbosity(p)
        add_arguments(p, mod.OPTIONS)
        p.set_defaults(_run=_runner(name, mod.OPTIONS))
    return parser


_PARSER: list[argparse.ArgumentParser] = []


def _parser() -> argparse.ArgumentParser:
    """The parser of :func:`main`, built once per process (parsing does not change it)."""
    if not _PARSER:
        _PARSER.append(build_parser())
    return _PARSER[0]


def _runner(name: str, cls: type) -> Any:
    def run(args: argparse.Namespace) -> int:
        from ..commands import run_command
        from ..options import from_namespace

        return run_command(name, from_namespace(cls, args))

    return run


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"prunekit: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"prunekit: warning: {msg}"
        return msg if record.levelno >= logging.INFO else f"debug: {msg}"


def _first_line(message: Any, category: Any) -> str:
    return str(message).strip().splitlines()[0] if str(message).strip() else category.__name__


@contextlib.contextmanager
def _console_output(level: int) -> Iterator[list[HeldWarning]]:
    """While the CLI runs: prunekit's log records go to stderr at ``level``, Python warnings print as one line.

    :class:`~prunekit.utils.warn.HeldWarning` s (a cause that may make the command fail, e.g. NaN weights) are
    collected in the yielded list instead: :func:`main` folds them into the error line when the command fails; the
    ones still there at the end print as one line per kind (the first message, the later ones' causes after it)."""
    logger = logging.getLogger("prunekit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    old_level, old_show = logger.level, warnings.showwarning
    held: list[HeldWarning] = []

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if isinstance(message, HeldWarning) and file is None:
            held.append(message)
            return
        print(f"prunekit: warning: {_first_line(message, category)}", file=file or sys.stderr)

    logger.addHandler(handler)
    logger.setLevel(level)
    warnings.showwarning = show
    try:
        yield held
    finally:
        warnings.showwarning = old_show
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        for kind in dict.fromkeys(type(w) for w in held):
            same = [w for w in held if type(w) is kind]
            text = "; ".join([_first_line(same[0], kind), *dict.fromkeys(w.cause for w in same[1:])])
            print(f"prunekit: warning: {text}", file=sys.stderr)


def fold_held(error: str, held: Sequence[HeldWarning]) -> str:
    """One error line: the causes the held warnings named (each once, in order), then ``error``."""
    causes = [c for c in dict.fromkeys(w.cause for w in held) if c and c not in error]
    return "; ".join([*causes, error]) if causes else error


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prunekit`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet = any(a in ("-q", "--quiet") for a in argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    with _console_output(level) as held:
        try:
            parser = _parser()
            args = parser.parse_args(argv)
            debug = bool(getattr(args, "debug_global", False) or getattr(args, "debug", False))
            if getattr(args, "_run", None) is None:
                parser.print_help()
                return 2
            return int(args._run(args) or 0)
        except PrunekitError as exc:
            if debug:
                traceback.print_exc()
            print(f"prunekit: error: {fold_held(str(exc), held)}", file=sys.stderr)
            held.clear()
            return 2
        except KeyboardInterrupt:
            print("prunekit: interrupted", file=sys.stderr)
            return 130


def _console() -> None:  # pragma: no cover
    sys.exit(main())
