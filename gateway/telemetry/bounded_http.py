"""An HTTP server whose clients cannot hold its threads (security audit L2).

:class:`http.server.ThreadingHTTPServer` starts one thread per connection without a cap, and its socket timeout
applies to each ``recv``: a client sending a byte every 2 s held a thread for ever (761 of them in the audit).
And every client that left mid-reply printed a full traceback to stderr, past the logging. Here:

* at most ``max_handlers`` connections are served at once; one more is answered 503 on the accepting thread and
  closed, without a thread of its own (refusals are logged once per burst);
* each connection has a deadline for the whole exchange (``deadline_s`` of the injected clock, from accept):
  the server's loop shuts the socket of a connection past it, which ends its handler whatever it waits on;
* a handler that fails is one log line: debug for a client that went away, error for anything else.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from gateway.clock import Clock
from gateway.transport.tcp_guard import RefusalLog

log = logging.getLogger(__name__)

MAX_HANDLERS: Final = 16
"""Requests served at once: ``bms-gateway status``, a Prometheus scraper and a few curious users."""
REQUEST_DEADLINE_S: Final = 10.0
"""The longest one connection may take, from accept to the end of the reply, s (a request takes milliseconds)."""
MAX_EVENT_STREAMS: Final = 4
"""Server-sent-event streams at once (the local page's ``/events``). A stream keeps its connection for as long as
its client listens, so it must neither take one of the MAX_HANDLERS slots (16 idle pages would lock out
``/status``) nor be cut by the request deadline: it gets a semaphore of its own, this small
(:meth:`BoundedHTTPServer.become_stream`), and a deadline per event written instead (the socket's timeout)."""
HANDLER_THREAD: Final = "http-handler :{port}"
"""The name of every handler thread, by the port it serves (tests count them)."""

_BUSY_TEXT: Final = b"busy: too many requests at once, retry\n"
_BUSY_REPLY: Final = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` with a handler cap, a whole-request deadline and quiet errors.

    :param name: names the server in log lines.
    """

    daemon_threads = True
    request_queue_size = 64
    """The listen backlog (socketserver's 5 drops the SYNs of a burst, and each dropped one waits 1 s or more)."""

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
        *,
        clock: Clock,
        name: str = "status",
        max_handlers: int = MAX_HANDLERS,
        deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        super().__init__(address, handler_class)
        self._clock = clock
        self.name = name
        self.max_handlers = max_handlers
        self.deadline_s = deadline_s
        self._slots = threading.BoundedSemaphore(max_handlers)
        self._stream_slots = threading.BoundedSemaphore(MAX_EVENT_STREAMS)
        self._streams: set[socket.socket] = set()
        """Connections moved to a stream slot (:meth:`become_stream`); guarded by _lock."""
        self._lock = threading.Lock()
        self._started_s: dict[socket.socket, float] = {}
        """Each connection being served and when it was accepted (by the clock); guarded by _lock."""
        port = self.server_address[1]
        hint = f"a client holds its connections open; see which: ss -tn state established '( sport = :{port} )'"
        self._refusals = RefusalLog(log, name, "HTTP connections", hint)
        self.expired = 0
        """Connections shut for passing the deadline, so far."""
        self.failed = 0
        """Handlers that ended in an exception (a client that left mid-reply, mostly), so far."""

    @property
    def refused(self) -> int:
        """Connections answered 503 for lack of a free handler, so far."""
        return self._refusals.total

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refusals.refused(self.max_handlers, client_address)
            self._refuse(request)
            return
        with self._lock:
            self._started_s[request] = self._clock.monotonic()
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=HANDLER_THREAD.format(port=self.server_address[1]),
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the connection is closed, the slot given back
            self._slots.release()
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                streamed = request in self._streams
                self._streams.discard(request)
            if streamed:
                self._stream_slots.release()
            else:
                self._slots.release()
                self._refusals.room()

    def become_stream(self, request: socket.socket) -> bool:
        """Move a connection being served from the handler cap to the stream cap (MAX_EVENT_STREAMS), free of the
        whole-request deadline; False when every stream slot is taken (the caller answers 503)."""
        if not self._stream_slots.acquire(blocking=False):
            return False
        with self._lock:
            self._started_s.pop(request, None)
            self._streams.add(request)
        self._slots.release()
        self._refusals.room()
        return True

    def shutdown_request(self, request: Any) -> None:
        # Forgotten before it is closed: the deadline sweep never touches a closed socket (whose descriptor
        # number may already belong to another file).
        with self._lock:
            self._started_s.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Called by serve_forever at least every poll interval: shut connections past the deadline."""
        super().service_actions()
        now_s = self._clock.monotonic()
        with self._lock:
            late = [sock for sock, started_s in self._started_s.items() if now_s - started_s >= self.deadline_s]
            for sock in late:
                del self._started_s[sock]
                # Ends the handler's recv or send at once; the handler thread then closes the socket itself.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if late:
            self.expired += len(late)
            log.debug("%s: %d connection(s) past the %g s deadline shut", self.name, len(late), self.deadline_s)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, never the traceback socketserver prints to stderr."""
        self.failed += 1
        error = sys.exc_info()[1]
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        if isinstance(error, OSError):  # the client left, or its connection was shut at the deadline
            log.debug("%s: %s: connection ended: %s", self.name, peer, error)
        else:
            log.error("%s: request from %s failed: %s: %s", self.name, peer, type(error).__name__, error)
            log.debug("%s: handler failure", self.name, exc_info=error)

    def _refuse(self, request: socket.socket) -> None:
        """503 without a thread: never block the accepting thread on this client."""
        with contextlib.suppress(OSError):
            request.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                request.recv(65536)  # what the client already sent, so that closing does not reset the reply
            request.send(_BUSY_REPLY)
        self.shutdown_request(request)
