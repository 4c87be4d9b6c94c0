"""Building blocks of the bad-input table: the row type, the command lines rows start from, per-row setups.

A CLI row's ``argv`` may use ``<out>`` (the case's ``--out`` folder, absent unless ``prior`` copies a complete run
there), ``<work>`` (the case's working directory, also the cwd), ``<root>`` (the session folder) and
``<f:NAME>`` (a fixture of :mod:`.fixtures`). ``AREAS`` routes a failure to the helper that owns the fix.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# area -> who fixes it
AREAS = {"cli": "cli numeric/recipe", "files": "checkpoint/data files", "runs": "run lock/resume",
         "export": "metrics/export"}
# class of bad input -> description (docs/RELIABILITY.md counts rows per class)
CLASSES = {
    "number": "non-finite, out-of-range or non-integer numbers in a numeric flag or argument",
    "choice": "unknown model, dataset, method, format, device or other bad choice",
    "malformed": "malformed structured values: --cfg, --input-size, --model-kwargs, --milestones, lists, "
                 "dataset options",
    "checkpoint": "hostile or corrupt checkpoint files and folders (metadata, tensors, pickles, truncation)",
    "data": "broken or hostile dataset files and trees (IDX, CIFAR pickles, image folders)",
    "bomb": "resource bombs: allocation, decompression, alias expansion, directory-walk loops",
    "path": "missing, unreadable, read-only or misplaced paths, --out that is a file, escaping names",
    "recipe": "invalid recipes: syntax, encoding, unknown keys/commands/flags, bad values, references",
    "run": "concurrent runs on one --out and --resume with a changed configuration or broken state",
}

Setup = Callable[[Path, dict], Any]


@dataclass(frozen=True)
class Case:
    """One bad input. Exactly one of ``argv`` (CLI) and ``lib`` (library call taking the fixture map)."""

    id: str
    area: str
    klass: str
    argv: tuple[str, ...] = ()
    lib: Callable[[dict], Any] | None = None
    setup: Setup | None = None  # (work, fixtures) -> optional cleanup callable, run before the case
    prior: str | None = None  # fixture folder copied into <out> first: it must come out unchanged
    isolate: bool = False  # run in a subprocess with a timeout (bombs, hangs)
    hostile: bool = False  # a file that would run code: the marker must not appear
    needs_nonroot: bool = False  # permissions are only enforced for non-root users


# ------------------------------------------------------------------------------------------------ command bases

_TINY = ("--limit", "16", "--epochs", "1", "--batch-size", "16")
BASE = {
    "train": ("train", "--model", "lenet5", "--dataset", "digits", *_TINY, "--out", "<out>"),
    "finetune": ("finetune", "--checkpoint", "<f:lenet-pruned>", *_TINY, "--out", "<out>"),
    "scratch": ("scratch", "--checkpoint", "<f:lenet-pruned>", *_TINY, "--out", "<out>"),
    "distill": ("distill", "--checkpoint", "<f:lenet-pruned>", "--teachers", "<f:lenet>", *_TINY, "--out",
                "<out>"),
    "eval": ("eval", "--checkpoint", "<f:lenet>", "--limit", "16", "--out", "<out>"),
    "info": ("info", "--checkpoint", "<f:lenet>"),
    "prune": ("prune", "--checkpoint", "<f:lenet>", "--method", "global", "--ratio", "0.5", "--out", "<out>"),
    "l1": ("prune", "--checkpoint", "<f:resnet>", "--method", "l1-filter", "--ratio", "0.25", "--out", "<out>"),
    "l1-plain": ("prune", "--checkpoint", "<f:resnet>", "--method", "l1-filter", "--out", "<out>"),
    "slim": ("prune", "--checkpoint", "<f:resnet>", "--method", "slimming", "--percent", "0.3", "--out", "<out>"),
    "sweep": ("sweep", "--checkpoint", "<f:lenet>", "--method", "global", "--ratios", "0.5", "--limit", "16",
              "--no-plot", "--out", "<out>"),
    "ensemble": ("ensemble", "--checkpoints", "<f:lenet>,<f:lenet>", "--limit", "16", "--out", "<out>"),
    "export": ("export", "--checkpoint", "<f:lenet>", "--format", "torchscript", "--latency-batch-sizes=",
               "--out", "<out>"),
    "quickstart": ("quickstart", "--out", "<out>", "--epochs", "1", "--finetune-epochs", "1"),
}
VALUES = {"nan": "nan", "inf": "inf", "neg-inf": "-inf", "neg": "-1", "neg-frac": "-0.1", "zero": "0",
          "frac": "1.5", "text": "abc", "above1": "1.5", "above100": "101", "huge": "1e30"}

CASES: list[Case] = []
# fixtures that would run code if prunekit trusted them
HOSTILE = {"meta-factory-os-mkdir", "pickle-code-pth", "torchsave-code-pt", "pickle-code-as-safetensors"}


def add(*cases: Case) -> None:
    """Append rows to the table."""
    CASES.extend(cases)


def cli(id: str, area: str, klass: str, *argv: str, **kw: Any) -> Case:
    """A CLI row."""
    return Case(id=id, area=area, klass=klass, argv=tuple(argv), **kw)


def numeric(base: str, flag: str, values: str, *extra: str, cmd: str | None = None) -> None:
    """Rows ``<cmd>-<flag>-<value>`` passing ``--flag=VALUE`` (the ``=`` keeps ``-inf`` a value) to ``base``."""
    name = cmd or base
    for v in values.split():
        add(cli(f"{name}-{flag.lstrip('-')}-{v}", "cli", "number", *BASE[base], *extra, f"{flag}={VALUES[v]}"))


# ------------------------------------------------------------------------------------------------ setups


def _make_file(rel: str) -> Setup:
    def setup(work: Path, f: dict) -> None:
        (work / rel).write_text("precious\n")
    return setup


def _ro_out(work: Path, f: dict) -> Callable[[], None]:
    """Bind-mount a read-only view of an empty folder at <work>/ro (root ignores chmod)."""
    (work / "ro-src").mkdir()
    (work / "ro").mkdir()
    res = subprocess.run(["mount", "--bind", "-o", "ro", str(work / "ro-src"), str(work / "ro")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        import pytest

        pytest.skip(f"needs a read-only bind mount (root ignores permissions): {res.stderr.strip()}")
    return lambda: subprocess.run(["umount", str(work / "ro")], check=False)


def _unreadable(work: Path, f: dict) -> None:
    import shutil

    shutil.copy(f["lenet-file"], work / "secret.safetensors")
    os.chmod(work / "secret.safetensors", 0)



GOOD_STAGE = "  - {name: base, command: train, args: {model: lenet5, epochs: 1, batch_size: 16}}\n"
HEAD = "name: r\ndataset: digits\nlimit: 16\nseeds: [0]\n"


def recipe(text: str | bytes) -> Setup:
    """Write <work>/recipe.yaml (``@ROOT@``/``@MARKER@``/``@WORK@`` replaced)."""
    def setup(work: Path, f: dict) -> None:
        data = text if isinstance(text, bytes) else text.replace("@ROOT@", str(f["root"])).replace(
            "@MARKER@", str(f["marker"])).replace("@WORK@", str(work)).encode()
        (work / "recipe.yaml").write_bytes(data)
    return setup


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


_RUN = ("run", "<work>/recipe.yaml", "--out", "<out>")


def _hold_lock(work: Path, f: dict) -> Callable[[], None]:
    """Hold the run lock of <work>/out the way a live prunekit process does (flock + running run file)."""
    import json

    out = work / "out"
    out.mkdir(exist_ok=True)
    fh = open(out / ".prunekit.lock", "a+")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.write(str(os.getpid()))
    fh.flush()
    (out / ".prunekit-run.json").write_text(json.dumps({"status": "running", "command": "train",
                                                        "pid": os.getpid(), "started": "2026-01-01T00:00:00"}))
    return fh.close


def lib(id: str, area: str, klass: str, fn: Callable[[dict], Any], **kw: Any) -> Case:
    """A library row: ``fn(fixtures)`` must raise a PrunekitError with a message."""
    return Case(id=id, area=area, klass=klass, lib=fn, **kw)
