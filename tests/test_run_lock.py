"""prunekit.utils.runlock: one run per --out folder, completion recorded last, stale temps removed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prunekit.errors import PrunekitError
from prunekit.utils.runlock import LOCK_FILE, RUN_FILE, clean_stale_temps, folder_status, locked_output

ROOT = Path(__file__).resolve().parents[1]


def _holder(folder: Path, ready: Path) -> subprocess.Popen:
    """A second process that takes the folder's lock, signals ``ready``, and then waits to be killed."""
    code = textwrap.dedent(f"""
        import time
        from prunekit.utils.runlock import locked_output
        with locked_output({str(folder)!r}, "holder"):
            open({str(ready)!r}, "w").close()
            time.sleep(60)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("lock holder did not start")
        time.sleep(0.02)
    return proc


def test_second_process_is_refused_with_the_holders_pid_and_the_lock_outlives_a_kill(tmp_path, monkeypatch):
    out = tmp_path / "out"
    proc = _holder(out, tmp_path / "ready")
    try:
        assert folder_status(out) == "running"
        with pytest.raises(PrunekitError, match=rf"in use by another prunekit run \(pid {proc.pid}\)"):
            with locked_output(out, "second"):
                pytest.fail("entered a folder another process holds")
        assert json.loads((out / RUN_FILE).read_text())["command"] == "holder"  # the refused run wrote nothing
        with monkeypatch.context() as env:  # a non-zero rank of the holder's torchrun job shares the folder
            env.setenv("WORLD_SIZE", "2")
            env.setenv("RANK", "1")
            with locked_output(out, "train"):
                pass
        assert folder_status(out) == "running"
    finally:
        proc.kill()
        proc.wait()
    # kill -9 leaves the lock file with a dead pid and the record "running": nobody holds the flock any more
    assert (out / LOCK_FILE).read_text().strip() == str(proc.pid)
    assert folder_status(out) == "interrupted"
    with locked_output(out, "takeover") as folder:
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert folder_status(out) == "complete"


def test_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(dead.stdout)
    with locked_output(tmp_path, "train"):
        assert folder_status(tmp_path) == "running"
    assert folder_status(tmp_path) == "complete"


def test_status_transitions_and_record_is_the_last_write(tmp_path):
    out = tmp_path / "run"
    assert folder_status(out) == "none"
    with locked_output(out, "prune") as folder:
        assert folder == out
        rec = json.loads((out / RUN_FILE).read_text())
        assert rec["status"] == "running" and rec["command"] == "prune" and rec["pid"] == os.getpid()
        assert folder_status(out) == "running"  # held by this process
        (out / "model.safetensors").write_bytes(b"x")
        time.sleep(0.01)
    rec = json.loads((out / RUN_FILE).read_text())
    assert rec["status"] == "complete" and "finished" in rec
    assert (out / RUN_FILE).stat().st_mtime_ns >= (out / "model.safetensors").stat().st_mtime_ns
    assert not (out / LOCK_FILE).exists()
    # a run that raises after writing stays "running" on disk and reads as interrupted
    with pytest.raises(RuntimeError):
        with locked_output(out, "prune"):
            (out / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("killed half-way")
    assert folder_status(out) == "interrupted"
    # a folder written by an older prunekit has no record
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"x")
    assert folder_status(old) == "none"
    assert folder_status(old / "model.safetensors") == "none"  # not a folder at all


def test_a_run_that_fails_before_writing_leaves_the_folder_as_found(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(PrunekitError):
        with locked_output(out, "train"):
            raise PrunekitError("bad --lr")
    assert not out.exists()
    with locked_output(out, "train"):
        (out / "model.safetensors").write_bytes(b"x")
    before = (out / RUN_FILE).read_text()
    with pytest.raises(PrunekitError):
        with locked_output(out, "train"):
            raise PrunekitError("bad --lr")
    assert (out / RUN_FILE).read_text() == before and folder_status(out) == "complete"


def test_stale_temps_are_removed_when_the_next_run_takes_the_folder(tmp_path):
    stale = [".model.safetensors.k3j_x9ab.tmp", ".log.csv.abcdefgh.tmp", ".tmpA1b2C3"]
    keep = ["model.safetensors", "notes.tmp", ".hidden", "log.csv"]
    for name in stale + keep:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".x.abcdefgh.tmp").write_text("x")  # non-recursive
    with locked_output(tmp_path, "finetune"):
        pass
    names = set(os.listdir(tmp_path))
    assert not names & set(stale)
    assert set(keep) | {"sub", RUN_FILE} == names
    assert (tmp_path / "sub" / ".x.abcdefgh.tmp").exists()
    assert clean_stale_temps(tmp_path / "missing") == []


def test_temp_name_of_the_real_atomic_writer_is_recognised(tmp_path):
    """The pattern matches what prunekit.utils.io.atomic_path really creates (as a kill would leave it)."""
    from prunekit.utils import io as pio

    killed = tmp_path / "killed"
    killed.mkdir()
    with pio.atomic_path(tmp_path / "model.safetensors") as tmp:
        Path(tmp).write_text("x")
        left = killed / Path(tmp).name  # the same name, in a folder nobody writes to
        left.write_text("x")
    assert clean_stale_temps(killed) == [left]


def test_nested_use_of_the_same_folder_in_one_thread_is_a_no_op(tmp_path):
    with locked_output(tmp_path, "run") as outer:
        with locked_output(tmp_path, "train") as inner:
            assert inner == outer
        assert json.loads((tmp_path / RUN_FILE).read_text())["status"] == "running"
    assert json.loads((tmp_path / RUN_FILE).read_text())["command"] == "run"


def test_none_is_a_no_op():
    with locked_output(None, "evaluate") as out:
        assert out is None


def _refused(out, match: str) -> None:
    with pytest.raises(PrunekitError, match=match):
        with locked_output(out, "train"):
            pytest.fail("entered")


def test_out_that_is_a_file_or_unwritable_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _refused(f, "exists and is not a folder")
    _refused(f / "sub", "not a folder")
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused(ro, "not writable")
        _refused(ro / "child", "permission denied")
    finally:
        ro.chmod(0o755)


def test_permission_errors_are_one_clear_message_even_as_root(tmp_path, monkeypatch):
    """Root ignores file modes, so the OS refusals are simulated."""
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    _refused(tmp_path / "new", "permission denied creating the folder")
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    _refused(tmp_path, "not writable")


def test_only_rank_0_of_a_torchrun_job_locks_and_records(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with locked_output(tmp_path, "train"):  # rank 1 of the job: shares rank 0's folder
        assert not (tmp_path / LOCK_FILE).exists() and not (tmp_path / RUN_FILE).exists()
    assert folder_status(tmp_path) == "none"
