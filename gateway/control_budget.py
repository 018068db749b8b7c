"""How often the BMS may be written: the least interval between two writes and a daily budget, in one record.

Every BMS write (:class:`~gateway.control.Controller`) first asks :meth:`WriteBudget.check` (refused before the
BMS is touched), then :meth:`WriteBudget.take` just before the write frames go out, which records the write.
The rules: at least ``control.min_interval_s`` since the previous write, and fewer than
``control.max_writes_per_day`` writes in the last 24 h (rolling). A refusal says which rule, and when the next
write is possible.

The record is one kind (:data:`KIND`) of the state store (:mod:`gateway.state_store`), so the service and the
CLI (which takes the port itself only when no service runs) count against the same budget, and a restart
resets nothing. Its times are **wall** times (the injected clock's ``wall()``): monotonic time means nothing
to the next process. A wall clock that jumps back (a Pi without RTC before NTP) would put recorded writes in
the future: such a write is counted as made now, and stored so, which refuses rather than allows.

Fails closed: a record that exists but cannot be read or used refuses every write, with one line naming the file
and a hint how to reset it; a missing record is the first use. A write that cannot be recorded is not made.
Processes serialise the check-and-record on a lock file beside the record (``flock``; released by the kernel if
a process dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import time
from collections.abc import Iterator
from typing import Final

from gateway.clock import Clock
from gateway.errors import ControlRefused
from gateway.state_store import StateStore, StateUnreadable

KIND: Final = "control-writes"
"""The state store's kind for the write record: ``{"writes_wall_s": [wall time of each write in the last 24 h]}``."""
WINDOW_S: Final = 24 * 3600.0
"""The budget's rolling window, s."""


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 05 min``: for a user waiting."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _local_time(wall_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(wall_s))


class WriteBudget:
    """The interval and the daily budget of BMS writes.

    :param store: where the record lives; None keeps it in this object only (a controller in a test).
    """

    def __init__(self, min_interval_s: float, max_writes_per_day: int, clock: Clock, store: StateStore | None) -> None:
        self.min_interval_s = min_interval_s
        self.max_writes_per_day = max_writes_per_day
        self._clock = clock
        self._store = store
        self._in_memory: list[float] = []
        self._recorded: list[float] = []
        """The record as last read, before a future time in it was made now."""

    def check(self) -> None:
        """:raises ControlRefused: a write now would break a rule, or the record cannot be read."""
        writes = self._load()
        now_s = self._clock.wall()
        if any(t > now_s for t in self._recorded):
            self._save_clamped()  # a write "in the future" ages from now on, not from when the clock catches up
        self._refusal(writes, now_s)

    def take(self) -> None:
        """Record a write made now, if the rules allow it (checked again: another process may have written).

        :raises ControlRefused: a rule, an unreadable record, or the record cannot be written; then the write
            must not be made.
        """
        with self._locked():
            writes = self._load()
            now_s = self._clock.wall()
            self._refusal(writes, now_s)
            self._save([t for t in writes if now_s - t < WINDOW_S] + [now_s], now_s)

    def _save_clamped(self) -> None:
        with self._locked():
            self._save(self._load(), self._clock.wall())

    def _save(self, writes: list[float], now_s: float) -> None:
        if self._store is None:
            self._in_memory = writes
            return
        try:
            self._store.write(KIND, {"writes_wall_s": writes}, now_s)
        except OSError as error:
            raise ControlRefused(
                "state unwritable",
                f"refused: cannot record the write in {self._store.path(KIND)} ({error.strerror or error}), "
                "so it would not count against control.max_writes_per_day; "
                f"hint: the directory {self._store.directory} must be writable by this user",
            ) from None

    def _load(self) -> list[float]:
        """Wall times of the recorded writes, sorted, a future one (the clock went back) counted as now."""
        self._recorded = list(self._in_memory) if self._store is None else self._read_record(self._store)
        now_s = self._clock.wall()
        return sorted(min(t, now_s) for t in self._recorded)

    @staticmethod
    def _read_record(store: StateStore) -> list[float]:
        path = store.path(KIND)
        hint = f"hint: check the file, or delete it to reset the BMS write budget (rm {path})"
        try:
            stored = store.read(KIND)
        except StateUnreadable as error:
            raise ControlRefused(
                "state unreadable", f"refused: the BMS write record {path} is unusable ({error.why}); {hint}"
            ) from None
        if stored is None:
            return []  # first use
        writes = stored.data.get("writes_wall_s")
        if not isinstance(writes, list) or not all(
            isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in writes
        ):
            raise ControlRefused(
                "state unreadable", f"refused: the BMS write record {path} is unusable (no list of write times); {hint}"
            )
        return [float(t) for t in writes]

    def _refusal(self, writes: list[float], now_s: float) -> None:
        recent = [t for t in writes if now_s - t < WINDOW_S]
        if recent:
            since_s = now_s - recent[-1]
            if since_s < self.min_interval_s:
                raise ControlRefused(
                    "rate limited",
                    f"refused: the last BMS write was {since_s:.1f} s ago, control.min_interval_s is "
                    f"{self.min_interval_s:g} s (try again in {self.min_interval_s - since_s:.1f} s)",
                )
        excess = len(recent) - self.max_writes_per_day
        if excess >= 0:
            # The next write is possible once enough of the window's writes have aged out of it.
            next_s = recent[excess] + WINDOW_S
            raise ControlRefused(
                "daily budget",
                f"refused: {len(recent)} BMS writes in the last 24 h, control.max_writes_per_day is "
                f"{self.max_writes_per_day} (the next is possible in {_duration(next_s - now_s)}, "
                f"at {_local_time(next_s)})",
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the record's lock file (other processes wait): check and record are one step."""
        if self._store is None:
            yield
            return
        lock_path = self._store.directory / f".{KIND}.lock"
        try:
            self._store.directory.mkdir(parents=True, exist_ok=True)
            handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise ControlRefused(
                "state unwritable",
                f"refused: cannot lock the BMS write record in {self._store.directory} "
                f"({error.strerror or error}); hint: run as the user the service runs as, or start the service "
                "(bms-gateway control then asks it)",
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # releases the lock
