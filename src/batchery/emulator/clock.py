"""Injectable time source for the emulator.

Every timestamp and lifecycle decision in the emulator reads the clock it was given, so tests can
move time forward with :class:`ManualClock` instead of sleeping.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Wall-clock time (``time.time``). Subclass and override :meth:`now` for other sources."""

    def now(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that only moves when told to; shared safely between the test thread and the server."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to an absolute time (never backwards)."""
        with self._lock:
            if when < self._now:
                raise ValueError("a clock cannot go backwards")
            self._now = float(when)
