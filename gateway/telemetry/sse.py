"""Server-sent events for the local page: ``GET /events``, at most one update a second, coalesced.

The control loop only calls :meth:`Hub.publish` (a counter bumped under a lock, never I/O). Each open stream
runs on its own status-server thread (:func:`serve_stream`): it renders the newest state only when it writes,
so updates that come faster than :data:`MIN_INTERVAL_S` are merged into one and a slow page never queues
anything. A comment line every :data:`HEARTBEAT_S` tells the page (and any proxy) that the stream is alive
while nothing changes; ``retry:`` tells the browser's ``EventSource`` how soon to reconnect by itself.

When a stream writes what is decided by :class:`Schedule`, a pure function of the clock and the hub's version,
so the coalescing is tested on a fake clock. A stream takes none of the status server's request slots and is
not cut by its request deadline: it has a small cap of its own and a deadline per write (the socket timeout;
:meth:`~gateway.telemetry.bounded_http.BoundedHTTPServer.become_stream`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.clock import Clock

MIN_INTERVAL_S: Final = 1.0
"""At most one update a second per stream."""
HEARTBEAT_S: Final = 15.0
"""A comment line after this long without a write, s."""
RETRY_MS: Final = 3000
"""The browser reconnects this soon after losing the stream, ms."""
HEARTBEAT: Final = b": heartbeat\n\n"
CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"


class Hub:
    """Tells the open streams that a newer state exists. Thread-safe; :meth:`close` ends every stream."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._version = 0
        self._closed = False

    @property
    def version(self) -> int:
        return self._version

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self) -> None:
        """A newer state exists (the control loop's thread: never blocks for long)."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait(self, seen_version: int, timeout_s: float) -> None:
        """Until a version after ``seen_version`` is published, the hub closes, or ``timeout_s`` (real) passes."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen_version or self._closed, timeout=timeout_s)


@dataclass(frozen=True, slots=True)
class Step:
    """What a stream does next: ``data`` (write the newest state), ``heartbeat``, or ``wait`` ``wait_s``."""

    action: str
    wait_s: float = 0.0


class Schedule:
    """When one stream writes: data as soon as a new version exists but never twice within ``min_interval_s``,
    a heartbeat after ``heartbeat_s`` of no write."""

    def __init__(self, start_s: float, min_interval_s: float = MIN_INTERVAL_S, heartbeat_s: float = HEARTBEAT_S):
        self.min_interval_s = min_interval_s
        self.heartbeat_s = heartbeat_s
        self.sent_version = -1
        """The hub's version last written (-1: none yet: the first state goes out at once)."""
        self._last_data_s = -math.inf
        self._last_write_s = start_s

    def next(self, now_s: float, version: int) -> Step:
        data_due_s = self._last_data_s + self.min_interval_s if version != self.sent_version else math.inf
        if now_s >= data_due_s:
            return Step("data")
        heartbeat_due_s = self._last_write_s + self.heartbeat_s
        if now_s >= heartbeat_due_s:
            return Step("heartbeat")
        return Step("wait", min(data_due_s, heartbeat_due_s) - now_s)

    def wrote_data(self, now_s: float, version: int) -> None:
        self.sent_version = version
        self._last_data_s = self._last_write_s = now_s

    def wrote_heartbeat(self, now_s: float) -> None:
        self._last_write_s = now_s


def event(data: str) -> bytes:
    """One ``message`` event; each line of ``data`` its own ``data:`` field, as the format wants."""
    return b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"


def serve_stream(
    write: Callable[[bytes], None],
    hub: Hub,
    clock: Clock,
    render: Callable[[], str],
    *,
    schedule: Schedule | None = None,
    max_wait_s: float = HEARTBEAT_S,
) -> int:
    """Write events until the hub closes or ``write`` fails (the page went away: ``OSError``, which propagates).

    :param render: the newest state as one JSON text, called only when an update is written.
    :param max_wait_s: the longest real wait between two looks at the clock (a fake clock does not wake us).
    :returns: updates written (when the hub closed).
    """
    schedule = schedule or Schedule(clock.monotonic())
    write(f"retry: {RETRY_MS}\n\n".encode())
    written = 0
    while not hub.closed:
        now_s, version = clock.monotonic(), hub.version
        step = schedule.next(now_s, version)
        if step.action == "data":
            write(event(render()))
            schedule.wrote_data(now_s, version)
            written += 1
        elif step.action == "heartbeat":
            write(HEARTBEAT)
            schedule.wrote_heartbeat(now_s)
        else:
            # A new version wakes us early; one not yet due only shortens the next wait.
            hub.wait(version, min(step.wait_s, max_wait_s))
    return written
