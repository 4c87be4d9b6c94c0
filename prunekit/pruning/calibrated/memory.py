"""Peak memory of a piece of work: the process's resident set size sampled by a background thread.

``tracemalloc`` does not see tensor storage (torch allocates outside Python's allocator) and ``ru_maxrss`` is a
high-water mark of the whole process that never goes down, so neither measures one call. :class:`PeakRSS` reads
``/proc/self/statm`` every ``interval`` seconds while the block runs and reports the peak RSS and its rise over
the RSS at entry. Where ``/proc`` is missing it falls back to ``ru_maxrss`` (then ``rise`` is only a lower bound).
"""
from __future__ import annotations

import os
import resource
import sys
import threading
from types import TracebackType

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int | None:
    """Resident set size in bytes now (None without ``/proc``)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def max_rss() -> int:
    """The process's peak RSS so far (``ru_maxrss``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class PeakRSS:
    """``with PeakRSS() as mem: ...`` then ``mem.peak`` (bytes) and ``mem.rise`` (peak − RSS at entry)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = current_rss()
            if now is not None and now > self.peak:
                self.peak = now

    def __enter__(self) -> "PeakRSS":
        now = current_rss()
        if now is None:
            self.start = self.peak = max_rss()
            return self
        self.start = self.peak = now
        self._thread = threading.Thread(target=self._sample, name="prunekit-peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is None:
            self.peak = max(self.peak, max_rss())
            return
        self._stop.set()
        self._thread.join()
        now = current_rss()
        if now is not None:
            self.peak = max(self.peak, now)

    @property
    def rise(self) -> int:
        """Peak RSS minus the RSS when the block started (bytes)."""
        return max(0, self.peak - self.start)
