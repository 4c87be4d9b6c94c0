"""Warnings that point at the user's code, not at prunekit's internals or torch's decorators.

``@torch.no_grad()`` and friends wrap a function in ``torch/utils/_contextlib.py``: a plain
``warnings.warn(..., stacklevel=2)`` inside such a function names that file instead of the caller. :func:`warn_user`
walks past every frame of prunekit, of torch (wherever it is installed) and of the standard ``contextlib``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_CONTEXTLIB = os.path.abspath(contextlib.__file__)


def _internal_prefixes() -> tuple[str, ...]:
    prefixes = [_PKG]
    torch = sys.modules.get("torch")
    torch_file = getattr(torch, "__file__", None)
    if torch_file:
        prefixes.append(os.path.dirname(os.path.abspath(torch_file)) + os.sep)
    return tuple(prefixes)


def _is_internal(filename: str, prefixes: tuple[str, ...]) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(prefixes) or path == _CONTEXTLIB


class HeldWarning(UserWarning):
    """A warning about a cause that may make the command fail later (e.g. NaN weights). The CLI holds it until the
    command ends: folded into the error when the command fails (one line per user error), printed once otherwise.
    ``cause``: the short statement of the cause that is put in front of the error."""

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause if cause is not None else message


class NonFiniteWarning(HeldWarning):
    """Weights, outputs or losses hold NaN or inf."""


def warn_user(message: str | Warning, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller frame outside prunekit, torch and ``contextlib``.
    ``message`` may be a Warning instance (its class is then the category).

    >>> warn_user("layer fc kept one channel instead of none")  # doctest: +SKIP
    """
    prefixes = _internal_prefixes()
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and _is_internal(frame.f_code.co_filename, prefixes):
        frame, level = frame.f_back, level + 1  # stops at the outermost frame (prunekit's own CLI entry)
    warnings.warn(message, category, stacklevel=level + 1)
