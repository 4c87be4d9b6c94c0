"""The commands of prunekit as library functions: ``execute(options)`` per command, shared by the CLI and recipes.

Each command module exposes ``OPTIONS`` (its :class:`prunekit.options.Options` dataclass) and
``execute(opts) -> int``. :func:`run_command` runs one inside the output-folder lock
(:func:`prunekit.utils.runlock.locked_output`), which records the folder's completion last.

>>> from prunekit.commands import options_for, run_command
>>> opts = options_for("eval")(checkpoint="runs/base", out="runs/eval").validate()   # doctest: +SKIP
>>> run_command("eval", opts)                                                          # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from ..errors import PrunekitError

# command -> module exposing OPTIONS and execute, in the order `prunekit --help` lists them
MODULES: dict[str, str] = {
    "run": "prunekit.commands.run",
    "quickstart": "prunekit.commands.quickstart",
    "train": "prunekit.commands.train",
    "eval": "prunekit.commands.eval",
    "info": "prunekit.commands.info",
    "prune": "prunekit.commands.prune",
    "sweep": "prunekit.commands.sweep",
    "finetune": "prunekit.commands.finetune",
    "scratch": "prunekit.commands.scratch",
    "ensemble": "prunekit.commands.ensemble",
    "distill": "prunekit.commands.distill",
    "export": "prunekit.commands.export",
}


def command_module(name: str) -> Any:
    """The module implementing ``name`` (an unknown name is a :class:`PrunekitError` listing the valid ones)."""
    if name not in MODULES:
        raise PrunekitError(f"unknown command {name!r}; valid: {', '.join(sorted(MODULES))}")
    return importlib.import_module(MODULES[name])


def options_for(name: str) -> type:
    """The options dataclass of command ``name``."""
    return command_module(name).OPTIONS


def executor(name: str) -> Callable[[Any], int]:
    """The ``execute(opts)`` function of command ``name``."""
    return command_module(name).execute


def run_command(name: str, opts: Any) -> int:
    """Run command ``name`` with validated ``opts`` inside the lock of its ``out`` folder; return the exit code."""
    from ..utils.runlock import locked_output

    out = getattr(opts, "out", None) if getattr(opts, "LOCKS_OUT", True) else None
    if out is not None and getattr(opts, "resume", False):
        _check_resume_folder(out, name)
    with locked_output(out, name):
        return int(executor(name)(opts) or 0)


def _check_resume_folder(out: Any, name: str) -> None:
    """``--resume`` continues a run of the same command: a folder another command wrote is a user error."""
    import json
    from pathlib import Path

    from ..utils.runlock import RUN_FILE

    try:
        record = json.loads((Path(out) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    other = record.get("command") if isinstance(record, dict) else None
    if isinstance(other, str) and other != name:
        raise PrunekitError(f"--resume: {out} holds the output of `prunekit {other}`, not of a {name} run; "
                            "choose the folder of the run to continue")


def run_mapping(name: str, mapping: Mapping[str, Any], where: str) -> int:
    """Build command ``name``'s options from ``mapping`` (errors name ``where``) and run it."""
    return run_command(name, build_options(name, mapping, where))


def build_options(name: str, mapping: Mapping[str, Any], where: str) -> Any:
    """Command ``name``'s validated options from ``mapping`` (a recipe stage's args); errors name ``where``."""
    from ..options import from_mapping

    return from_mapping(options_for(name), mapping, where)


def option_keys(name: str) -> set[str]:
    """Every key (field names and aliases, underscored) command ``name`` accepts in a mapping."""
    from ..options import keys_of

    return set(keys_of(options_for(name)))

