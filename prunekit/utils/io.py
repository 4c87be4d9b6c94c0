"""Atomic file output: every file prunekit writes appears whole or not at all.

:func:`atomic_path` writes to a temp file ``.NAME.<8 random [a-z0-9]>.tmp`` next to the target (created with the
process umask, like any ``open(..., "w")``), fsyncs it, renames it onto the target and fsyncs the folder, so a
crash leaves either the old file or the new one, plus at worst a temp file that :func:`is_prunekit_temp`
recognises (``prunekit.utils.runlock.clean_stale_temps`` deletes those).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..errors import PrunekitError

_TEMP_SUFFIX = ".tmp"
_TEMP_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# ours: 8 chars of _TEMP_ALPHABET; older prunekit used tempfile.mkstemp (8 chars of [a-z0-9_])
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp", re.DOTALL)


def is_prunekit_temp(name: str) -> bool:
    """True for a file name that :func:`atomic_path` uses for its temp files: ``.NAME.XXXXXXXX.tmp`` (a dot,
    the target's name, a dot, 8 characters of ``[a-z0-9_]``, ``.tmp``). Takes a bare name, not a path."""
    return bool(_TEMP_NAME.fullmatch(name)) and "/" not in name


def _create_temp(path: Path) -> Path:
    """Create an empty, unique temp file next to ``path`` (mode 0o666 minus the umask) and return its path."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{''.join(secrets.choice(_TEMP_ALPHABET) for _ in range(8))}"
                             f"{_TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a unique temp file next to {path}")  # pragma: no cover


def _fsync_path(path: Path, directory: bool = False) -> None:
    """fsync a file (or a folder, where the platform allows it) by path."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # e.g. Windows cannot open folders
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some filesystems refuse fsync on folders
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, fsync it, rename it onto ``path`` and
    fsync the folder. The temp file already exists (empty, umask permissions): write it by path or open it.
    A folder that cannot be created or written is a :class:`~prunekit.errors.PrunekitError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(path)
    except PermissionError:
        raise PrunekitError(f"cannot write {path}: permission denied in {path.parent}") from None
    except (FileExistsError, NotADirectoryError):
        raise PrunekitError(f"cannot write {path}: a part of {path.parent} is a file, not a folder") from None
    try:
        yield tmp_path
        _fsync_path(tmp_path)
        os.replace(tmp_path, path)
        _fsync_path(path.parent, directory=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def path_problem(path: str | os.PathLike) -> str | None:
    """None if ``path`` can be looked up; else why not, as a phrase for an error message: ``"not found: PATH"``,
    ``"permission denied"`` (a folder on the way cannot be searched), ``"too many levels of symbolic links"``..."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return f"not found: {path}"
    except PermissionError:
        return "permission denied"
    except NotADirectoryError:
        return f"not found: {path} (a part of it is a file, not a folder)"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_csv(path: str | os.PathLike, rows: Iterable[dict[str, Any]], fieldnames: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV atomically; column order = ``fieldnames`` or first row's keys."""
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(rows[0].keys()) if rows else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return write_text(path, buf.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
