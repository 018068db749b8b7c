"""The one clock of the gateway.

Monotonic time (seconds, float) measures every age, timeout and schedule: a Raspberry Pi without a real-time
clock jumps by years when NTP syncs, and wall time must never decide whether BMS data is stale. Wall time is
used only for log lines and published timestamps.

Everything that needs time takes a :class:`Clock`, so tests and long simulations use :class:`FakeClock` and
compress hours into milliseconds instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Source of time for the gateway."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences are meaningful."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch; for logs and display only."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A manually driven clock: ``sleep`` and ``advance`` move time forward instantly.

    Thread-safe, so a simulated BMS and the code under test may share it.
    """

    def __init__(self, start_s: float = 1000.0, wall_start_s: float = 1_750_000_000.0) -> None:
        self._now = start_s
        self._wall_offset = wall_start_s - start_s
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        with self._lock:
            return self._now + self._wall_offset

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += seconds
