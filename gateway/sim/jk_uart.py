"""A JK BMS on a serial line, speaking the real NW wire protocol: ``bms-gateway simulate jk-uart``.

It answers read-all requests with frames from our own encoder (:func:`gateway.bms.jk_nw.encode_reply`), driven
by a :class:`~gateway.sim.scenarios.Scenario`. Either it creates a pseudo-terminal (and the gateway opens the
printed path) or it opens an existing port, such as one end of a :class:`~gateway.sim.nullmodem.NullModem`.
Like a real JK it never talks unasked and answers nothing that is not a valid request.

It accepts the opt-in control writes (:mod:`gateway.bms.jk_nw_control`) in both frame layouts: a password
frame arms it for one write frame of the same layout to the charge (0xAB), discharge (0xAC) or balancer (0x9D)
switch, which then holds over the scenario: switch off → the setting reads 0 and that MOS (or the balancer) is
off. The esphome-jk-bms layout's password frame carries no password and arms it; the other layout's carries
one, and a wrong one disarms it and changes nothing. [unverified] It answers neither frame: whether a real JK
does is unknown. ``checks_password=False`` plays firmware that applies a write whatever the password;
``write_forms`` plays firmware that acts on some layouts only, ``refuses_balancer`` firmware (v11, as
esphome-jk-bms notes) that ignores balancer writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import tty
from collections import deque
from collections.abc import Collection
from dataclasses import replace
from typing import Final

import serial

from gateway.bms import jk_nw
from gateway.bms.control import Switch
from gateway.bms.jk_nw_control import WRITE_FORMS, PasswordRequest, WriteForm, WriteRequest, decode_control_request
from gateway.clock import Clock
from gateway.errors import FrameError, LinkError
from gateway.model import PackReading
from gateway.secret import Secret
from gateway.sim.scenarios import Behaviour, Scenario
from gateway.sim.switches import SwitchOverrides
from gateway.transport.serial_link import SerialPort, open_serial_port

log = logging.getLogger(__name__)

# Includes a false start marker whose length field is impossible, so a receiver can tell it from a frame
# (a plausible one would swallow the real frame that follows).
_NOISE = bytes.fromhex("00 FF 4E 13 57 AA 4E 57 FF FF")

_EXTRAS_PASSWORD = jk_nw.SIMULATOR_EXTRAS["password"]
assert isinstance(_EXTRAS_PASSWORD, Secret)
SIMULATOR_PASSWORD: Final = _EXTRAS_PASSWORD
"""The factory password of a JK BMS (``123456``), which the simulator reports and accepts unless told another."""


class JkUartSimulator:
    """Serve one simulated JK BMS.

    :param scenario: what the pack reports over time.
    :param clock: time source; scenario time is ``clock.monotonic()`` minus the start time.
    :param port: serial port to open; None creates a pseudo-terminal (see :attr:`path`).
    :param baudrate: bits per second on ``port``.
    :param reply_delay_s: wait this long before answering (a slow BMS), s.
    :param password: the settings password it reports (tag 0xB2) and accepts before a write.
    :param checks_password: False: apply a write after any password frame (firmware that does not check).
    :param write_forms: the frame layouts this firmware acts on; frames of another layout are ignored.
    :param refuses_balancer: ignore writes to the balancer switch (0x9D).
    """

    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        *,
        port: str | None = None,
        baudrate: int = 115200,
        reply_delay_s: float = 0.0,
        password: Secret = SIMULATOR_PASSWORD,
        checks_password: bool = True,
        write_forms: Collection[WriteForm] = WRITE_FORMS,
        refuses_balancer: bool = False,
    ) -> None:
        self.scenario = scenario
        self._password = password
        self._extras = {**jk_nw.SIMULATOR_EXTRAS, "password": password}
        self._checks_password = checks_password
        self._write_forms = frozenset(write_forms)
        self._refuses_balancer = refuses_balancer
        self._control_lock = threading.Lock()
        self._switches = SwitchOverrides()
        """Switches written since the start; they hold over the scenario's own values."""
        self._armed: WriteForm | None = None
        """The layout of a password frame accepted that no write has used yet."""
        self.commands_seen: deque[int] = deque(maxlen=4096)  # bounded: `simulate` may run for days
        """The command byte of each valid request received, latest last (0x06 read-all, 0x05, 0x02, ...)."""
        self.writes_applied = 0
        self.writes_rejected = 0
        """Write frames ignored: not after an accepted password frame, or not a switch."""
        self.passwords_rejected = 0
        self._clock = clock
        self._port = port
        self._baudrate = baudrate
        self.reply_delay_s = reply_delay_s
        self._started_at = clock.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        self._serial: SerialPort | None = None
        self.requests_seen = 0
        self.replies_sent = 0
        if port is None:
            self._master_fd, self._slave_fd = os.openpty()
            tty.setraw(self._slave_fd)
            self.path = os.ttyname(self._slave_fd)
        else:
            self.path = port

    # --- pure part -----------------------------------------------------------------------------------------

    def respond(self, request: bytes) -> bytes | None:
        """The bytes to send for one complete request frame, or None for no answer."""
        try:
            envelope = jk_nw.parse_envelope(request)
        except FrameError:
            return None
        if envelope.command in (jk_nw.Command.PASSWORD, jk_nw.Command.WRITE):
            self.commands_seen.append(envelope.command)
            self._control(request)  # checks the frame type of each kind itself
            return None
        if envelope.frame_type != jk_nw.FrameType.REQUEST:
            return None
        self.commands_seen.append(envelope.command)
        reads_all = envelope.command == jk_nw.Command.READ_ALL or (
            envelope.command == jk_nw.Command.READ and envelope.payload[:1] == b"\x00"
        )
        if not reads_all:
            return None
        step = self.scenario.step(self._clock.monotonic() - self._started_at)
        if step.behaviour is Behaviour.SILENT:
            return None
        reply = replace(jk_nw.from_reading(self.reading(step.reading), self._extras), command=envelope.command)
        frame = jk_nw.encode_reply(reply)
        if step.behaviour is Behaviour.BAD_CHECKSUM:
            return frame[:-1] + bytes(((frame[-1] + 1) & 0xFF,))
        if step.behaviour is Behaviour.TRUNCATED:
            return frame[: len(frame) // 2]
        if step.behaviour is Behaviour.GARBAGE_FIRST:
            return _NOISE + frame
        return frame

    def switch_overrides(self) -> dict[Switch, bool]:
        """The switches written so far (a copy)."""
        return self._switches.snapshot()

    def reading(self, scenario_reading: PackReading) -> PackReading:
        """``scenario_reading`` as this BMS reports it, with the switches written so far applied."""
        return self._switches.apply(scenario_reading)

    def _control(self, request: bytes) -> None:
        """Apply a password or write frame; anything wrong changes nothing (and is never answered)."""
        try:
            decoded = decode_control_request(request)
        except FrameError as exc:
            log.info("simulator: malformed control frame ignored (%s)", exc.fault)
            return
        with self._control_lock:
            if isinstance(decoded, PasswordRequest):
                self._armed = None
                if decoded.form not in self._write_forms:
                    log.info("simulator: password frame of the %s layout ignored", decoded.form.value)
                    return
                checked = decoded.password is not None and self._checks_password
                if checked and decoded.password != self._password:
                    self.passwords_rejected += 1
                    log.info("simulator: wrong settings password; the next write is ignored")
                    return
                self._armed = decoded.form
                return
            if not isinstance(decoded, WriteRequest):
                return
            armed, self._armed = self._armed, None  # one write per password frame
            switch = decoded.switch
            refused = switch is Switch.BALANCER and self._refuses_balancer
            if armed is not decoded.form or switch is None or decoded.value not in (0, 1) or refused:
                self.writes_rejected += 1
                log.info("simulator: write to 0x%02X ignored", decoded.register)
                return
            self._switches.set(switch, bool(decoded.value))
            self.writes_applied += 1
            log.info("simulator: %s switch set %s", switch, "on" if decoded.value else "off")

    # --- serving -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the given port now (nothing to do for a pseudo-terminal).

        :meth:`serve` alone would keep retrying a port that does not exist, which suits a cable that
        vanishes for a while but hides a mistyped path; call this first to fail at once instead.

        :raises LinkError: naming the port and the cause.
        """
        if self._master_fd is not None or self._serial is not None:
            return
        try:
            self._serial = open_serial_port(self.path, baudrate=self._baudrate, timeout=0.1)
        except (serial.SerialException, OSError, ValueError) as exc:  # ValueError: a bad setting
            raise LinkError(f"cannot open serial port {self.path}: {_cause(exc)}") from None

    def start(self) -> None:
        """Serve in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self.serve, name="jk-uart-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._close_serial()
        for fd in (self._master_fd, self._slave_fd):
            if fd is not None:
                os.close(fd)
        self._master_fd = self._slave_fd = None

    def serve(self) -> None:
        """Answer requests until :meth:`stop`; survives the port vanishing and reopens it."""
        buffer = bytearray()
        while not self._stop.is_set():
            chunk = self._read(0.1)
            if chunk is None:
                buffer.clear()
                self._stop.wait(0.2)
                continue
            buffer += chunk
            for request in _split_requests(buffer):
                self.requests_seen += 1
                answer = self.respond(request)
                if answer is None:
                    continue
                if self.reply_delay_s > 0:
                    self._stop.wait(self.reply_delay_s)
                if self._write(answer):
                    self.replies_sent += 1

    def _read(self, timeout_s: float) -> bytes | None:
        """Bytes received (possibly none), or None when the port is unusable right now."""
        if self._master_fd is not None:
            ready, _, _ = select.select([self._master_fd], [], [], timeout_s)
            return os.read(self._master_fd, 4096) if ready else b""
        if not self._open_serial():
            return None
        assert self._serial is not None
        try:
            self._serial.timeout = timeout_s
            return bytes(self._serial.read(max(1, self._serial.in_waiting)))
        except (serial.SerialException, OSError) as exc:
            log.info("simulator: port %s lost (%s)", self.path, exc)
            self._close_serial()
            return None

    def _write(self, data: bytes) -> bool:
        try:
            if self._master_fd is not None:
                os.write(self._master_fd, data)
            elif self._serial is not None:
                self._serial.write(data)
            return True
        except (serial.SerialException, OSError):
            self._close_serial()
            return False

    def _open_serial(self) -> bool:
        if self._serial is not None:
            return True
        try:
            self._serial = open_serial_port(self.path, baudrate=self._baudrate, timeout=0.1)
        except (serial.SerialException, OSError):
            return False
        return True

    def _close_serial(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()


def _cause(exc: Exception) -> str:
    """A short cause: pyserial repeats the port in its message, so prefer the plain errno text."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _split_requests(buffer: bytearray) -> list[bytes]:
    """Take every complete request frame out of ``buffer``, dropping bytes that cannot start one."""
    frames: list[bytes] = []
    while True:
        start = buffer.find(jk_nw.START)
        if start < 0:
            del buffer[: max(0, len(buffer) - 1)]
            return frames
        del buffer[:start]
        if len(buffer) < 4:
            return frames
        try:
            length = jk_nw.frame_length(bytes(buffer[:4]))
        except FrameError:
            del buffer[:1]
            continue
        if len(buffer) < length:
            return frames
        frames.append(bytes(buffer[:length]))
        del buffer[:length]
