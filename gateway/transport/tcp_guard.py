"""A connection cap and an idle timeout for an asyncio TCP server that has neither (pymodbus's).

Without them, clients that connect and send nothing hold one file descriptor each for ever: 1100 of them used
up the process's 1024 and the status endpoint stopped answering, and after a USB glitch the BMS port could
not be reopened (security audit M1). :class:`ConnectionGuard` sits between the listening socket and the
server's own protocol factory:

* beyond ``max_connections`` open connections a new one is closed at once, before the server sees it, so its
  descriptor is released at once and the server keeps nothing for it;
* :meth:`ConnectionGuard.close_idle`, called periodically, closes connections that have sent nothing for
  ``idle_timeout_s`` (of the injected clock, so tests move time instead of waiting).

Refusals are logged by a :class:`RefusalLog`: one warning when refusing starts, one line with the count when
there is room again; never one line per connection, so a flood cannot fill the journal either.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from gateway.clock import Clock

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS: Final = 8
"""An EMS or Home Assistant needs one or two; a few more for a monitor and a test client."""
DEFAULT_IDLE_TIMEOUT_S: Final = 60.0
"""A poller asks every few seconds; a client quiet for a minute is gone or is not a poller."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections served at once; one more is closed at once."""
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    """A connection that sends nothing for this long is closed, s."""


class RefusalLog:
    """Logs refused connections once per burst: a warning at the first, the count when there is room again.

    Thread-safe (the status server refuses on its accept thread and makes room on its handler threads).
    """

    def __init__(self, logger: logging.Logger, name: str, what: str, hint: str) -> None:
        """:param what: what is refused, e.g. ``Modbus TCP connections``.
        :param hint: what the user can do about it, ending the warning.
        """
        self._log = logger
        self.name = name
        self._what, self._hint = what, hint
        self._lock = threading.Lock()
        self._in_burst = 0
        self.total = 0
        """Refusals so far."""

    def refused(self, cap: int, peer: object) -> None:
        with self._lock:
            self.total += 1
            self._in_burst += 1
            first = self._in_burst == 1
        if first:
            self._log.warning(
                "%s: %d %s open, refusing more (the first from %s) until one closes; hint: %s",
                self.name,
                cap,
                self._what,
                _peer_text(peer),
                self._hint,
            )

    def room(self) -> None:
        """A slot is free again: end the burst, with one line saying how many were refused in it."""
        with self._lock:
            count, self._in_burst = self._in_burst, 0
        if count:
            self._log.info("%s: room again; %d %s refused meanwhile", self.name, count, self._what)


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "an unknown peer"


ProtocolFactory = Callable[[], asyncio.BaseProtocol]
"""Makes the server's protocol; it must take stream data (pymodbus's derives from BaseProtocol, not Protocol)."""


class ConnectionGuard:
    """Caps the open connections of one server and closes idle ones; see the module docs.

    Everything but the counters runs on the server's event loop.
    """

    def __init__(self, limits: ConnectionLimits, clock: Clock, refusals: RefusalLog) -> None:
        self.limits = limits
        self._clock = clock
        self._refusals = refusals
        self._open: set[GuardedConnection] = set()
        self.closed_idle = 0
        """Connections closed for being idle, so far."""

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def refused(self) -> int:
        """Connections refused so far."""
        return self._refusals.total

    def connection(self, factory: ProtocolFactory) -> GuardedConnection:
        """The protocol for one accepted connection: ``factory``'s protocol is made only if it is admitted."""
        return GuardedConnection(self, factory)

    def close_idle(self) -> int:
        """Close every connection that has sent nothing for ``idle_timeout_s``; how many were closed."""
        now_s = self._clock.monotonic()
        idle = [c for c in self._open if now_s - c.last_data_s >= self.limits.idle_timeout_s]
        for connection in idle:
            log.debug(
                "%s: closing the connection from %s: nothing received for %g s",
                self._refusals.name,
                _peer_text(connection.peer),
                self.limits.idle_timeout_s,
            )
            connection.close()
        self.closed_idle += len(idle)
        return len(idle)

    def _admit(self, connection: GuardedConnection, transport: asyncio.BaseTransport) -> bool:
        if len(self._open) >= self.limits.max_connections:
            self._refusals.refused(self.limits.max_connections, transport.get_extra_info("peername"))
            return False
        self._open.add(connection)
        return True

    def _gone(self, connection: GuardedConnection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            self._refusals.room()

    def _now_s(self) -> float:
        return self._clock.monotonic()


class GuardedConnection(asyncio.Protocol):
    """Stands in front of the server's protocol for one connection: admits or refuses it, notes its activity."""

    def __init__(self, guard: ConnectionGuard, factory: ProtocolFactory) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self.peer: object = None
        self.last_data_s = guard._now_s()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self.peer = transport.get_extra_info("peername")
        if not self._guard._admit(self, transport):
            transport.close()  # nothing to send: the descriptor is released now, not when the client gives up
            return
        self.last_data_s = self._guard._now_s()
        # The server's protocol exists only for admitted connections: it never learns of a refused one.
        self._inner = cast(asyncio.Protocol, self._factory())
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.last_data_s = self._guard._now_s()
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard._gone(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
