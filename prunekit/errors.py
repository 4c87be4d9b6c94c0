"""Exceptions that prunekit raises for problems a user can fix.

The CLI turns a :class:`PrunekitError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class PrunekitError(Exception):
    """A user error: bad path, unknown name, out-of-range value, mismatched checkpoint, ..."""


class CheckpointError(PrunekitError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class UnknownNameError(PrunekitError, KeyError):
    """An unknown model, dataset, method or plan name (the message lists the valid ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EmptyLayerError(PrunekitError):
    """A prune would remove every weight or channel of a layer."""


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> float:
    """Return ``value`` if it lies in the interval, else raise a :class:`PrunekitError` naming ``name``.

    NaN is never in range; ±inf only where the interval reaches it."""
    if value != value or (value in (float("inf"), float("-inf")) and value not in (low, high)):
        raise PrunekitError(f"{name} must be a finite number, got {value}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise PrunekitError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")
    return value
