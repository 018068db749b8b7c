"""systemd's notification protocol, written by us: one datagram per message on ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. A send never blocks and never raises: the
socket is non-blocking and a failure is logged once, because a missing supervisor must not stop the gateway.

:class:`WatchdogPinger` is called by the control loop after each tick, on the loop's own thread (never from a
side thread, which would keep pinging while the loop hangs): it sends ``WATCHDOG=1`` at most every
``WatchdogSec / 2`` (from ``$WATCHDOG_USEC``), so pings stop as soon as the loop stops making progress and
systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from gateway.clock import Clock

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``KEY=value`` messages to systemd; a no-op when ``socket_path`` is None."""

    def __init__(self, socket_path: str | None) -> None:
        self._address = _address(socket_path) if socket_path else None
        self._socket: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram of ``lines`` (``"READY=1"``, ...). True when it went out."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)  # a full queue drops a ping; the loop never waits for systemd
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as error:
            if not self._failing:
                log.warning("sd_notify: cannot notify systemd: %s", error.strerror or error)
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify: notifying systemd again")
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval_s(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between pings (half of ``WatchdogSec``), or None when systemd expects none from this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # the watchdog belongs to another process (our parent, say)
    return int(usec) / 1e6 / 2


class WatchdogPinger:
    """``WATCHDOG=1`` from the control loop: call :meth:`on_tick` after every completed tick."""

    def __init__(self, notifier: Notifier, interval_s: float | None, clock: Clock) -> None:
        self._notifier = notifier
        self._interval_s = interval_s if notifier.enabled else None
        self._clock = clock
        self._last_ping_s: float | None = None
        self.pings = 0

    @classmethod
    def from_env(cls, notifier: Notifier, clock: Clock, environ: Mapping[str, str] = os.environ) -> WatchdogPinger:
        return cls(notifier, watchdog_interval_s(environ), clock)

    @property
    def interval_s(self) -> float | None:
        return self._interval_s

    def on_tick(self) -> None:
        """The loop completed a tick (its progress): ping if the last ping is ``interval_s`` old."""
        if self._interval_s is None:
            return
        now = self._clock.monotonic()
        if self._last_ping_s is not None and now - self._last_ping_s < self._interval_s:
            return
        self._last_ping_s = now
        if self._notifier.watchdog():
            self.pings += 1


def _address(path: str) -> str | bytes:
    # "@name" is a socket in the abstract namespace: a leading NUL byte on the wire.
    return b"\0" + path[1:].encode() if path.startswith("@") else path


def _one_line(text: str) -> str:
    return " ".join(text.split())
