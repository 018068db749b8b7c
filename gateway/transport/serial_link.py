"""Half-duplex request/response over a serial port (pyserial), for BMS protocols.

The link knows nothing of any protocol: a :class:`Framer` tells it what a frame's start looks like and how long
the frame is once its header is in. The link skips garbage before a start marker, reads exactly one frame,
gives up after the request's timeout, and reopens the port after it vanished (USB adapter unplugged) on the
next request, without ever letting an exception other than :class:`~gateway.errors.LinkError` escape.

Every port is opened by :func:`open_locked`: pyserial's ``exclusive=True`` (flock) and the UUCP lock file of
:mod:`gateway.transport.port_lock`, so that a second program on the port is refused with a message naming the
holder; any other failure to open gets its fix as a hint (:mod:`gateway.transport.serial_errors`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol, cast

import serial

from gateway.errors import FrameError, LinkError, LinkTimeout
from gateway.transport.port_lock import PortLock
from gateway.transport.serial_errors import open_error

log = logging.getLogger(__name__)

_HUNT_CHUNK = 512
RECEIVED_SAMPLE_BYTES: Final = 64
"""How many of the bytes an exchange received are kept for diagnostics (:attr:`SerialLink.last_received`)."""

try:
    import termios

    # pyserial's reset_input_buffer() (tcflush) raises a bare termios.error, not an OSError, on a port whose
    # device went away (a hung-up pty, an unplugged USB adapter).
    _PORT_ERRORS: tuple[type[Exception], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # not POSIX
    _PORT_ERRORS = (serial.SerialException, OSError)
_OPEN_ERRORS: tuple[type[Exception], ...] = (*_PORT_ERRORS, ValueError)  # ValueError: a bad setting


class Framer(Protocol):
    """What the link needs to know about a protocol's frames."""

    start: bytes
    """The bytes every frame starts with."""
    header_len: int
    """Bytes needed (from the start marker) before :meth:`frame_length` can answer."""

    def frame_length(self, header: bytes) -> int:
        """Total frame length, bytes; raises :class:`FrameError` when the header is impossible."""
        ...


class SerialPort(Protocol):
    """The part of a pyserial port the link uses."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


SerialFactory = Callable[..., SerialPort]


def open_serial_port(port: str, **settings: Any) -> SerialPort:
    return cast(SerialPort, serial.serial_for_url(port, **settings))


def open_locked(
    port: str, factory: SerialFactory = open_serial_port, *, lock_dir: Path | None = None, **settings: Any
) -> tuple[SerialPort, PortLock]:
    """Open ``port`` for this program alone: its lock file, then the port with ``exclusive=True``.

    The caller closes the port and then releases the lock.

    :raises LinkError: one line naming the port and the cause, with a hint: the holder when the port is in use
        (:class:`~gateway.transport.port_lock.PortInUse`), dialout, a missing adapter, not a serial device.
    """
    lock = PortLock(port, lock_dir)
    lock.acquire()  # before the port is touched: opening a tty may toggle its modem lines under the holder
    try:
        return factory(port, exclusive=True, **settings), lock
    except _OPEN_ERRORS as exc:
        lock.release()
        raise open_error(port, exc, lock_dir=lock_dir) from None


class SerialLink:
    """One serial port used for request/response exchanges.

    I/O deadlines use real monotonic time: they bound how long we wait on a physical wire, whatever clock the
    rest of the gateway runs on.

    :param port: device path or pyserial URL (``/dev/ttyUSB0``, ``loop://``).
    :param baudrate: bits per second; 8N1 framing.
    :param lock_dir: where the port's lock file goes (default: :func:`~gateway.transport.port_lock.lock_directory`).
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        *,
        serial_factory: SerialFactory = open_serial_port,
        lock_dir: Path | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self._factory = serial_factory
        self._lock_dir = lock_dir
        self._serial: SerialPort | None = None
        self._lock: PortLock | None = None
        self._lost_reason: str | None = None
        self.garbage_bytes_skipped = 0
        """Bytes discarded while hunting for a start marker since the link was made (diagnostics)."""
        self.last_received = b""
        """The first bytes (at most :data:`RECEIVED_SAMPLE_BYTES`) the last exchange received, frame or not: what a
        timeout's hint can tell the wrong protocol by."""

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """Open the port if it is not open. :raises LinkError: naming the port and the cause."""
        if self._serial is not None:
            return
        try:
            self._serial, self._lock = open_locked(
                self.port,
                self._factory,
                lock_dir=self._lock_dir,
                baudrate=self.baudrate,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=0.05,
            )
        except LinkError as error:
            raise self._lost(error) from None
        if self._lost_reason is not None:
            log.info("serial: %s reopened", self.port)
            self._lost_reason = None

    def close(self) -> None:
        port, self._serial = self._serial, None
        lock, self._lock = self._lock, None
        if port is not None:
            with contextlib.suppress(*_PORT_ERRORS):
                port.close()
        if lock is not None:
            lock.release()

    def transact(self, request: bytes, framer: Framer, timeout_s: float) -> bytes:
        """Send ``request`` and return exactly one frame received within ``timeout_s`` seconds.

        Stale bytes waiting before the request are discarded, garbage before the start marker is skipped,
        and bytes after the frame are left for the next exchange to discard.

        :raises LinkTimeout: no complete frame in time.
        :raises LinkError: the port cannot be opened, or failed during the exchange (it is closed, and the
            next call reopens it).
        """
        self.open()
        port = self._serial
        assert port is not None
        deadline = time.monotonic() + timeout_s
        self.last_received = b""
        try:
            port.reset_input_buffer()
            port.write(request)
            port.flush()
            return self._read_frame(port, framer, deadline, timeout_s)
        except _PORT_ERRORS as exc:
            self.close()
            raise self._lost(LinkError(f"serial port {self.port} lost: {_reason(exc)}")) from None

    def _read_frame(self, port: SerialPort, framer: Framer, deadline: float, timeout_s: float) -> bytes:
        buffer = bytearray()
        length: int | None = None
        while True:
            if length is None:
                start_at = buffer.find(framer.start)
                if start_at < 0:
                    # Keep a possible partial start marker at the end of the buffer.
                    keep = len(framer.start) - 1
                    self.garbage_bytes_skipped += max(0, len(buffer) - keep)
                    del buffer[: max(0, len(buffer) - keep)]
                elif start_at > 0:
                    self.garbage_bytes_skipped += start_at
                    del buffer[:start_at]
                if buffer.startswith(framer.start) and len(buffer) >= framer.header_len:
                    try:
                        length = framer.frame_length(bytes(buffer[: framer.header_len]))
                    except FrameError:
                        # A start marker inside garbage: skip it and hunt on.
                        self.garbage_bytes_skipped += 1
                        del buffer[:1]
                        continue
            if length is not None and len(buffer) >= length:
                return bytes(buffer[:length])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if length is None:
                    raise LinkTimeout(f"no reply from {self.port} within {timeout_s:g} s")
                raise LinkTimeout(
                    f"incomplete reply from {self.port}: {len(buffer)} of {length} bytes within {timeout_s:g} s"
                )
            port.timeout = min(remaining, 0.05)
            wanted = (length - len(buffer)) if length is not None else _HUNT_CHUNK
            chunk = port.read(max(1, min(wanted, port.in_waiting or 1)))
            buffer += chunk
            if len(self.last_received) < RECEIVED_SAMPLE_BYTES:
                self.last_received = (self.last_received + chunk)[:RECEIVED_SAMPLE_BYTES]

    def _lost(self, error: LinkError) -> LinkError:
        # One line per episode: "lost" is typically followed by "cannot open" until the port is back. INFO, not
        # WARNING: the LinkError goes up to the caller (the runtime warns about it), so one failure is one warning.
        message = str(error)
        if self._lost_reason is None:
            log.info("serial: %s", message)
        elif self._lost_reason != message:
            log.debug("serial: %s", message)
        self._lost_reason = message
        return error


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
