"""Driver ``jk-modbus``: JK-PB inverter BMSs on one RS485 bus, polled in turn by Modbus RTU unit address.

Each pack is read with FC03 (pymodbus client over pyserial) in chunks of at most 64 words
(:data:`~gateway.bms.jk_modbus.POLL_PLAN`). Firmware that answers FC03 poorly is read with the trigger frames
instead (an FC16 write of 0 to 0x1620 / 0x161E / 0x161C, answered by a 300-byte frame): a pack whose reads
fail with one method is tried with the other in the same poll, and keeps the method that worked. Those three
writes are the only ones polling can send: :class:`RtuBus` refuses every other request before it reaches
the wire (:func:`~gateway.bms.jk_modbus.is_permitted_request`). The opt-in switch writes of
:mod:`gateway.bms.jk_modbus_control` take a separate path, :meth:`RtuBus.write_switch`, with a guard of its
own that approves those three registers and nothing else.

Live data is read every poll; settings when older than ``settings_max_age_s``; device info once per
pack while it answers. A pack that failed is offline: it gets one quick probe per poll (alternating the
two methods) instead of retries, so a missing pack costs one timeout per poll, and it rejoins by itself.

**Partial results.** :meth:`JkModbusDriver.read` returns the readings of the packs that answered, in address
order; each pack that did not is missing from the tuple and its error is in :attr:`JkModbusDriver.pack_errors`
(by pack id, for the last poll). Only when no pack answered does ``read`` raise, as every driver does.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeVar, cast

import serial
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from gateway.bms import jk_modbus, jk_modbus_switch
from gateway.bms.jk_modbus_frames import Read
from gateway.bms.jk_modbus_image import BlockImage
from gateway.bms.jk_modbus_model import POLL_PLAN
from gateway.bms.jk_modbus_switch import SwitchWrite
from gateway.bms.jk_modbus_tables import INFO, LIVE, SETTINGS, Block
from gateway.bms.reply_ring import ReplyRing, pb_reply
from gateway.bms.wiring_hints import JK_MODBUS, looks_like, no_reply_hint
from gateway.clock import Clock
from gateway.errors import FrameError, GatewayError, LinkError, LinkTimeout
from gateway.model import DeviceInfo, PackReading, ProtectionSettings
from gateway.secret import Secret
from gateway.transport.port_lock import PortLock
from gateway.transport.serial_link import (
    RECEIVED_SAMPLE_BYTES,
    SerialFactory,
    SerialPort,
    open_locked,
    open_serial_port,
)

log = logging.getLogger(__name__)

TRIGGER_GAP_S: Final = 0.1
"""Quiet time after a trigger exchange before the next command: the BMS needs about 100–120 ms, s."""
BACKOFF_S: Final = 0.05
"""Wait before the first retry of a pack, s; it doubles with each further retry up to :data:`BACKOFF_MAX_S`."""
BACKOFF_MAX_S: Final = 0.4
FC03_RECHECK_POLLS: Final = 60
"""A pack read with trigger frames is tried with FC03 again after this many polls: FC03 costs less bus time."""
SETTINGS_MAX_AGE_S: Final = 60.0
"""Settings are re-read once they are this old, s: they change only when someone edits them."""
_READ_SLICE_S: Final = 0.05

try:
    import termios

    # pyserial raises a bare termios.error (not an OSError) on some calls to a port whose device went away.
    _PORT_ERRORS: tuple[type[Exception], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # not POSIX
    _PORT_ERRORS = (serial.SerialException, OSError)
_T = TypeVar("_T")


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class RtuBus:
    """One RS485 port: FC03 through a pymodbus RTU client, the trigger exchange on the same pyserial port.

    The one place that sends bytes to the BMSs, and it sends nothing :func:`jk_modbus.is_permitted_request`
    refuses. Wire waits (retry backoff, the gap after a trigger) use real time: they pace a physical bus.

    :param timeout_s: how long to wait for one reply, s.
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        timeout_s: float,
        *,
        serial_factory: SerialFactory = open_serial_port,
        wire_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self._factory = serial_factory
        self._sleep = wire_sleep
        self._serial: SerialPort | None = None
        self._lock: PortLock | None = None
        self._lost_reason: str | None = None
        self._quiet_until = 0.0
        self._received = 0
        self.last_received = b""
        """The first bytes the last exchange received (at most RECEIVED_SAMPLE_BYTES): a timeout's hint names the
        driver they look like."""
        self.requests_sent = 0
        # Retries, backoff and reconnects are ours; pymodbus only frames and matches one exchange.
        self._client = ModbusSerialClient(
            port, baudrate=baudrate, timeout=timeout_s, retries=0, trace_packet=self._trace, name=f"jk-modbus {port}"
        )
        pymodbus_log = logging.getLogger("pymodbus")
        if pymodbus_log.level == logging.NOTSET:
            # pymodbus logs every timeout as an ERROR; the LinkTimeout we raise is reported once per episode.
            pymodbus_log.setLevel(logging.CRITICAL)

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._client.socket is not None

    def open(self) -> None:
        """Open the port if it is not open. :raises LinkError: naming the port and the cause."""
        if self.is_open:
            return
        self.close()
        try:
            # Locked (flock and lock file): two programs polling one bus would collide.
            port, self._lock = open_locked(
                self.port,
                self._factory,
                baudrate=self.baudrate,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=self.timeout_s,
                write_timeout=self.timeout_s,
            )
        except LinkError as error:
            raise self._lost(error) from None
        self._serial = port
        # The client uses the port we opened, so open errors are ours to word and the trigger exchange shares it.
        self._client.socket = cast(serial.Serial, port)
        if self._lost_reason is not None:
            log.info("serial: %s reopened", self.port)
            self._lost_reason = None

    def close(self) -> None:
        port, self._serial = self._serial, None
        lock, self._lock = self._lock, None
        self._client.socket = None
        if port is not None:
            with contextlib.suppress(*_PORT_ERRORS):
                port.close()
        if lock is not None:
            lock.release()

    def read_registers(self, unit: int, read: Read) -> list[int]:
        """FC03: ``read.count`` words from ``read.address`` of ``unit``.

        :raises LinkTimeout: no reply in time.
        :raises FrameError: bytes came that make no valid reply, or the BMS answered with an exception.
        :raises LinkError: the port cannot be opened or failed (it is closed; the next call reopens it).
        """
        self.open()
        self._wait_quiet()
        self._received = 0
        self.last_received = b""
        try:
            response = self._client.read_holding_registers(read.address, count=read.count, device_id=unit)
        except ConnectionException:
            self.close()
            raise self._lost(LinkError(f"serial port {self.port} lost")) from None
        except ModbusIOException:
            if self._received:
                raise FrameError(
                    "bad reply",
                    f"unit {unit}: {self._received} bytes to the read at 0x{read.address:04X} make no valid reply",
                    hint=self._wrong_driver_hint(),
                ) from None
            raise self._no_reply(unit) from None
        except ModbusException as exc:
            raise FrameError("bad reply", f"unit {unit}: {_cause(exc)}") from None
        except _PORT_ERRORS as exc:
            self.close()
            raise self._lost(LinkError(f"serial port {self.port} lost: {_cause(exc)}")) from None
        if response.isError():
            code = getattr(response, "exception_code", "?")
            raise FrameError(
                "exception reply", f"unit {unit} refused {read.count} words at 0x{read.address:04X} (code {code})"
            )
        registers = list(response.registers)
        if len(registers) != read.count:
            raise FrameError("bad length", f"unit {unit}: {len(registers)} words for a read of {read.count}")
        return registers

    def trigger(self, unit: int, block: Block) -> BlockImage:
        """The trigger exchange: write 0 to ``block``'s trigger register of ``unit`` and take the frame.

        :raises LinkTimeout: nothing came back in time.
        :raises FrameError: a bad, truncated, foreign or unacknowledged frame.
        :raises LinkError: the port cannot be opened or failed.
        """
        request = jk_modbus.trigger_request(unit, block)

        def frame(reply: bytes, final: bool) -> BlockImage | None:
            return jk_modbus.scan_trigger_reply(reply, unit, block, final=final)

        return self._exchange(request, unit, self._guard, frame)

    def write_switch(self, write: SwitchWrite) -> None:
        """Set a switch (FC 0x10 to 0x1070 / 0x1074 / 0x1078) and take the BMS's acknowledgement.

        The one path by which anything but a read leaves the gateway, for :mod:`gateway.bms.jk_modbus_control`
        only; its own guard (:func:`~gateway.bms.jk_modbus_switch.is_permitted_switch_request`) lets nothing
        else through.

        :raises LinkTimeout: no acknowledgement in time (the write may still have been applied).
        :raises FrameError: the BMS refused the write (a Modbus exception), or answered something else.
        :raises LinkError: the port cannot be opened or failed.
        """
        request = jk_modbus_switch.switch_request(write)

        def acknowledged(reply: bytes, final: bool) -> bool | None:
            return jk_modbus_switch.scan_switch_reply(reply.removeprefix(request), write, final=final) or None

        self._exchange(request, write.unit, self._guard_switch, acknowledged)

    def _exchange(
        self,
        request: bytes,
        unit: int,
        guard: Callable[[bytes], None],
        scan: Callable[[bytes, bool], _T | None],
    ) -> _T:
        """Send ``request`` on the port (past ``guard``) and collect the reply until ``scan`` makes something of
        it, or the timeout; ``scan(reply, final)`` returns None while the reply may be incomplete."""
        self.open()
        port = self._serial
        assert port is not None
        self._wait_quiet()
        buffer = bytearray()
        deadline = time.monotonic() + self.timeout_s
        self.last_received = b""
        try:
            port.reset_input_buffer()
            guard(request)
            port.write(request)
            port.flush()
            self.requests_sent += 1
            while True:
                result = scan(bytes(buffer), False)
                if result is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                port.timeout = min(remaining, _READ_SLICE_S)
                buffer += port.read(max(1, port.in_waiting))
        except _PORT_ERRORS as exc:
            self.close()
            raise self._lost(LinkError(f"serial port {self.port} lost: {_cause(exc)}")) from None
        finally:
            self._quiet_until = time.monotonic() + TRIGGER_GAP_S
            if self._serial is not None:
                with contextlib.suppress(*_PORT_ERRORS):
                    self._serial.timeout = self.timeout_s
        reply = bytes(buffer).removeprefix(request)  # an adapter's echo of the request is no answer
        self.last_received = reply[:RECEIVED_SAMPLE_BYTES]
        if not reply:
            raise self._no_reply(unit)
        try:
            final = scan(reply, True)
        except FrameError as error:
            hint = self._wrong_driver_hint()
            if hint is None:
                raise
            raise FrameError(error.fault, error.detail, hint=hint) from None
        assert final is not None  # a final scan raises rather than wait
        return final

    def _no_reply(self, unit: int) -> LinkTimeout:
        return LinkTimeout(
            f"no reply from unit {unit} on {self.port} within {self.timeout_s:g} s",
            hint=no_reply_hint(JK_MODBUS, self.last_received),
        )

    def _wrong_driver_hint(self) -> str | None:
        """The hint for bytes that make no valid reply, when they look like another driver's protocol."""
        if looks_like(self.last_received) in (None, JK_MODBUS):
            return None
        return no_reply_hint(JK_MODBUS, self.last_received)

    def _guard(self, request: bytes) -> None:
        if not jk_modbus.is_permitted_request(request):
            raise LinkError(f"refused to send a request that is not a read: {request[:8].hex(' ').upper()}")

    def _guard_switch(self, request: bytes) -> None:
        if not jk_modbus_switch.is_permitted_switch_request(request):
            raise LinkError(f"refused to send a request that is not a switch write: {request[:8].hex(' ').upper()}")

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's hook on every packet: the write guard on the way out, a byte count on the way in."""
        if sending:
            self._guard(data)
            self.requests_sent += 1
        else:
            self._received = max(self._received, len(data))
            if len(data) > len(self.last_received):  # pymodbus hands over its whole buffer so far
                self.last_received = data[:RECEIVED_SAMPLE_BYTES]
        return data

    def _wait_quiet(self) -> None:
        wait = self._quiet_until - time.monotonic()
        if wait > 0:
            self._sleep(wait)

    def backoff(self, retry: int) -> None:
        """Wait before retry number ``retry`` (1, 2, ...)."""
        self._sleep(min(BACKOFF_S * 2 ** (retry - 1), BACKOFF_MAX_S))

    def _lost(self, error: LinkError) -> LinkError:
        # One INFO line per episode; the LinkError itself goes up and is reported by the caller.
        if self._lost_reason is None:
            log.info("serial: %s", error)
        self._lost_reason = str(error)
        return error


class Method(enum.Enum):
    """How a pack is read."""

    MODBUS = "FC03 reads"
    TRIGGER = "trigger frames"

    @property
    def other(self) -> Method:
        return Method.TRIGGER if self is Method.MODBUS else Method.MODBUS


@dataclass
class _Pack:
    """What the driver remembers about one address between polls."""

    address: int
    pack_id: str
    method: Method = Method.MODBUS
    online: bool = True
    """Answered at the last poll (assumed at start, so the first poll tries hard)."""
    settings: ProtectionSettings | None = None
    device: DeviceInfo | None = None
    polls_on_trigger: int = 0


class JkModbusDriver:
    """Polls the JK-PB packs at ``addresses`` on one RS485 port, in turn.

    :param port: serial device or pyserial URL.
    :param baudrate: bits per second (JK-PB: 115200).
    :param timeout_s: how long to wait for one reply, s.
    :param retries: extra attempts per pack and method within one poll.
    :param addresses: Modbus unit addresses (the packs' DIP switches), 1–247.
    """

    name = "jk-modbus"

    def __init__(
        self,
        *,
        port: str,
        baudrate: int = 115200,
        timeout_s: float = 0.5,
        retries: int = 1,
        clock: Clock,
        addresses: Sequence[int] = (1,),
        serial_factory: SerialFactory = open_serial_port,
        wire_sleep: Callable[[float], None] = time.sleep,
        settings_max_age_s: float = SETTINGS_MAX_AGE_S,
        replies: ReplyRing | None = None,
    ) -> None:
        if not addresses or len(set(addresses)) != len(addresses) or not all(1 <= a <= 247 for a in addresses):
            raise ValueError(f"addresses must be distinct Modbus units 1–247, got {list(addresses)}")
        self._clock = clock
        self._attempts = 1 + max(0, retries)
        self._settings_max_age_s = settings_max_age_s
        self._replies = replies
        """Where each block image goes (passcodes zeroed), for the support bundle; None: nowhere."""
        self._packs = tuple(_Pack(a, f"jk-modbus:{port}#{a}") for a in addresses)
        self._errors: Mapping[str, GatewayError] = MappingProxyType({})
        self._bus = RtuBus(port, baudrate, timeout_s, serial_factory=serial_factory, wire_sleep=wire_sleep)

    @property
    def bus(self) -> RtuBus:
        return self._bus

    @property
    def addresses(self) -> tuple[int, ...]:
        """The Modbus unit of every configured pack, in polling order."""
        return tuple(p.address for p in self._packs)

    @property
    def pack_ids(self) -> tuple[str, ...]:
        """Every configured pack, in polling order: ``jk-modbus:<port>#<address>``."""
        return tuple(p.pack_id for p in self._packs)

    @property
    def pack_errors(self) -> Mapping[str, GatewayError]:
        """Pack id → why it is missing from the last :meth:`read` (empty when every pack answered)."""
        return self._errors

    def method_of(self, pack_id: str) -> Method:
        """How the pack is being read now (diagnostics)."""
        return next(p.method for p in self._packs if p.pack_id == pack_id)

    def read(self) -> tuple[PackReading, ...]:
        """One reading per pack that answered; see the module docstring for partial results.

        :raises LinkError: no pack answered for want of a reply or of the port.
        :raises FrameError: no pack answered, and all of them with bad replies.
        """
        readings: list[PackReading] = []
        errors: dict[str, GatewayError] = {}
        for index, pack in enumerate(self._packs):
            try:
                readings.append(self._read_pack(pack))
            except (LinkTimeout, FrameError) as exc:
                errors[pack.pack_id] = exc
            except LinkError as exc:
                # The port itself failed: no pack can be read now, and none is to blame.
                errors.update({p.pack_id: exc for p in self._packs[index:]})
                break
        self._errors = MappingProxyType(errors)
        if not readings:
            raise self._no_pack_answered(errors)
        return tuple(readings)

    def close(self) -> None:
        self._bus.close()

    def read_for_control(self, address: int) -> tuple[PackReading, Secret | None]:
        """One reading of the pack at ``address`` with its settings read now (not the kept ones), and the
        settings passcode it reports (None: none): what opt-in control checks and verifies by. The pack's own
        method is tried first, then the other; the kept settings are replaced, so the next poll shows them.

        :raises ValueError: no pack has that address.
        :raises LinkTimeout: / :raises FrameError: neither method gave a good reading.
        :raises LinkError: the port failed.
        """
        pack = next((p for p in self._packs if p.address == address), None)
        if pack is None:
            raise ValueError(f"no pack at address {address}")
        failures: list[LinkTimeout | FrameError] = []
        for method in (pack.method, pack.method.other):
            for attempt in range(self._attempts):
                if attempt:
                    self._bus.backoff(attempt)
                try:
                    reading = self._fetch(pack, method, settings_now=True)
                    passcode = self._settings_passcode(pack, method)
                except (LinkTimeout, FrameError) as exc:
                    failures.append(exc)
                    continue
                pack.method = method
                return reading, passcode
        raise failures[0]

    def _settings_passcode(self, pack: _Pack, method: Method) -> Secret | None:
        if method is Method.TRIGGER:
            return self._bus.trigger(pack.address, INFO).settings_passcode
        read = jk_modbus.SETTINGS_PASSCODE_READ
        words = self._bus.read_registers(pack.address, read)
        return jk_modbus.image_from_registers(INFO, [(read.address, words)]).settings_passcode

    def _read_pack(self, pack: _Pack) -> PackReading:
        methods = (pack.method, pack.method.other) if pack.online else (pack.method,)
        if pack.online and pack.method is Method.TRIGGER:
            pack.polls_on_trigger += 1
            if pack.polls_on_trigger >= FC03_RECHECK_POLLS:
                pack.polls_on_trigger = 0
                methods = (Method.MODBUS, Method.TRIGGER)
        attempts = self._attempts if pack.online else 1
        failures: list[LinkTimeout | FrameError] = []
        for method in methods:
            try:
                reading = self._read_with(pack, method, attempts)
            except (LinkTimeout, FrameError) as exc:
                failures.append(exc)
                continue
            if not pack.online:
                log.info("%s: answering again (%s)", pack.pack_id, method.value)
            elif method is not pack.method:
                cause = f"{pack.method.value} failed ({failures[0]})" if failures else f"{method.value} work again"
                log.info("%s: %s; reading with %s", pack.pack_id, cause, method.value)
            pack.method, pack.online = method, True
            return reading
        if pack.online:
            log.info("%s: not answering: %s", pack.pack_id, failures[0])
        else:
            pack.method = pack.method.other  # probe the other method next time
        # It may come back reconfigured or swapped: read its settings and device info afresh.
        pack.online, pack.settings, pack.device = False, None, None
        raise failures[0]

    def _read_with(self, pack: _Pack, method: Method, attempts: int) -> PackReading:
        last: LinkTimeout | FrameError | None = None
        for attempt in range(attempts):
            if attempt:
                self._bus.backoff(attempt)
            try:
                return self._fetch(pack, method)
            except (LinkTimeout, FrameError) as exc:
                last = exc
        assert last is not None
        raise last

    def _fetch(self, pack: _Pack, method: Method, *, settings_now: bool = False) -> PackReading:
        live = self._image(pack, LIVE, method)
        measured_at_s = self._clock.monotonic()
        state = jk_modbus.to_state(jk_modbus.decode(live), measured_at_s)
        settings = pack.settings
        if settings_now or settings is None or measured_at_s - settings.measured_at_s >= self._settings_max_age_s:
            settings_image = self._image(pack, SETTINGS, method)
            settings = jk_modbus.to_settings(jk_modbus.decode(settings_image), self._clock.monotonic())
            pack.settings = settings
        if pack.device is None:
            try:
                pack.device = jk_modbus.to_device(jk_modbus.decode(self._image(pack, INFO, method)))
            except (LinkTimeout, FrameError) as exc:
                # Names and versions are for people; a pack without them still protects the battery.
                log.debug("%s: no device info (%s)", pack.pack_id, exc)
                pack.device = DeviceInfo()
        return PackReading(pack_id=pack.pack_id, state=state, settings=settings, device=pack.device)

    def _image(self, pack: _Pack, block: Block, method: Method) -> BlockImage:
        if method is Method.TRIGGER:
            image = self._bus.trigger(pack.address, block)
        else:
            reads = [(read.address, self._bus.read_registers(pack.address, read)) for read in POLL_PLAN[block]]
            image = jk_modbus.image_from_registers(block, reads)
        if self._replies is not None:  # the image's passcodes are zeroed already
            values = jk_modbus.decode(image)
            self._replies.add(pb_reply(self._clock.wall(), pack.pack_id, block.name, image.data, image.known, values))
        return image

    def _no_pack_answered(self, errors: Mapping[str, GatewayError]) -> GatewayError:
        failures = list(errors.values())
        if len(failures) == 1 or all(f is failures[0] for f in failures):
            return failures[0]
        port = self._bus.port
        if all(isinstance(f, LinkTimeout) for f in failures):
            units = ", ".join(str(p.address) for p in self._packs)
            return LinkTimeout(
                f"no reply from units {units} on {port} within {self._bus.timeout_s:g} s", hint=failures[0].hint
            )
        detail = "; ".join(f"unit {p.address}: {errors[p.pack_id]}" for p in self._packs if p.pack_id in errors)
        if all(isinstance(f, FrameError) for f in failures):
            return FrameError("no pack answered", f"on {port}: {detail}")
        return LinkError(f"no pack answered on {port}: {detail}")
