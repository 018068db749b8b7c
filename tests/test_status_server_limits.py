"""No client can hold the status endpoint's threads (security audit L2): a cap on handlers, a deadline for the
whole request, and one log line (never a traceback) for a client that leaves mid-reply.

The audit's slowloris sent a byte every 2 s, under the 5 s per-receive timeout, and held 761 threads. Here the
per-receive timeout is raised out of reach instead (a trickle that always comes in time, without a test that
trickles on the real clock), handler threads are counted by name, time past the deadline is the fake clock's,
and each wait is for a condition (a bound only turns a hang into a failure).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Final

import pytest
from telemetry_fixtures import SNAPSHOT_CLOCK_S, snapshot

from gateway.clock import FakeClock
from gateway.config import StatusConfig
from gateway.telemetry import http_status
from gateway.telemetry.http_status import LatestSnapshot, StatusServer

CAP: Final = 16
DEADLINE_S: Final = 10.0
SLOWLORIS: Final = 40
FAILURE_BOUND_S: Final = 30.0
"""How long a wait may last before the test fails; a passing run waits for its condition only."""


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + FAILURE_BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {FAILURE_BOUND_S:g} s")
        time.sleep(0.01)


def handler_threads(port: int) -> int:
    """Threads serving one connection each on ``port``: named ``http-handler :PORT`` here; socketserver's own are
    named after their target, ``Thread-N (process_request_thread)`` (so that the count means the same on the old
    code, where it cannot tell servers apart)."""
    return sum(
        t.name == f"http-handler :{port}" or t.name.endswith("(process_request_thread)") for t in threading.enumerate()
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_s=SNAPSHOT_CLOCK_S + 1)


@pytest.fixture(autouse=True)
def slowloris_beats_the_receive_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_status, "REQUEST_TIMEOUT_S", 3600.0)


@pytest.fixture
def server(clock: FakeClock) -> Iterator[StatusServer]:
    server = StatusServer(StatusConfig(port=0, metrics=False), LatestSnapshot(), clock)
    server.start()
    yield server
    server.stop()


def slow_client(port: int) -> socket.socket:
    """A client that starts a request and never finishes it (one header left open)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=FAILURE_BOUND_S)
    client.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return client


def answered(client: socket.socket) -> bytes | None:
    """What the server sent before closing ``client``; None while it sends nothing and keeps it open."""
    if not select.select([client], [], [], 0)[0]:
        return None
    reply = b""
    while True:
        try:
            chunk = client.recv(4096)
        except ConnectionResetError:
            return reply
        if not chunk:
            return reply
        reply += chunk


def get_root(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=FAILURE_BOUND_S) as response:
        return int(response.status)


def test_a_slowloris_holds_no_more_handlers_than_the_cap(
    server: StatusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = handler_threads(server.port)
    clients = [slow_client(server.port) for _ in range(SLOWLORIS)]
    replies: dict[socket.socket, bytes] = {}

    def settled() -> bool:
        """Every client either holds a handler thread or has been answered."""
        for client in clients:
            if client not in replies and (reply := answered(client)) is not None:
                replies[client] = reply
        return handler_threads(server.port) - before + len(replies) >= SLOWLORIS

    try:
        wait_until(settled, "every slow client holds a handler or is answered")
        assert handler_threads(server.port) - before <= CAP, "more handler threads than the cap"
        assert len(replies) == SLOWLORIS - CAP
        assert all(reply.startswith(b"HTTP/1.0 503 ") for reply in replies.values()), replies
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith(f"status: {CAP} HTTP connections open, refusing more")
    finally:
        for client in clients:
            client.close()
    # The held handlers end when their clients go, and the endpoint serves again.
    wait_until(lambda: handler_threads(server.port) == before, "the handlers end")
    assert get_root(server.port) == 200


def test_a_slowloris_is_cut_at_the_whole_request_deadline(server: StatusServer, clock: FakeClock) -> None:
    before = handler_threads(server.port)
    client = slow_client(server.port)
    try:
        wait_until(lambda: handler_threads(server.port) == before + 1, "the slow client is being served")
        clock.advance(DEADLINE_S - 0.5)
        # Two requests, one after the other: the server's loop has checked the deadlines after the first was
        # accepted, before it accepted the second. At 9.5 s the slow client is not cut.
        assert get_root(server.port) == 200 and get_root(server.port) == 200
        assert answered(client) is None
        clock.advance(0.5)
        wait_until(lambda: answered(client) is not None, "the slow client is cut")
        wait_until(lambda: handler_threads(server.port) == before, "its handler ends")
    finally:
        client.close()
    assert get_root(server.port) == 200


def test_a_client_that_leaves_mid_reply_is_one_debug_line_not_a_traceback(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    inside = threading.Event()
    client_gone = threading.Event()

    def health_after_the_client_left() -> None:
        # Called while the reply is being built: the client leaves before it is written.
        inside.set()
        client_gone.wait(FAILURE_BOUND_S)

    latest = LatestSnapshot()
    latest.offer(snapshot())
    server = StatusServer(StatusConfig(port=0, metrics=False), latest, clock, mqtt_health=health_after_the_client_left)
    server.start()
    caplog.set_level(logging.DEBUG, logger="gateway.telemetry.bounded_http")
    before = handler_threads(server.port)
    try:
        for _ in range(5):
            inside.clear()
            client_gone.clear()
            client = socket.create_connection(("127.0.0.1", server.port), timeout=FAILURE_BOUND_S)
            client.sendall(b"GET /status HTTP/1.0\r\n\r\n")
            wait_until(inside.is_set, "the request is being answered")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # a reset: every write to it fails
            client_gone.set()
            wait_until(lambda: handler_threads(server.port) == before, "the handler ends")
    finally:
        server.stop()
    assert "Traceback" not in capfd.readouterr().err
    ended = [r.getMessage() for r in caplog.records if "connection ended" in r.getMessage()]
    assert ended and all(r.levelno == logging.DEBUG for r in caplog.records if "connection ended" in r.getMessage())
    assert all(message.count("\n") == 0 for message in ended)
