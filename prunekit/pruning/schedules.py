"""Sparsity schedules: which target sparsity is in force at each training step (separate from the criteria).

A schedule is a callable ``schedule(step) -> float`` (the fraction of in-scope weights pruned after ``step``
optimizer steps) plus ``final`` (the sparsity it ends at). Targets only change at *update steps* and stay constant
in between, so a :class:`~prunekit.pruning.sparsifier.Sparsifier` recomputes masks exactly when the value changes.
Before ``start_step`` every gradual schedule is dense (0.0); from ``end_step`` on it is ``final`` exactly.

- :class:`OneShot` ``(ratio, step=0)``: dense, then ``ratio`` from ``step`` on.
- :class:`Linear` ``(start_step, end_step, frequency, initial, final)``: linear ramp, updated every ``frequency``.
- :class:`AGP` ``(start_step, end_step, frequency, initial, final)``: automated gradual pruning (Zhu & Gupta 2017)
  ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n·Δt))³`` at the update steps ``t = t0, t0 + Δt, ..., t0 + n·Δt``
  (``n·Δt = end_step - start_step``; when ``frequency`` does not divide it, the last update is ``end_step`` itself).
- :class:`Rounds` ``(ratios, every=1, start_step=0)``: iterative pruning as kesi's rounds: round ``j`` (at step
  ``start_step + j·every``) prunes the fraction ``ratios[j]`` of the weights that are still *remaining*, so after
  round ``j`` the sparsity is ``1 - Π_{i≤j}(1 - ratios[i])``.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import PrunekitError, check_range

__all__ = ["AGP", "Cubic", "Linear", "OneShot", "Rounds", "Schedule"]


def _int(name: str, value, low: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise PrunekitError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class Schedule:
    """Base class: ``__call__(step)`` -> target sparsity in [0, 1]; ``final``; ``update_steps()``."""

    final: float = 0.0

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_steps(self) -> list[int]:
        """The steps at which the target changes (or may change), in order."""
        raise NotImplementedError  # pragma: no cover

    def to_dict(self) -> dict:
        """A JSON-able description (stored in a Sparsifier's state_dict to check a resume)."""
        return {"kind": type(self).__name__, **{k: (list(v) if isinstance(v, tuple) else v)
                                                 for k, v in vars(self).items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class OneShot(Schedule):
    """Dense before ``step``, ``ratio`` from ``step`` on (default: from the start).

    >>> import prunekit
    >>> s = prunekit.OneShot(0.8, step=5)
    >>> s(4), s(5), s.final
    (0.0, 0.8, 0.8)
    """

    def __init__(self, ratio: float, step: int = 0):
        check_range("ratio", float(ratio), 0.0, 1.0)
        self.ratio = float(ratio)
        self.step = _int("step", step)

    @property
    def final(self) -> float:  # type: ignore[override]
        return self.ratio

    def __call__(self, step: int) -> float:
        return self.ratio if step >= self.step else 0.0

    def update_steps(self) -> list[int]:
        return [self.step]


class _Gradual(Schedule):
    """Shared by Linear and AGP: update steps ``t0, t0+Δt, ...`` and ``end_step``; the shape in ``_shape``."""

    def __init__(self, start_step: int, end_step: int, frequency: int = 1, initial: float = 0.0,
                 final: float = 0.9):
        self.start_step = _int("start_step", start_step)
        self.end_step = _int("end_step", end_step)
        self.frequency = _int("frequency", frequency, low=1)
        if self.end_step < self.start_step:
            raise PrunekitError(f"end_step ({end_step}) must not be before start_step ({start_step})")
        check_range("initial sparsity", float(initial), 0.0, 1.0)
        check_range("final sparsity", float(final), 0.0, 1.0)
        if float(final) < float(initial):
            raise PrunekitError(f"final sparsity {final} is below the initial sparsity {initial}: masks only grow")
        self.initial = float(initial)
        self._final = float(final)

    @property
    def final(self) -> float:  # type: ignore[override]
        return self._final

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, "start_step": self.start_step, "end_step": self.end_step,
                "frequency": self.frequency, "initial": self.initial, "final": self._final}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(start_step={self.start_step}, end_step={self.end_step}, "
                f"frequency={self.frequency}, initial={self.initial}, final={self._final})")

    def _shape(self, x: float) -> float:  # pragma: no cover - abstract; x in [0, 1] is the progress
        raise NotImplementedError

    def last_update(self, step: int) -> int | None:
        """The latest update step ``<= step`` (None before ``start_step``)."""
        if step < self.start_step:
            return None
        if step >= self.end_step:
            return self.end_step
        return self.start_step + (step - self.start_step) // self.frequency * self.frequency

    def __call__(self, step: int) -> float:
        t = self.last_update(int(step))
        if t is None:
            return 0.0
        span = self.end_step - self.start_step
        if t >= self.end_step or span == 0:
            return self._final
        if t == self.start_step:
            return self.initial  # exactly s_i (no rounding through the formula)
        return self._shape((t - self.start_step) / span)

    def update_steps(self) -> list[int]:
        steps = list(range(self.start_step, self.end_step, self.frequency))
        return steps + [self.end_step]


class Linear(_Gradual):
    """``s_t = s_i + (s_f - s_i)·(t - t0)/(n·Δt)`` at the update steps, constant in between.

    >>> import prunekit
    >>> s = prunekit.Linear(start_step=0, end_step=100, frequency=10, initial=0.0, final=0.9)
    >>> s(50), s(59), s(100)
    (0.45, 0.45, 0.9)
    """

    def _shape(self, x: float) -> float:
        return self.initial + (self._final - self.initial) * x


class AGP(_Gradual):
    """Automated gradual pruning (Zhu & Gupta 2017): ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n·Δt))³``.

    Prunes fast at first, when many redundant weights remain, and slowly near ``final``; ``final`` is reached
    exactly at ``end_step``. Between update steps (every ``frequency`` steps) the target stays constant.
    ``prunekit.Cubic`` is the same class.

    >>> import prunekit
    >>> s = prunekit.AGP(start_step=0, end_step=100, frequency=10, initial=0.0, final=0.9)
    >>> s(0), s(50), s(100)   # 0.9 - 0.9 * (1 - 50/100) ** 3 = 0.7875
    (0.0, 0.7875, 0.9)
    """

    def _shape(self, x: float) -> float:
        return self._final + (self.initial - self._final) * (1.0 - x) ** 3


class Rounds(Schedule):
    """Iterative rounds: round ``j`` prunes ``ratios[j]`` of the *remaining* weights, at step
    ``start_step + j·every``. Sparsity after round ``j``: ``1 - Π_{i≤j}(1 - ratios[i])``; dense before round 0.

    >>> import prunekit
    >>> s = prunekit.Rounds([0.5, 0.5], every=10)
    >>> s(0), s(10), s.final
    (0.5, 0.75, 0.75)
    """

    def __init__(self, ratios: Sequence[float], every: int = 1, start_step: int = 0):
        if isinstance(ratios, (int, float)):
            ratios = [ratios]
        ratios = tuple(float(r) for r in ratios)
        if not ratios:
            raise PrunekitError("Rounds needs at least one ratio")
        for r in ratios:
            check_range("round ratio", r, 0.0, 1.0)
        self.ratios = ratios
        self.every = _int("every", every, low=1)
        self.start_step = _int("start_step", start_step)

    def cumulative(self) -> list[float]:
        """The sparsity after each round."""
        out, remaining = [], 1.0
        for r in self.ratios:
            remaining *= 1.0 - r
            out.append(1.0 - remaining)
        return out

    @property
    def final(self) -> float:  # type: ignore[override]
        return self.cumulative()[-1]

    def __call__(self, step: int) -> float:
        if step < self.start_step:
            return 0.0
        j = min((int(step) - self.start_step) // self.every, len(self.ratios) - 1)
        return self.cumulative()[j]

    def update_steps(self) -> list[int]:
        return [self.start_step + j * self.every for j in range(len(self.ratios))]


#: The cubic schedule of Zhu & Gupta 2017 under its shape's name.
Cubic = AGP


def check_monotone(schedule, steps: int) -> None:
    """Raise ``PrunekitError`` if ``schedule`` ever decreases over ``range(steps + 1)`` (masks only grow)."""
    prev = -math.inf
    for t in range(steps + 1):
        s = float(schedule(t))
        if s < prev:
            raise PrunekitError(f"schedule decreases at step {t} ({prev} -> {s}); masks only grow")
        prev = s
