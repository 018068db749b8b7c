"""The Modbus TCP output cannot be starved (security audit M1): a connection cap, an idle timeout, and a
non-loopback bind only with ``allow_remote``.

1100 idle connections once used up the gateway's file descriptors: the status endpoint stopped answering and the
BMS port could not be reopened after a USB glitch. The flood test runs the servers in a child process with a
lowered descriptor limit and waits for conditions (the server closed the surplus connections), never for time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import resource
import selectors
import socket
import struct
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
import yaml

from gateway.cli import main
from gateway.clock import FakeClock
from gateway.config import parse_config
from gateway.rs485.server import build_extra_outputs
from gateway.runtime import FailsafeState
from gateway.transport.serial_server import ModbusAnswer, ModbusRequest, ModbusServer, TcpEndpoint

REPO: Final = Path(__file__).resolve().parent.parent
CAP: Final = 8
"""The default ``extra_outputs[].tcp.max_connections``."""
FAILURE_BOUND_S: Final = 60.0
"""How long a wait without progress may last before the test fails; a passing run waits for its condition only."""


def wait_until(condition: Callable[[], bool], what: str, within_s: float = FAILURE_BOUND_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s:g} s")
        time.sleep(0.01)


def answer(request: ModbusRequest) -> ModbusAnswer:
    return ModbusAnswer(registers=tuple(range(request.count)))


READ_TWO: Final = struct.pack(">HHHBBHH", 7, 0, 6, 1, 3, 0, 2)
"""MBAP transaction 7, unit 1, FC03 from register 0, two registers."""


def read_two(client: socket.socket) -> bytes:
    """Send one read and return the whole reply (the server answers registers 0 and 1)."""
    client.sendall(READ_TWO)
    reply = b""
    while len(reply) < 13:
        chunk = client.recv(64)
        if not chunk:
            raise AssertionError(f"connection closed after {reply!r}")
        reply += chunk
    return reply


REPLY_TWO: Final = struct.pack(">HHHBBBHH", 7, 0, 7, 1, 3, 4, 0, 1)


def closed_by_server(client: socket.socket, within_s: float = FAILURE_BOUND_S) -> bool:
    """Whether the server closes ``client`` (end of file or reset) before it sends anything."""
    client.settimeout(within_s)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=FAILURE_BOUND_S)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextlib.contextmanager
def serving(server: ModbusServer) -> Iterator[ModbusServer]:
    server.start()
    try:
        assert server.wait_serving()
        assert server.bound_port
        yield server
    finally:
        server.stop()


@pytest.fixture
def modbus(clock: FakeClock) -> Iterator[ModbusServer]:
    with serving(ModbusServer(TcpEndpoint("127.0.0.1", 0), frozenset({1}), answer, name="extra-0", clock=clock)) as s:
        yield s


@pytest.fixture
def modbus_on_the_system_clock() -> Iterator[ModbusServer]:
    with serving(ModbusServer(TcpEndpoint("127.0.0.1", 0), frozenset({1}), answer, name="extra-0")) as server:
        yield server


def test_a_client_beyond_the_cap_is_closed_at_once_and_a_burst_is_logged_once(
    modbus_on_the_system_clock: ModbusServer, caplog: pytest.LogCaptureFixture
) -> None:
    modbus = modbus_on_the_system_clock
    assert modbus.bound_port is not None
    caplog.set_level(logging.INFO)
    served = [connect(modbus.bound_port) for _ in range(CAP)]
    refused = [connect(modbus.bound_port) for _ in range(20)]
    try:
        for client in served:
            assert read_two(client) == REPLY_TWO
        for client in refused:
            assert closed_by_server(client), "a connection beyond the cap was kept open"
        for client in served:  # the refusals cost the served clients nothing
            assert read_two(client) == REPLY_TWO
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            f"extra-0: {CAP} Modbus TCP connections open, refusing more (the first from "
            f"127.0.0.1:{refused[0].getsockname()[1]}) until one closes; "
            "hint: raise extra_outputs[].tcp.max_connections if your own clients need more"
        ]
        # One client leaves: the burst ends with its count, and the next client is served.
        served.pop().close()
        wait_until(lambda: "extra-0: room again; 20 Modbus TCP connections refused meanwhile" in caplog.text, "room")
        served.append(connect(modbus.bound_port))
        assert read_two(served[-1]) == REPLY_TWO
    finally:
        for client in served + refused:
            client.close()


def test_a_client_that_sends_nothing_for_the_idle_timeout_is_closed(modbus: ModbusServer, clock: FakeClock) -> None:
    assert modbus.bound_port is not None
    quiet, polling = connect(modbus.bound_port), connect(modbus.bound_port)
    try:
        assert read_two(quiet) == REPLY_TWO and read_two(polling) == REPLY_TWO
        clock.advance(50)
        assert read_two(polling) == REPLY_TWO
        clock.advance(10)  # quiet for 60 s, the default idle timeout; polling for 10 s
        assert closed_by_server(quiet), "an idle client was kept"
        # The sweep that closed the quiet client saw the polling one too, and kept it.
        assert read_two(polling) == REPLY_TWO
    finally:
        quiet.close()
        polling.close()


# --- 1100 idle connections against a lowered descriptor limit ----------------------------------------------------

CHILD_FD_LIMIT: Final = 128
"""The servers' process may hold this many descriptors: far fewer than the 1100 clients."""
FLOOD: Final = 1100
WAVE: Final = 32
"""Connections at most awaiting the server's verdict at once (below asyncio's listen backlog of 100)."""

CHILD: Final = textwrap.dedent(
    f"""
    import json, os, resource, sys
    from gateway.clock import SystemClock
    from gateway.config import StatusConfig
    from gateway.errors import LinkError
    from gateway.telemetry.http_status import LatestSnapshot, StatusServer
    from gateway.transport.serial_link import SerialLink
    from gateway.transport.serial_server import ModbusAnswer, ModbusServer, TcpEndpoint

    leader, follower = os.openpty()  # stands for the BMS adapter: a real tty, opened by the BMS link's own code
    bms = SerialLink(os.ttyname(follower))
    bms.open()  # the gateway polls the BMS ...
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, ({CHILD_FD_LIMIT}, hard))
    modbus = ModbusServer(
        TcpEndpoint("127.0.0.1", 0), frozenset({{1}}), lambda r: ModbusAnswer(registers=(0,) * r.count)
    )
    modbus.start()
    assert modbus.wait_serving()
    status = StatusServer(StatusConfig(port=0, metrics=False), LatestSnapshot(), SystemClock())
    status.start()
    print(json.dumps({{"modbus": modbus.bound_port, "status": status.port}}), flush=True)
    for command in sys.stdin:
        command = command.strip()
        if command == "fds":
            print(len(os.listdir("/proc/self/fd")), flush=True)
        elif command == "reopen":  # ... until a USB glitch closes its port, and it opens it again
            bms.close()
            try:
                bms.open()
            except LinkError as error:
                print(error, flush=True)
            else:
                print("reopened", flush=True)
    """
)


class Child:
    """The servers in their own process, asked questions one line at a time."""

    def __init__(self, stderr_path: Path) -> None:
        self._stderr = stderr_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._stderr_path = stderr_path
        self.ports = json.loads(self._line())

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line()

    def _line(self) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(FAILURE_BOUND_S):
                raise AssertionError(f"the child said nothing; stderr: {self._stderr_path.read_text()}")
        return self.process.stdout.readline().strip()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self._stderr.close()


def _room_for_clients() -> None:
    """This process holds every client socket at once: make room for them under its own soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _connect_without_waiting(port: int) -> socket.socket:
    client = socket.socket()
    client.setblocking(False)
    assert client.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
    return client


def test_1100_idle_connections_leave_the_status_endpoint_and_a_bms_reopen_working(tmp_path: Path) -> None:
    _room_for_clients()
    child = Child(tmp_path / "child-stderr.txt")
    clients: list[socket.socket] = []
    try:
        fds_before = int(child.ask("fds"))
        # 1100 clients that connect and send nothing, held open on this side to the end. At most WAVE of them wait
        # for the server's verdict at a time: the kernel's backlog never overflows, so no SYN is dropped and
        # retried on the kernel's timers; the test waits for the server's closes, never for time.
        still_open: set[socket.socket] = set()
        with selectors.DefaultSelector() as selector:
            deadline = time.monotonic() + FAILURE_BOUND_S
            while len(clients) < FLOOD or len(still_open) > CAP:
                while len(clients) < FLOOD and len(still_open) < CAP + WAVE:
                    client = _connect_without_waiting(child.ports["modbus"])
                    clients.append(client)
                    still_open.add(client)
                    selector.register(client, selectors.EVENT_READ)
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{len(still_open)} of {len(clients)} idle connections still open, expected {CAP}"
                    )
                for key, _ in selector.select(timeout=1.0):
                    client = key.fileobj
                    assert isinstance(client, socket.socket)
                    try:
                        ended = client.recv(1) == b""
                    except ConnectionResetError:
                        ended = True
                    assert ended, "the server sent data to a client that asked nothing"
                    selector.unregister(client)
                    still_open.discard(client)
                    deadline = time.monotonic() + FAILURE_BOUND_S  # progress: a slow machine is not a failure
        assert int(child.ask("fds")) <= fds_before + CAP
        # The status endpoint answers (no snapshot in this process: 503 with its reason) ...
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{child.ports['status']}/status", timeout=FAILURE_BOUND_S)
        assert caught.value.code == 503 and b"no snapshot yet" in caught.value.read()
        # ... and the BMS port can be opened again after a glitch.
        assert child.ask("reopen") == "reopened"
    finally:
        for client in clients:
            client.close()
        child.close()


# --- config ------------------------------------------------------------------------------------------------------


def _config_file(tmp_path: Path, tcp: dict[str, object]) -> Path:
    data = {
        "bms": {"port": "/dev/ttyUSB0"},
        "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "x"}},
        "extra_outputs": [{"profile": "modbus-battery", "tcp": tcp}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


REMOTE_REFUSED: Final = (
    "extra_outputs[0].tcp.host: 0.0.0.0 is not a loopback address and Modbus TCP has no authentication: "
    "set extra_outputs[0].tcp.allow_remote: true to serve beyond this machine"
)


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_non_loopback_modbus_bind_needs_allow_remote(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --duration: a run that wrongly starts ends by itself.
    arguments = [command, "-c", str(_config_file(tmp_path, {"host": "0.0.0.0"}))]
    assert main(arguments + (["--duration", "1"] if command == "run" else [])) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [f"bms-gateway: error: {REMOTE_REFUSED}"]


def test_allow_remote_and_the_limits_reach_the_output() -> None:
    data = {
        "bms": {"port": "/dev/ttyUSB0"},
        "inverter": {"profile": "pylontech-can"},
        "extra_outputs": [
            {
                "profile": "modbus-battery",
                "tcp": {"host": "0.0.0.0", "allow_remote": True, "max_connections": 2, "idle_timeout_s": 30},
            }
        ],
    }
    clock = FakeClock()
    [output] = build_extra_outputs(parse_config(data), lambda: ((), None, FailsafeState.WAITING), clock)
    assert output.endpoint == TcpEndpoint("0.0.0.0", 5020, max_connections=2, idle_timeout_s=30.0)
    assert isinstance(output.server, ModbusServer) and output.server.guard is not None
    assert (output.server.guard.limits.max_connections, output.server.guard.limits.idle_timeout_s) == (2, 30.0)


@pytest.mark.parametrize(
    ("tcp", "message"),
    [
        ({"max_connections": 0}, "extra_outputs[0].tcp.max_connections: expected an integer from 1 to 64, got 0"),
        ({"idle_timeout_s": 0.5}, "extra_outputs[0].tcp.idle_timeout_s: expected a number from 1 to 3600, got 0.5"),
    ],
)
def test_the_limits_are_bounded(
    tcp: dict[str, object], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(_config_file(tmp_path, tcp))]) == 2
    assert capsys.readouterr().err.splitlines() == [f"bms-gateway: error: {message}"]
