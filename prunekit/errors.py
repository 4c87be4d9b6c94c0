"""Exceptions that prunekit raises for problems a user can fix.

The CLI turns a :class:`PrunekitError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class PrunekitError(Exception):
    """A user error: bad path, unknown name, out-of-range value, mismatched checkpoint, ...

    The CLI prints it as one line ``prunekit: error: ...`` (exit code 2); other exceptions are bugs and keep their
    traceback.

    >>> import prunekit
    >>> try:
    ...     prunekit.create_model("resnet21")
    ... except prunekit.PrunekitError as e:
    ...     print(str(e)[:30])
    unknown model 'resnet21'; vali
    """


class CheckpointError(PrunekitError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class UnknownNameError(PrunekitError, KeyError):
    """An unknown model, dataset, method or plan name (the message lists the valid ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EmptyLayerError(PrunekitError):
    """A prune would remove every weight or channel of a layer."""


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> float | int:
    """Return ``value`` as a number (an ``int`` when ``integer``) if it is one and lies within the bounds.

    The one numeric validator of prunekit: CLI flags, recipe fields and library arguments all pass through it.
    ``value`` may be a number or its text (``"1e-3"``); booleans are not numbers. NaN is always rejected, ±inf
    unless the matching bound is ±inf; ``integer`` rejects non-integral values. The error names ``name``.

    >>> check_number("--epochs", "3", low=1, integer=True)
    3
    """
    if isinstance(value, bool) or value is None:
        raise PrunekitError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise PrunekitError(f"{name} must be {'an integer' if integer else 'a number'}, got {text!r}") \
                    from None
    if not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise PrunekitError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, float):
        inf = float("inf")
        if value != value or (value == inf and high != inf) or (value == -inf and low != -inf):
            raise PrunekitError(f"{name} must be a finite number, got {value}")
        if integer:
            if not value.is_integer():
                raise PrunekitError(f"{name} must be an integer, got {value}")
            value = int(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if low is not None and high is not None:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise PrunekitError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")
        if integer and low is not None and high is None and low in (0, 1) and not low_open:
            raise PrunekitError(f"{name} must be a {'positive' if low == 1 else 'non-negative'} integer, "
                                f"got {value}")
        if low is not None:
            raise PrunekitError(f"{name} must be in {'(' if low_open else '['}{low}, inf), got {value}")
        raise PrunekitError(f"{name} must be in (-inf, {high}{')' if high_open else ']'}, got {value}")
    return value


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
