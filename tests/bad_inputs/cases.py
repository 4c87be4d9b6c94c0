"""The table of bad inputs: every row must end in exit code 2 and one ``prunekit: error:`` line (CLI) or a
:class:`~prunekit.errors.PrunekitError` (library), with nothing written and no code run.

Rows are defined in ``rows_cli.py`` (numbers, choices, malformed values, recipes), ``rows_files.py`` (checkpoint and
dataset files, paths, runs) and ``rows_lib.py`` (library calls) with the building blocks of :mod:`.table`.
``python tests/bad_inputs/cases.py`` prints the count tables of docs/RELIABILITY.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: import as the package it belongs to
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bad_inputs"  # noqa: A001

from . import rows_cli, rows_files, rows_lib  # noqa: E402,F401  (each module appends its rows to CASES)
from .table import AREAS, BASE, CASES, CLASSES, GOOD_STAGE, HEAD, Case, recipe  # noqa: E402,F401


def _command(case: Case) -> str:
    if case.lib is not None:
        return "library"
    return case.argv[0] if case.argv and case.argv[0] in BASE or case.argv and case.argv[0] in (
        "run", "info", "prune") else "(parser)"


def summary() -> str:
    """The Markdown count tables of docs/RELIABILITY.md, generated from the rows."""
    rows = all_cases()
    lines = ["| class of bad input | rows |", "|---|---|"]
    lines += [f"| {desc} (`{k}`) | {sum(c.klass == k for c in rows)} |" for k, desc in CLASSES.items()]
    lines += [f"| **total** | **{len(rows)}** |", "", "| entry point | rows |", "|---|---|"]
    commands: dict[str, int] = {}
    for c in rows:
        commands[_command(c)] = commands.get(_command(c), 0) + 1
    lines += [f"| `{k}` | {v} |" for k, v in sorted(commands.items())]
    lines += ["", "| area (who fixes a failure) | rows |", "|---|---|"]
    lines += [f"| {desc} | {sum(c.area == k for c in rows)} |" for k, desc in AREAS.items()]
    return "\n".join(lines)


def all_cases() -> list[Case]:
    """Every row, ids checked unique."""
    ids = [c.id for c in CASES]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate case ids: {dup}")
    return list(CASES)


if __name__ == "__main__":  # python tests/bad_inputs/cases.py: print the tables for docs/RELIABILITY.md
    print(summary())

