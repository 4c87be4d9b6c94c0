"""One run per output folder, and a record of whether the folder's run finished.

:func:`locked_output` wraps everything a command writes into ``--out``::

    with locked_output(args.out, "prune") as out:
        ...                                   # write the folder's files

- a second prunekit process on the same folder is refused with a :class:`PrunekitError` naming the holder's pid
  (an exclusive ``fcntl.flock`` on ``out/.prunekit.lock``; the kernel drops it when the holder dies, so the lock of
  a killed run is simply taken over);
- temp files a killed run left behind are removed (:func:`clean_stale_temps`);
- ``out/.prunekit-run.json`` says ``"running"`` while the block runs and ``"complete"`` as the run's LAST write, so
  :func:`folder_status` tells a finished folder from one whose run was killed or failed half-way ("interrupted").

A block that raises before writing anything into the folder leaves it as it found it (previous run record restored,
a folder it created removed); otherwise the record stays ``"running"`` and the folder reads as interrupted.
Nested ``locked_output`` on the same folder in the same thread (a recipe stage inside a recipe run) is a no-op.
In a torchrun job (``WORLD_SIZE`` > 1) only rank 0 locks and records: the other ranks of the job write nothing.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import PrunekitError
from . import io as _io

try:  # POSIX only; elsewhere the folder is used without a lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RUN_FILE = ".prunekit-run.json"
LOCK_FILE = ".prunekit.lock"

# prunekit.utils.io.atomic_path: ".NAME.<mkstemp random>.tmp"; safetensors (Rust tempfile crate): ".tmpXXXXXX".
_ATOMIC_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")
_SAFETENSORS_TEMP = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
_RETRIES = 5  # a folder_status() probe holds a shared lock for microseconds: retry before refusing
_held: dict[Path, int] = {}  # folders this process holds -> thread id (nested use is a no-op)
_held_guard = threading.Lock()


def _is_temp(name: str) -> bool:
    """True for names of temp files written by prunekit's atomic writes or by safetensors."""
    is_prunekit_temp = getattr(_io, "is_prunekit_temp", None)
    if is_prunekit_temp is not None and is_prunekit_temp(name):
        return True
    return bool(_ATOMIC_TEMP.match(name) or _SAFETENSORS_TEMP.match(name))


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files a killed prunekit run left in ``folder`` (non-recursive); return them.

    Only call it while holding the folder's lock (as :func:`locked_output` does): a live run's temps look the same."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if _is_temp(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run in %s", len(removed), folder)
    return removed


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = _io.read_json(folder / RUN_FILE)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"status": "unreadable"}
    return record if isinstance(record, dict) else {"status": "unreadable"}


def _lock_busy(folder: Path) -> bool:
    """True if some process (this one included) holds ``folder``'s lock."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def folder_status(path: str | os.PathLike) -> str:
    """State of an output folder: ``"complete"``, ``"running"`` (its lock is held by a live process),
    ``"interrupted"`` (the record says running but nobody holds the lock: killed or failed half-way) or ``"none"``
    (no run record: a folder written by an older prunekit, or not a run folder)."""
    folder = Path(path)
    if not folder.is_dir():
        return "none"
    record = _read_record(folder)
    if record is None:
        return "none"
    if record.get("status") == "complete":
        return "complete"
    return "running" if _lock_busy(folder) else "interrupted"


def _prepare_folder(out: str | os.PathLike) -> tuple[Path, bool]:
    """mkdir -p ``out`` with clear errors; return (folder, created)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise PrunekitError(f"--out {folder} exists and is not a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PrunekitError(f"--out {folder}: a part of the path exists and is not a folder") from None
    except PermissionError:
        raise PrunekitError(f"--out {folder}: permission denied creating the folder") from None
    except OSError as e:
        raise PrunekitError(f"--out {folder}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PrunekitError(f"--out {folder} is not writable (read-only folder or permission denied)")
    return folder, created


def _holder_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


def _acquire(folder: Path) -> int | None:
    """Open and exclusively lock ``folder/LOCK_FILE``; return its fd (None where locking is unsupported)."""
    if fcntl is None:
        return None
    path = folder / LOCK_FILE
    attempt = 0
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            raise PrunekitError(f"--out {folder}: permission denied opening {LOCK_FILE}") from None
        except OSError as e:
            raise PrunekitError(f"--out {folder}: cannot create {LOCK_FILE} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)  # a file system without flock (some network mounts): run unlocked
                log.warning("cannot lock %s (%s); running without a lock", path, e.strerror or e)
                return None
            pid = _holder_pid(fd)
            os.close(fd)
            attempt += 1
            if attempt < _RETRIES:
                time.sleep(0.05 * attempt)
                continue
            raise PrunekitError(f"--out {folder} is in use by another prunekit run (pid {pid}); wait for it to "
                                f"finish or choose another --out") from None
        # The holder before us may have removed the file after we opened it: lock the file that is there now.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd


def _release(folder: Path, fd: int | None, remove: bool) -> None:
    if fd is None:
        return
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / LOCK_FILE)  # while still holding it: see the inode check in _acquire
    else:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
    os.close(fd)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every entry but the lock and run files."""
    snap = {}
    for entry in os.scandir(folder):
        if entry.name not in (LOCK_FILE, RUN_FILE):
            st = entry.stat(follow_symlinks=False)
            snap[entry.name] = (st.st_mtime_ns, st.st_size)
    return snap


def _torchrun_rank() -> int:
    """This process's global rank in a torchrun job (0 outside one)."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
    return rank if world > 1 else 0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def locked_output(out: str | os.PathLike | None, command: str) -> Iterator[Path | None]:
    """Hold ``out`` exclusively for one run of ``command`` and record its completion (see the module docstring).

    ``None`` is a no-op (yields ``None``). Raises :class:`PrunekitError` if ``out`` is an existing non-folder, cannot
    be created or written, or is held by another live process (the message names its pid)."""
    if out is None:
        yield None
        return
    folder, created = _prepare_folder(out)
    key = folder.resolve()
    me = threading.get_ident()
    with _held_guard:
        holder = _held.get(key)
        if holder is None:
            _held[key] = me
    if holder == me:  # nested in this thread's run of the same folder: that run owns the record
        yield folder
        return
    if holder is not None:
        raise PrunekitError(f"--out {folder} is in use by another run in this process (pid {os.getpid()})")
    if _torchrun_rank() > 0:  # one job of several processes: rank 0 holds the folder and writes its record
        try:
            yield folder
        finally:
            with _held_guard:
                _held.pop(key, None)
        return
    fd = None
    untouched = False
    try:
        fd = _acquire(folder)
        clean_stale_temps(folder)
        run_path = folder / RUN_FILE
        previous = run_path.read_bytes() if run_path.is_file() else None
        before = _snapshot(folder)
        record = {"status": "running", "command": command, "pid": os.getpid(), "started": _now()}
        try:
            _io.write_json(run_path, record)
        except PermissionError:
            raise PrunekitError(f"--out {folder}: permission denied writing {RUN_FILE}") from None
        try:
            yield folder
        except BaseException:
            untouched = _snapshot(folder) == before
            if untouched:  # nothing written: leave the folder as it was found
                if previous is None:
                    run_path.unlink(missing_ok=True)
                else:
                    _io.write_text(run_path, previous.decode("utf-8", "replace"))
            raise
        record.update(status="complete", finished=_now())
        _io.write_json(run_path, record)
    finally:
        _release(folder, fd, remove=True)
        with _held_guard:
            _held.pop(key, None)
        if created and untouched:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds if empty
