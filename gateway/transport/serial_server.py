"""Serving requests on a serial port (the inverter is the master): a line server and a Modbus server.

:class:`SerialServer` reads requests from an RS485 adapter (automatic direction control: no RTS handling),
cuts them into frames with a :class:`DelimitedFramer`, hands each complete frame to a handler and writes the
reply at once. Garbage between frames is skipped, a frame that stops arriving is dropped after
``frame_timeout_s``, and a port that vanishes (USB adapter unplugged) is reopened every ``reopen_s`` until it
is back. A handler that raises does not stop the server.

:class:`ModbusServer` serves Modbus RTU on a serial port or Modbus TCP (127.0.0.1 by default) through
pymodbus; every request for a served unit goes to one handler, which answers with registers, an exception
code or silence. Requests for other units get no answer, as on a shared bus. Over TCP a
:class:`~gateway.transport.tcp_guard.ConnectionGuard` caps the open connections and closes idle ones
(pymodbus has neither).

Both run on their own thread; neither lets an exception escape it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.clock import Clock, SystemClock
from gateway.errors import GatewayError, LinkError, error_line
from gateway.transport.port_lock import PortInUse, PortLock
from gateway.transport.serial_link import _PORT_ERRORS, SerialFactory, SerialPort, open_locked, open_serial_port
from gateway.transport.tcp_guard import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    ConnectionGuard,
    ConnectionLimits,
    GuardedConnection,
    RefusalLog,
)

log = logging.getLogger(__name__)

_READ_TIMEOUT_S: Final = 0.02
"""Longest one read waits, s: bounds how late stop() and a frame timeout are noticed."""
_READ_CHUNK: Final = 4096


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _one_line(problem: str | GatewayError) -> str:
    return error_line(problem) if isinstance(problem, GatewayError) else problem


class DelimitedFramer:
    """Cuts a byte stream into frames that run from ``start`` to ``end`` (Pylontech: ``~`` ... CR).

    Bytes outside frames are garbage; a new ``start`` inside a frame drops the bytes before it (a truncated
    frame followed by a good one); a frame longer than ``max_bytes`` is dropped.
    """

    def __init__(self, start: bytes, end: bytes, max_bytes: int) -> None:
        if len(start) != 1 or len(end) != 1:
            raise ValueError("start and end markers are one byte each")
        self.start, self.end, self.max_bytes = start, end, max_bytes
        self._buffer = bytearray()
        self.garbage_bytes = 0
        """Bytes dropped so far (diagnostics)."""

    @property
    def pending(self) -> bool:
        """A frame has started but not ended."""
        return bool(self._buffer)

    def drop_partial(self) -> None:
        """Forget a frame that stopped arriving."""
        self.garbage_bytes += len(self._buffer)
        self._buffer.clear()

    def feed(self, data: bytes) -> list[bytes]:
        """The frames ``data`` completes, in order."""
        frames: list[bytes] = []
        for byte in data:
            char = bytes((byte,))
            if char == self.start:
                self.garbage_bytes += len(self._buffer)
                self._buffer[:] = char
            elif not self._buffer:
                self.garbage_bytes += 1
            else:
                self._buffer += char
                if char == self.end:
                    frames.append(bytes(self._buffer))
                    self._buffer.clear()
                elif len(self._buffer) > self.max_bytes:
                    self.drop_partial()
        return frames


Handler = Callable[[bytes], bytes | None]
"""One complete request in, the reply (or None: no reply) out."""


class SerialServer:
    """Answers requests arriving on ``port``; see the module docs.

    :param port: device path or pyserial URL.
    :param baudrate: bit/s, 8N1.
    :param framer: cuts requests out of the byte stream.
    :param handler: the reply to one request, or None.
    :param frame_timeout_s: a frame with no new byte for this long is dropped, s.
    :param reopen_s: time between attempts to reopen a lost port, s.
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        framer: DelimitedFramer,
        handler: Handler,
        *,
        name: str = "rs485",
        frame_timeout_s: float = 0.5,
        reopen_s: float = 1.0,
        serial_factory: SerialFactory = open_serial_port,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.framer = framer
        self._handler = handler
        self.name = name
        self.frame_timeout_s = frame_timeout_s
        self.reopen_s = reopen_s
        self._factory = serial_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.serving = threading.Event()
        """Set while the port is open."""
        self.requests = 0
        self.replies = 0
        self.handler_errors = 0
        self._lost: str | None = None
        self._lock: PortLock | None = None

    def start(self) -> None:
        """Serve on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"{self.name}-server", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_serving(self, timeout_s: float = 5.0) -> bool:
        return self.serving.wait(timeout_s)

    def run(self) -> None:
        """Serve until :meth:`stop` (blocking)."""
        while not self._stop.is_set():
            port = self._open()
            if port is None:
                self._stop.wait(self.reopen_s)
                continue
            try:
                self._serve(port)
            except _PORT_ERRORS as exc:
                self._episode(f"serial port {self.port} lost: {_reason(exc)}")
            finally:
                self.serving.clear()
                self._close(port)
            self.framer.drop_partial()
            self._stop.wait(self.reopen_s)

    def _open(self) -> SerialPort | None:
        try:
            # Locked (flock and lock file): a second program answering on the same bus would garble both replies.
            port, self._lock = open_locked(
                self.port,
                self._factory,
                baudrate=self.baudrate,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=_READ_TIMEOUT_S,
            )
        except LinkError as error:
            self._episode(error)
            return None
        try:
            port.reset_input_buffer()  # what arrived while nobody listened is stale
        except _PORT_ERRORS as exc:
            self._close(port)
            self._episode(f"cannot open serial port {self.port}: {_reason(exc)}")
            return None
        if self._lost is not None:
            log.info("%s: serial port %s open again", self.name, self.port)
            self._lost = None
        self.serving.set()
        return port

    def _close(self, port: SerialPort) -> None:
        with contextlib.suppress(*_PORT_ERRORS):
            port.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _episode(self, problem: str | GatewayError) -> None:
        # One warning per outage, not one per retry; with the fix, when there is one.
        message = _one_line(problem)
        if self._lost is None:
            log.warning("%s: %s; retrying every %g s", self.name, message, self.reopen_s)
        self._lost = message

    def _serve(self, port: SerialPort) -> None:
        last_byte_s = time.monotonic()
        while not self._stop.is_set():
            chunk = port.read(max(1, min(port.in_waiting, _READ_CHUNK)))
            now = time.monotonic()
            if not chunk:
                if self.framer.pending and now - last_byte_s > self.frame_timeout_s:
                    self.framer.drop_partial()
                continue
            last_byte_s = now
            for request in self.framer.feed(chunk):
                self.requests += 1
                reply = self._answer(request)
                if reply:
                    port.write(reply)
                    port.flush()
                    self.replies += 1

    def _answer(self, request: bytes) -> bytes | None:
        try:
            return self._handler(request)
        except Exception as exc:  # a bug must not take the inverter link down; it is logged and counted
            self.handler_errors += 1
            log.error("%s: request not answered: %s: %s", self.name, type(exc).__name__, _reason(exc))
            log.debug("%s: handler failure", self.name, exc_info=True)
            return None


# --- Modbus ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModbusRequest:
    unit: int
    function_code: int
    address: int
    count: int
    values: tuple[int, ...] | None
    """Written values; None for a read."""


@dataclass(frozen=True, slots=True)
class ModbusAnswer:
    """The handler's decision: the registers read, an exception code, or no answer at all."""

    registers: tuple[int, ...] = ()
    exception: int | None = None
    silent: bool = False


SILENT: Final = ModbusAnswer(silent=True)
ModbusHandler = Callable[[ModbusRequest], ModbusAnswer]


@dataclass(frozen=True, slots=True)
class SerialEndpoint:
    port: str
    baudrate: int

    def describe(self) -> str:
        return f"{self.port} at {self.baudrate} bit/s (Modbus RTU)"


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    host: str
    port: int
    """0 picks a free port (see :attr:`ModbusServer.bound_port`)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections served at once; one more is closed at once."""
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    """A client that sends nothing for this long is disconnected, s."""
    setting: str = field(default="extra_outputs[].tcp", compare=False)
    """The config section this endpoint comes from, named when a connection is refused."""

    def describe(self) -> str:
        return f"{self.host}:{self.port} (Modbus TCP)"


class _GuardedTcpServer(ModbusTcpServer):
    """pymodbus's TCP server with every accepted connection passed through a :class:`ConnectionGuard`."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard

    # pymodbus hands this method to asyncio's create_server as the protocol factory (transport.py,
    # init_setup_connect_listen, in 3.16); the guard's protocol makes pymodbus's own only for an admitted client.
    def handle_new_connection(self) -> GuardedConnection:  # type: ignore[override]
        return self._guard.connection(super().handle_new_connection)


_SUPERVISE_S: Final = 0.05
_ALL_REGISTERS: Final = 0x10000
"""Every address reaches the handler, so that it (not pymodbus) decides what a request gets."""


class ModbusServer:
    """A pymodbus server on its own thread and event loop; see the module docs.

    :param units: unit addresses answered; any other unit gets no answer.
    """

    def __init__(
        self,
        endpoint: SerialEndpoint | TcpEndpoint,
        units: frozenset[int],
        handler: ModbusHandler,
        *,
        name: str = "modbus",
        reopen_s: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        """:param clock: measures the TCP idle timeout (the system clock by default)."""
        self.endpoint = endpoint
        self.units = units
        self._handler = handler
        self.name = name
        self.reopen_s = reopen_s
        self.guard: ConnectionGuard | None = None
        """The TCP connection cap and idle timeout (None on a serial port)."""
        if isinstance(endpoint, TcpEndpoint):
            limits = ConnectionLimits(endpoint.max_connections, endpoint.idle_timeout_s)
            hint = f"raise {endpoint.setting}.max_connections if your own clients need more"
            refusals = RefusalLog(log, name, "Modbus TCP connections", hint)
            self.guard = ConnectionGuard(limits, clock or SystemClock(), refusals)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drop_next = False
        self.serving = threading.Event()
        self.requests = 0
        self.bound_port: int | None = None
        """The TCP port listened on (useful with port 0)."""
        self._lost: str | None = None
        pymodbus_log = logging.getLogger("pymodbus")
        if pymodbus_log.level == logging.NOTSET:
            # pymodbus logs every stray byte as an ERROR; what matters is logged here, once.
            pymodbus_log.setLevel(logging.CRITICAL)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-server", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_serving(self, timeout_s: float = 5.0) -> bool:
        return self.serving.wait(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # never a traceback from a server thread; the output just stops
            log.error("%s: server stopped: %s: %s", self.name, type(exc).__name__, _reason(exc))

    def _server(self, devices: list[SimDevice]) -> ModbusSerialServer | ModbusTcpServer:
        endpoint = self.endpoint
        if isinstance(endpoint, SerialEndpoint):
            return ModbusSerialServer(
                devices,
                framer=FramerType.RTU,
                port=endpoint.port,
                baudrate=endpoint.baudrate,
                trace_packet=self._on_packet,
                reconnect_delay=0,
            )
        assert self.guard is not None  # every TCP endpoint has one
        return _GuardedTcpServer(
            devices,
            framer=FramerType.SOCKET,
            address=(endpoint.host, endpoint.port),
            trace_packet=self._on_packet,
            guard=self.guard,
        )

    async def _serve(self) -> None:
        devices = [
            SimDevice(
                unit,
                simdata=[SimData(0, count=_ALL_REGISTERS, datatype=DataType.REGISTERS)],
                action=functools.partial(self._action, unit),
            )
            for unit in sorted(self.units)
        ]
        # Unit 0 stands for every other unit; its answers are dropped in _on_packet.
        devices.append(SimDevice(0, simdata=[SimData(0, datatype=DataType.INVALID)]))
        while not self._stop.is_set():
            server = self._server(devices)
            lock, refused = self._lock_port()
            listened = refused is None and await server.listen()
            if listened:
                self._listening(server)
                while not self._stop.is_set() and (isinstance(self.endpoint, TcpEndpoint) or server.active_connections):
                    await asyncio.sleep(_SUPERVISE_S)
                    if self.guard is not None:
                        self.guard.close_idle()
                self.serving.clear()
                if not self._stop.is_set():
                    self._episode(f"{self.endpoint.describe()} lost")
            with contextlib.suppress(Exception):
                await server.shutdown()  # type: ignore[no-untyped-call]
            if lock is not None:
                lock.release()
            if refused is not None:
                self._episode(refused)
            elif not listened:
                self._episode(await asyncio.to_thread(self._why_not_listening))
            if not self._stop.is_set():
                await asyncio.to_thread(self._stop.wait, self.reopen_s)

    def _listening(self, server: ModbusSerialServer | ModbusTcpServer) -> None:
        if isinstance(self.endpoint, TcpEndpoint):
            sockets = getattr(server.transport, "sockets", None) or ()
            self.bound_port = sockets[0].getsockname()[1] if sockets else self.endpoint.port
        if self._lost is not None:
            log.info("%s: serving again on %s", self.name, self.endpoint.describe())
            self._lost = None
        self.serving.set()

    def _lock_port(self) -> tuple[PortLock | None, PortInUse | None]:
        """A serial endpoint's lock file (pymodbus opens the port itself, with exclusive=True): held while serving,
        or who holds the port."""
        if not isinstance(self.endpoint, SerialEndpoint):
            return None, None
        lock = PortLock(self.endpoint.port)
        try:
            lock.acquire()
        except PortInUse as error:
            return None, error
        return lock, None

    def _why_not_listening(self) -> str | GatewayError:
        """pymodbus's listen() says only False. On a serial port, opening it here (once an outage) says why, with
        the fix: in use, permission, missing, not a serial device."""
        endpoint = self.endpoint
        if isinstance(endpoint, SerialEndpoint) and self._lost is None:
            try:
                port, lock = open_locked(endpoint.port, baudrate=endpoint.baudrate)
            except LinkError as error:
                return error
            with contextlib.suppress(*_PORT_ERRORS):
                port.close()
            lock.release()
        return f"cannot listen on {endpoint.describe()}"

    def _episode(self, problem: str | GatewayError) -> None:
        message = _one_line(problem)
        if self._lost is None:
            log.warning("%s: %s; retrying every %g s", self.name, message, self.reopen_s)
        self._lost = message

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every request to ``unit``: the handler decides."""
        self.requests += 1
        request = ModbusRequest(
            unit, function_code, address, count, None if values is None else tuple(map(int, values))
        )
        try:
            answer = self._handler(request)
        except Exception as exc:  # answered as a device failure; the server goes on
            log.error("%s: request failed: %s: %s", self.name, type(exc).__name__, _reason(exc))
            return ExcCodes.DEVICE_FAILURE
        if answer.silent:
            self._drop_next = True
            return None
        if answer.exception is not None:
            return ExcCodes(answer.exception)
        if values is None:
            offset = address - start_address
            registers[offset : offset + count] = list(answer.registers[:count])
        return None

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's hook on every packet: drop replies that must not go out."""
        if not sending or not data:
            return data
        unit_at = 0 if isinstance(self.endpoint, SerialEndpoint) else 6  # RTU: first byte; TCP: after the MBAP
        unit = data[unit_at] if len(data) > unit_at else -1
        if self._drop_next or unit not in self.units:
            self._drop_next = False
            return b""
        return data
