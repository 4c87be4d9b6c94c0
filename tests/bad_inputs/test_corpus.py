"""The bad-input corpus: every row of cases.py ends in a clean user error, writes nothing and runs no code.

CLI rows run in-process through ``prunekit.cli.main(argv)`` (stdout/stderr captured, warnings and WARNING log
records shown as the console would show them, a memory cap and an alarm against bombs); rows marked ``isolate``
run ``python -c`` in a subprocess with a timeout and the same memory cap. Each row runs in its own folder
``cases/<id>/a/work`` (also the cwd), so a write that escapes ``--out`` by a few ``..`` is still seen.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import cases as table
from .fixtures import MARKER_NAME

CASES = table.all_cases()
ERROR_PREFIX = "prunekit: error:"
LOCK_FILE = ".prunekit.lock"  # a lock file may stay behind (it holds no state); anything else may not
TIMEOUT_S = 30
MEMORY_HEADROOM = 3 << 30  # bytes of address space a case may add: bombs fail fast instead of swapping
_TOKEN = __import__("re").compile(r"<(out|work|root|f:[\w.-]+)>")


class CaseTimeout(BaseException):
    """Raised by the alarm: a case ran longer than TIMEOUT_S (a hang)."""


def _subst(arg: str, ctx: dict) -> str:
    def one(m: Any) -> str:
        key = m.group(1)
        return str(ctx["f"][key[2:]] if key.startswith("f:") else ctx[key])
    return _TOKEN.sub(one, arg)


def snapshot(root: Path, skip: Path | None = None) -> dict[str, Any]:
    """path -> (kind, size, mtime) of everything under ``root`` (links not followed), ``skip`` left out."""
    out: dict[str, Any] = {}
    skip_s = str(skip) if skip is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_s is not None:
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != skip_s]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if p == skip_s:
                continue
            st = os.lstat(p)
            kind = "l" if os.path.islink(p) else "d" if name in dirnames else "f"
            out[os.path.relpath(p, root)] = (kind, st.st_size if kind == "f" else 0,
                                             st.st_mtime_ns if kind == "f" else 0)
    return out


def _outside(root: Path, case_dir: Path, out: Path) -> dict[str, Any]:
    """Everything outside ``out`` that a case could touch: the session folder (other cases' folders by name
    only) and the case's own folder."""
    state = snapshot(root, skip=root / "cases")
    state.update({f"cases/{name}": ("d", 0, 0) for name in os.listdir(root / "cases")})
    state.update({f"case:{k}": v for k, v in snapshot(case_dir, skip=out).items()})
    return state


def _diff(before: dict, after: dict) -> list[str]:
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k] and before[k][0] == "f")
    msg = []
    for what, items in (("new", new), ("removed", gone), ("modified", changed)):
        if items:
            msg.append(f"{what}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}")
    return msg


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _out_state(out: Path) -> dict[str, Any]:
    """relpath -> content digest of every file in ``out`` but the lock file (a rewrite with the same bytes is no
    change; an empty folder left behind is none either)."""
    if not out.exists() and not out.is_symlink():
        return {}
    if not out.is_dir():
        return {".": ("f", _digest(out), 0)}
    return {k: ("f", _digest(out / k), 0) for k, v in snapshot(out).items()
            if os.path.basename(k) != LOCK_FILE and v[0] == "f"}


@contextlib.contextmanager
def _guards() -> Iterator[None]:
    """Memory cap (address space now + headroom) and an alarm, restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        used = int(fh.read().split()[0]) * resource.getpagesize()
    cap = used + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))

    def alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"still running after {TIMEOUT_S} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _where(exc: BaseException) -> str:
    """``Type: message @ file:line`` of the innermost prunekit frame (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [fr for fr in frames if "/prunekit/" in fr.filename] or frames
    loc = f"{own[-1].filename.split('/prunekit/')[-1]}:{own[-1].lineno}" if own else "?"
    return f"{type(exc).__name__}: {str(exc)[:160]} @ prunekit/{loc}"


@contextlib.contextmanager
def _console_like() -> Iterator[tuple[io.StringIO, io.StringIO, list]]:
    """Capture stdout/stderr; record warnings under Python's default filters; show prunekit WARNING logs."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("prunekit")
    with warnings.catch_warnings(record=True) as rec:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=cat)
        logger.addHandler(handler)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield out, err, rec
        finally:
            logger.removeHandler(handler)


def run_cli_inprocess(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run ``prunekit.cli.main(argv)`` in ``cwd``; return rc, stdout, stderr (with warnings) and any exception."""
    from prunekit.cli import main

    res: dict[str, Any] = {"rc": None, "exc": None}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with _console_like() as (out, err, rec):
            try:
                with _guards():
                    res["rc"] = main(argv)
            except SystemExit as exc:
                res["rc"] = exc.code if isinstance(exc.code, int) else 1
            except (Exception, CaseTimeout) as exc:  # noqa: BLE001 - the corpus reports any escape
                res["exc"] = _where(exc)
    finally:
        os.chdir(old)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in rec)
    res["stdout"], res["stderr"] = out.getvalue(), err.getvalue() + shown
    return res


_RUNNER = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
import torch
torch.set_num_threads(1)
from prunekit.cli import main
sys.exit(main(json.loads(sys.argv[1])))
"""


def run_cli_subprocess(argv: list[str], cwd: Path, repo: Path) -> dict[str, Any]:
    """Run the CLI in a fresh interpreter (bombs, hangs); a timeout is reported, the process group killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, json.dumps(argv)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return {"rc": None, "exc": f"hang: killed after {TIMEOUT_S} s", "stdout": stdout, "stderr": stderr}
    exc = None
    if "Traceback" in stderr:
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1]
        locs = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("File ") and "/prunekit/" in ln]
        exc = f"{last[:160]} @ {locs[-1] if locs else '?'}"
    if proc.returncode < 0:
        exc = f"killed by signal {-proc.returncode}"
    return {"rc": proc.returncode, "exc": exc, "stdout": stdout, "stderr": stderr}


def run_lib(case: table.Case, f: dict) -> dict[str, Any]:
    """Call the library row; record what it raised."""
    from prunekit.errors import PrunekitError

    res: dict[str, Any] = {"rc": None, "exc": None, "stdout": "", "stderr": ""}
    with _console_like() as (out, err, rec):
        try:
            with _guards():
                value = case.lib(f)
            res["exc"] = f"returned {type(value).__name__} instead of raising a PrunekitError"
        except PrunekitError as exc:
            res["rc"] = 2
            res["message"] = f"{type(exc).__name__}: {exc}"
            if not str(exc).strip():
                res["exc"] = f"{type(exc).__name__} with an empty message"
        except (Exception, CaseTimeout) as exc:  # noqa: BLE001
            res["exc"] = _where(exc)
    res["stdout"] = out.getvalue()
    res["stderr"] = err.getvalue()
    return res


def _check(case: table.Case, res: dict, lib: bool) -> list[str]:
    problems = []
    if res["exc"]:
        hung = res["exc"].startswith(("hang", "killed", "returned", "CaseTimeout"))
        problems.append(res["exc"] if hung else f"traceback {res['exc']}")
    elif not lib and res["rc"] != 2:
        problems.append(f"exit {res['rc']}")
    if not lib:
        lines = [ln for ln in res["stderr"].splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
        if res["rc"] == 2 and len(errors) != 1:
            problems.append(f"{len(errors)} '{ERROR_PREFIX}' lines")
        if errors and len(lines) != 1:
            others = [ln for ln in lines if not ln.startswith(ERROR_PREFIX)]
            problems.append(f"extra stderr lines: {others[:2]}")
    if "weights_only=False" in res["stderr"] + res.get("message", ""):
        problems.append("passes on torch's weights_only=False advice (prunekit never offers that)")
    if "Traceback" in res["stdout"] + res["stderr"] and not res["exc"]:
        problems.append("'Traceback' in the output")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: table.Case, corpus_root: dict, repo_root: Path) -> None:
    """One row: exit 2 + one error line (or a PrunekitError), nothing written, no code run."""
    if case.needs_nonroot and os.geteuid() == 0:
        pytest.skip("permissions are not enforced for root")
    root: Path = corpus_root["root"]
    case_dir = root / "cases" / case.id
    work = case_dir / "a" / "work"
    work.mkdir(parents=True)
    out = work / "out"
    if case.prior:
        shutil.copytree(corpus_root[case.prior], out, symlinks=True)
    cleanup = case.setup(work, corpus_root) if case.setup else None
    marker = corpus_root["fx"] / MARKER_NAME
    ctx = {"out": out, "work": work, "root": root, "f": corpus_root}
    try:
        before_out = _out_state(out)
        before = _outside(root, case_dir, out)
        if case.lib is not None:
            res = run_lib(case, {**corpus_root, "work": work})
        else:
            argv = [_subst(a, ctx) for a in case.argv]
            res = run_cli_subprocess(argv, work, repo_root) if case.isolate else run_cli_inprocess(argv, work)
        problems = _check(case, res, case.lib is not None)
        log = os.environ.get("PRUNEKIT_CORPUS_LOG")
        if log:  # every row's message, to review that each fails for its own reason
            with open(log, "a") as fh:
                last = res.get("message") or (res["stderr"].strip().splitlines() or [""])[-1]
                fh.write(f"{case.id}\t{res['rc']}\t{last[:220]}\n")
        after_out = _out_state(out)
        if after_out != before_out:
            problems.append(f"--out changed ({'; '.join(_diff(before_out, after_out))})")
        escaped = _diff(before, _outside(root, case_dir, out))
        if escaped:
            where = "left files behind" if case.lib is not None else "written outside --out"
            problems.append(f"{where} ({'; '.join(escaped)})")
        if marker.exists():
            problems.append("CODE RAN: the hostile file created its marker")
    finally:
        if marker.exists():
            os.rmdir(marker)
        if callable(cleanup):
            cleanup()
    if problems:
        tail = res["stderr"].strip().splitlines()[-1:] if res["stderr"].strip() else []
        message = f"[{table.AREAS[case.area]}] " + " | ".join(problems) + (f" | stderr: {tail[0][:200]}"
                                                                           if tail else "")
        report = os.environ.get("PRUNEKIT_CORPUS_REPORT")
        if report:
            with open(report, "a") as fh:
                fh.write(f"{case.id}\t{message}\n")
        pytest.fail(message, pytrace=False)


CONTROLS = {**{name: argv for name, argv in table.BASE.items() if name != "l1-plain"},
            "run": ("run", "<work>/recipe.yaml", "--out", "<out>")}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_base_command_succeeds(name: str, corpus_root: dict) -> None:
    """The command lines the rows start from run cleanly: a row fails because of its one bad input."""
    work = corpus_root["root"] / "controls" / name
    work.mkdir(parents=True)
    table.recipe(table.HEAD + "stages:\n" + table.GOOD_STAGE)(work, corpus_root)
    ctx = {"out": work / "out", "work": work, "root": corpus_root["root"], "f": corpus_root}
    res = run_cli_inprocess([_subst(a, ctx) for a in CONTROLS[name]], work)
    assert res["exc"] is None and res["rc"] == 0, (res["exc"], res["stderr"][-500:])


def test_reliability_doc_lists_current_counts() -> None:
    """docs/RELIABILITY.md carries the table that cases.summary() generates from this corpus."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
    assert table.summary() in doc.read_text(encoding="utf-8"), \
        "regenerate the counts: python tests/bad_inputs/cases.py (see docs/RELIABILITY.md)"


def _unpickle(path: Path) -> None:
    import pickle

    pickle.loads(path.read_bytes())  # noqa: S301 - the point: show the fixture is really hostile


def _torch_load(path: Path) -> None:
    import torch

    torch.load(path, weights_only=False)  # noqa: S614


def _yaml_unsafe(path: Path) -> None:
    import yaml

    yaml.unsafe_load(path.read_text())


def _trusted_factory(path: Path) -> None:
    import prunekit

    with contextlib.suppress(prunekit.PrunekitError):  # os.mkdir returns None, "not a module" after it ran
        prunekit.load_model(path, factory="os:mkdir")


@pytest.mark.parametrize("name, loader", [
    ("pickle-code-pth", _unpickle), ("pickle-code-as-safetensors", _unpickle), ("torchsave-code-pt", _torch_load),
    ("meta-factory-os-mkdir", _trusted_factory)])
def test_control_hostile_fixture_runs_code_when_trusted(name: str, loader: Any, corpus_root: dict) -> None:
    """The 'no code ran' checks are not vacuous: loaded unsafely, each hostile fixture creates the marker."""
    marker = corpus_root["fx"] / MARKER_NAME
    assert not marker.exists()
    try:
        loader(corpus_root[name])
        assert marker.is_dir()
    finally:
        if marker.exists():
            os.rmdir(marker)


def test_control_hostile_dataset_and_recipe_run_code_when_trusted(corpus_root: dict, tmp_path: Path) -> None:
    """Same for the hostile CIFAR batches (os.mkdir, builtins.eval) and the recipe's python tag."""
    marker = corpus_root["fx"] / MARKER_NAME
    table.recipe("name: !!python/object/apply:os.mkdir ['@MARKER@']\n")(tmp_path, corpus_root)
    for load, path in ((_unpickle, corpus_root["cifar-code-pickle"] / "data_batch_1"),
                       (_unpickle, corpus_root["cifar-eval-global"] / "data_batch_1"),
                       (_yaml_unsafe, tmp_path / "recipe.yaml")):
        try:
            load(path)
            assert marker.is_dir(), path
        finally:
            if marker.exists():
                os.rmdir(marker)
