"""``bms-gateway monitor`` with an RS485 profile: decode a Pylontech line, or poll as an inverter would.

Two modes, one line per frame (seconds since start, who sends it, then the fields with units):

* **listen** (Pylontech ASCII profiles): every frame on ``--port`` (or ``inverter.serial``), requests and
  responses; a response is read with the layout of the last request's command. Nothing is sent.
* **poll** (``--poll``): sends what an inverter sends and prints the answers. Pylontech: 0x4F, 0x51, 0x42,
  0x44, 0x47 and 0x92 (those the profile has) to the address; Modbus: the profile's registers, read with a
  pymodbus client over RTU (``--port``) or TCP (``--host``/``--tcp-port``).

Bytes that are no frame (noise, a cut frame, a bad checksum) are shown as raw hex and never stop the monitor.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Final, TextIO

import serial
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.cli.common import detach_stdout, stop_after, stop_on_signals
from gateway.cli.frames import value_unit
from gateway.config import Config
from gateway.errors import ConfigError, FrameError, LinkError
from gateway.rs485.fields import FieldKind, FieldSpec, decode_fields
from gateway.rs485.modbus_map import MAX_READ_WORDS
from gateway.rs485.profile_spec import Framing, PylontechSpec, RegisterMapSpec, RegisterSpec, Rs485Profile
from gateway.rs485.pylontech_ascii import (
    EOI,
    MAX_FRAME_BYTES,
    SOI,
    ReturnCode,
    build_request,
    decode_frame,
    parse_frame,
)
from gateway.transport.serial_link import SerialPort, open_serial_port

READ_TIMEOUT_S: Final = 0.1
"""Longest one serial read blocks, s: bounds how late a stop is noticed."""
IDLE_FLUSH_S: Final = 0.5
"""A partial frame or garbage this long without a new byte is shown raw."""
ANSWER_TIMEOUT_S: Final = 1.0
"""How long a poll waits for its answer, s."""
POLL_INTERVAL_S: Final = 1.0
"""Pause between two rounds of polls, s."""
MAX_GARBAGE_BYTES: Final = 64
"""Garbage is shown in lines of at most this many bytes."""
POLL_COMMANDS: Final = (0x4F, 0x51, 0x42, 0x44, 0x47, 0x92)
DEFAULT_TCP_PORT: Final = 5020
RS485_FLAGS: Final = ("port", "baudrate", "poll", "host", "tcp_port", "address", "count")
"""Options only an RS485 profile takes (argparse destinations)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("RS485 profiles")
    group.add_argument("--port", metavar="P", help="serial port of the RS485 line (instead of -c)")
    group.add_argument("--baudrate", type=int, metavar="B", help="bit/s (default: the config's, else the profile's)")
    group.add_argument("--poll", action="store_true", help="poll as an inverter would and show the answers")
    group.add_argument("--host", metavar="H", help="--poll over Modbus TCP: the server's host")
    group.add_argument("--tcp-port", type=int, metavar="N", help=f"--poll over Modbus TCP (default {DEFAULT_TCP_PORT})")
    group.add_argument("--address", type=int, metavar="A", help="Pylontech address or Modbus unit to poll")
    group.add_argument("--count", type=int, metavar="N", help="stop after N frames (listen) or N rounds (--poll)")


@dataclass(frozen=True, slots=True)
class Rs485Setup:
    profile: Rs485Profile
    port: str | None
    baudrate: int
    host: str | None
    tcp_port: int
    address: int
    poll: bool
    count: int | None

    def describe(self) -> str:
        if self.host is not None:
            return f"Modbus TCP {self.host}:{self.tcp_port}"
        return f"{self.port} at {self.baudrate} bit/s"


def rs485_setup(args: argparse.Namespace, profile: Rs485Profile, config: Config | None) -> Rs485Setup:
    """What to open and how, from the arguments (and the config). :raises ConfigError: one line."""
    for flag in ("interface", "channel", "bitrate", "changes"):
        if getattr(args, flag):
            raise ConfigError("", f"--{flag} is for CAN profiles; {profile.name} is an RS485 profile")
    tcp = args.host is not None or args.tcp_port is not None
    if config is not None and (args.port is not None or tcp):
        raise ConfigError("", "give either -c FILE or --port/--host, not both")
    if args.baudrate is not None and args.port is None:
        raise ConfigError("", "--baudrate goes with --port (without it, the port comes from -c FILE)")
    for flag, value, low, high in (
        ("--baudrate", args.baudrate, 1, 4_000_000),
        ("--tcp-port", args.tcp_port, 1, 65535),
        ("--count", args.count, 1, 10**9),
    ):
        if value is not None and not low <= value <= high:
            raise ConfigError("", f"{flag} must be from {low} to {high}, got {value}")
    is_modbus = profile.pylontech is None
    if not args.poll and is_modbus:
        raise ConfigError("", f"{profile.name} is a Modbus profile: listening decodes Pylontech ASCII; add --poll")
    if tcp:
        if not args.poll or Framing.MODBUS_TCP not in profile.framings:
            raise ConfigError("", f"--host/--tcp-port: only --poll with a Modbus TCP profile, not {profile.name}")
        if args.port is not None:
            raise ConfigError("", "give either --port or --host/--tcp-port, not both")
    port, baudrate = args.port, args.baudrate
    address = args.address
    if config is not None:
        if config.inverter.serial is None:
            raise ConfigError("inverter.serial", f"missing: profile {profile.name} talks RS485, so say which port")
        port, baudrate = config.inverter.serial.port, config.inverter.serial.baudrate
        address = config.inverter.address if address is None else address
    elif port is None and not tcp:
        raise ConfigError("", f"{profile.name} is an RS485 profile: give --port P (or -c FILE with inverter.serial)")
    address = profile.address if address is None else address
    low, high = profile.address_range
    if not low <= address <= high:
        raise ConfigError("", f"--address {address} is outside {low}-{high} for profile {profile.name}")
    return Rs485Setup(
        profile=profile,
        port=None if tcp else port,
        baudrate=baudrate or profile.baudrate,
        host=(args.host or "127.0.0.1") if tcp else None,
        tcp_port=args.tcp_port or DEFAULT_TCP_PORT,
        address=address,
        poll=args.poll,
        count=args.count,
    )


# --- formatting ------------------------------------------------------------------------------------------------


def _decimals(number: float) -> int:
    exponent = Decimal(repr(number)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _number(spec: FieldSpec, value: object) -> str:
    if spec.bitmask and isinstance(value, int):
        return f"0x{value:X}"
    if isinstance(value, float):
        return f"{value:.{max(_decimals(spec.scale), _decimals(spec.offset))}f}"
    return str(value)


def _list_item(spec: FieldSpec, item: object) -> str:
    """A list item; in a fixed-length list, the "not there" pattern (0x8000 for a sensor) as ``-``."""
    if not spec.count_size and spec.missing:
        raw = int.from_bytes(spec.missing.to_bytes(spec.size, "big"), "big", signed=spec.signed)
        if item == round((-raw if spec.negate else raw) * spec.scale - spec.offset, 6):
            return "-"
    return _number(spec, item)


def format_value(spec: FieldSpec, value: Any) -> str:
    """One decoded field, with its unit (from the value it carries)."""
    unit = value_unit(spec.value) if spec.value is not None and not spec.bitmask else ""
    suffix = f" {unit}" if unit else ""
    if spec.kind is FieldKind.NUMBER:
        return _number(spec, value) + suffix
    if spec.kind is FieldKind.LIST:
        return (",".join(_list_item(spec, item) for item in value) or "-") + suffix
    if spec.kind is FieldKind.TEXT:
        return '"' + str(value) + '"'
    if spec.kind is FieldKind.FLAGS:
        return ",".join(name for name, on in value.items() if on) or "-"
    if spec.kind is FieldKind.CONSTANT:
        return f"0x{value:0{2 * spec.size}X}"
    return str(value)  # STATE


def format_fields(fields: tuple[FieldSpec, ...], values: Mapping[str, Any]) -> str:
    """``name=value unit`` for every decoded field; modules as ``[module i]`` then theirs."""
    parts: list[str] = []
    for spec in fields:
        if spec.name not in values:
            continue
        if spec.kind is FieldKind.MODULES:
            for index, module in enumerate(values[spec.name], start=1):
                parts.append(f"[module {index}] {format_fields(spec.fields, module)}".rstrip())
        else:
            parts.append(f"{spec.name}={format_value(spec, values[spec.name])}")
    return " ".join(parts)


def format_when(when: float | str) -> str:
    """The first column of a line: seconds since the start (``   1.250``), or a label right-aligned (``     L12``)."""
    return f"{when:>8}" if isinstance(when, str) else f"{when:8.3f}"


def _hex(data: bytes) -> str:
    return f"[{len(data)}] " + " ".join(f"{byte:02X}" for byte in data)


# --- Pylontech ASCII -------------------------------------------------------------------------------------------


class FrameSplitter:
    """Cuts a byte stream into ``~`` … CR frames and the garbage around them: ``(is_frame, bytes)`` pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[tuple[bool, bytes]]:
        buffer = self._buffer
        buffer += data
        pieces: list[tuple[bool, bytes]] = []

        def cut(length: int, is_frame: bool) -> None:
            pieces.append((is_frame, bytes(buffer[:length])))
            del buffer[:length]

        while buffer:
            start = buffer.find(SOI)
            if start < 0:
                if len(buffer) >= MAX_GARBAGE_BYTES:
                    cut(MAX_GARBAGE_BYTES, False)
                    continue
                break
            if start > 0:
                cut(min(start, MAX_GARBAGE_BYTES), False)
                continue
            end, restart = buffer.find(EOI), buffer.find(SOI, 1)
            if restart >= 0 and (end < 0 or restart < end):
                cut(restart, False)  # a frame cut short by the next one
            elif end >= 0:
                cut(end + 1, True)
            elif len(buffer) > MAX_FRAME_BYTES:
                cut(len(buffer), False)
            else:
                break
        return pieces

    def flush(self) -> bytes:
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


class PylontechMonitor:
    """Frames to lines: requests by their command, responses by the last request's command.

    ``frames`` counts the lines; ``undecoded`` those that are garbage, no valid frame, or an OK response whose
    fields could not be decoded (no request before it, or an INFO that does not fit its command's layout).
    """

    def __init__(self, spec: PylontechSpec, out: TextIO) -> None:
        self._spec = spec
        self._out = out
        self._last_cid2: int | None = None
        self._width = max((len(c.name) for c in spec.commands.values()), default=8)
        self.frames = 0
        self.undecoded = 0

    def show(self, is_frame: bool, raw: bytes, when: float | str) -> None:
        """One line for ``raw``; ``when`` is seconds since the start, or a label (a file's line, ``L12``)."""
        stamp = format_when(when)
        self.frames += 1
        if not is_frame:
            self.undecoded += 1
            self._print(f"{stamp} --- garbage {_hex(raw)}")
            return
        try:
            frame = parse_frame(raw)
        except FrameError as error:
            self.undecoded += 1
            self._print(f"{stamp} --- {error.fault} {_hex(raw)}")
            return
        if frame.cid2 in self._spec.commands:
            self._last_cid2 = frame.cid2
            decoded = decode_frame(raw, self._spec)
            name = decoded["command"]
            pack = f" pack={decoded['pack']}" if "pack" in decoded else ""
            self._print(f"{stamp} inv 0x{frame.address:02X} 0x{frame.cid2:02X} {name:<{self._width}} request{pack}")
            return
        problem = ""
        try:
            decoded = decode_frame(raw, self._spec, request_cid2=self._last_cid2)
        except FrameError as error:  # the INFO does not fit the command's layout: header and raw INFO
            decoded = decode_frame(raw, self._spec)
            problem = f" ({error})"
        name = decoded.get("command", "?")
        head = f"{stamp} bat 0x{frame.address:02X} 0x{frame.cid2:02X} {name:<{self._width}}"
        status = "ok" if frame.cid2 == ReturnCode.OK else decoded["return_name"]
        command = self._spec.commands.get(self._last_cid2) if self._last_cid2 is not None else None
        if "fields" in decoded and command is not None:
            body = format_fields(command.fields, decoded["fields"])
        else:
            body = f"info={decoded['info'] or '-'}"
        if problem or (status == "ok" and "fields" not in decoded):
            self.undecoded += 1
        self._print(f"{head} {status:<7} ver=0x{frame.version:02X} {body}{problem}".rstrip())

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)


def _announce(setup: Rs485Setup) -> None:
    """The stderr line saying what is monitored, once the port is open (nothing sent before it is missed)."""
    mode = f"polling address {setup.address}" if setup.poll else "listening only"
    print(f"monitor: profile {setup.profile.name} on {setup.describe()}; {mode}", file=sys.stderr, flush=True)


def _open_serial(setup: Rs485Setup) -> SerialPort:
    assert setup.port is not None
    try:
        port = open_serial_port(setup.port, baudrate=setup.baudrate, timeout=READ_TIMEOUT_S)
    except (serial.SerialException, OSError, ValueError) as error:
        raise LinkError(f"RS485: cannot open {setup.port}: {error}") from None
    _announce(setup)
    return port


def _read(port: SerialPort, setup: Rs485Setup) -> bytes:
    try:
        return bytes(port.read(512))
    except (serial.SerialException, OSError) as error:
        raise LinkError(f"RS485: read failed on {setup.port}: {error}") from None


def _listen(setup: Rs485Setup, stop: threading.Event, started_s: float) -> None:
    assert setup.profile.pylontech is not None
    monitor = PylontechMonitor(setup.profile.pylontech, sys.stdout)
    splitter = FrameSplitter()
    port = _open_serial(setup)
    last_byte_s = time.monotonic()
    try:
        while not stop.is_set() and (setup.count is None or monitor.frames < setup.count):
            data = _read(port, setup)
            now = time.monotonic()
            if data:
                last_byte_s = now
                pieces = splitter.feed(data)
            elif splitter.pending and now - last_byte_s > IDLE_FLUSH_S:
                pieces = [(False, splitter.flush())]
            else:
                continue
            for is_frame, raw in pieces:
                if setup.count is not None and monitor.frames >= setup.count:
                    break
                monitor.show(is_frame, raw, now - started_s)
    finally:
        port.close()


def _poll_pylontech(setup: Rs485Setup, stop: threading.Event, started_s: float) -> None:
    spec = setup.profile.pylontech
    assert spec is not None
    commands = [spec.commands[cid2] for cid2 in POLL_COMMANDS if cid2 in spec.commands] or list(spec.commands.values())
    monitor = PylontechMonitor(spec, sys.stdout)
    port = _open_serial(setup)
    try:
        for _round in _rounds(setup, stop):
            for command in commands:
                if stop.is_set():
                    return
                info = bytes([setup.address]) if command.info == "pack" else b""
                request = build_request(setup.address, command.cid2, info, version=spec.version)
                port.reset_input_buffer()
                try:
                    port.write(request)
                    port.flush()
                except (serial.SerialException, OSError) as error:
                    raise LinkError(f"RS485: write failed on {setup.port}: {error}") from None
                monitor.show(True, request, time.monotonic() - started_s)
                _answer(port, setup, monitor, started_s, stop)
    finally:
        port.close()


def _answer(
    port: SerialPort, setup: Rs485Setup, monitor: PylontechMonitor, started_s: float, stop: threading.Event
) -> None:
    """Show what comes back until a frame (or the timeout)."""
    splitter = FrameSplitter()
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        for is_frame, raw in splitter.feed(_read(port, setup)):
            monitor.show(is_frame, raw, time.monotonic() - started_s)
            if is_frame:
                return
    rest = splitter.flush()
    if rest:
        monitor.show(False, rest, time.monotonic() - started_s)
    if not stop.is_set():
        print(f"{time.monotonic() - started_s:8.3f} --- no answer within {ANSWER_TIMEOUT_S:g} s", flush=True)


def _rounds(setup: Rs485Setup, stop: threading.Event) -> Iterator[int]:
    done = 0
    while not stop.is_set() and (setup.count is None or done < setup.count):
        if done:
            stop.wait(POLL_INTERVAL_S)
            if stop.is_set():
                return
        yield done
        done += 1


# --- Modbus ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterRead:
    """One Modbus read: ``count`` registers from ``start``, and the profile's registers within them."""

    start: int
    count: int
    registers: tuple[RegisterSpec, ...]
    """With absolute addresses."""
    label: str = ""


def plan_reads(registers: tuple[RegisterSpec, ...], base: int = 0, label: str = "") -> list[RegisterRead]:
    """Reads of at most :data:`MAX_READ_WORDS` covering ``registers`` (at ``base`` + their address)."""
    reads: list[RegisterRead] = []
    chunk: list[RegisterSpec] = []
    for register in sorted(registers, key=lambda r: r.address):
        register = replace(register, address=base + register.address)
        if chunk and register.address + register.words - chunk[0].address > MAX_READ_WORDS:
            reads.append(_read_of(chunk, label))
            chunk = []
        chunk.append(register)
    if chunk:
        reads.append(_read_of(chunk, label))
    return reads


def _read_of(chunk: list[RegisterSpec], label: str) -> RegisterRead:
    start = chunk[0].address
    return RegisterRead(start, max(r.address + r.words for r in chunk) - start, tuple(chunk), label)


def decode_read(read: RegisterRead, words: list[int]) -> dict[str, Any]:
    data = b"".join((word & 0xFFFF).to_bytes(2, "big") for word in words)
    values: dict[str, Any] = {}
    for register in read.registers:
        offset = 2 * (register.address - read.start)
        values.update(decode_fields((register.field,), data[offset : offset + 2 * register.words]))
    return values


ModbusClient = ModbusSerialClient | ModbusTcpClient


def _modbus_client(setup: Rs485Setup) -> ModbusClient:
    pymodbus_log = logging.getLogger("pymodbus")
    if pymodbus_log.level == logging.NOTSET:
        pymodbus_log.setLevel(logging.CRITICAL)  # every timeout is an ERROR there; ours is one line
    client: ModbusClient
    if setup.host is not None:
        client = ModbusTcpClient(setup.host, port=setup.tcp_port, timeout=ANSWER_TIMEOUT_S, retries=0)
    else:
        assert setup.port is not None
        client = ModbusSerialClient(setup.port, baudrate=setup.baudrate, timeout=ANSWER_TIMEOUT_S, retries=0)
    if not client.connect():
        raise LinkError(f"RS485: cannot connect to {setup.describe()}")
    _announce(setup)
    return client


def _poll_modbus(setup: Rs485Setup, stop: threading.Event, started_s: float) -> None:
    spec = setup.profile.registers
    assert spec is not None
    function = 3 if 3 in spec.read_functions else 4
    client = _modbus_client(setup)
    reader: Callable[..., Any] = client.read_holding_registers if function == 3 else client.read_input_registers
    try:
        for _round in _rounds(setup, stop):
            values: dict[str, Any] = {}
            reads = plan_reads(spec.registers)
            index = 0
            while index < len(reads) and not stop.is_set():
                read = reads[index]
                index += 1
                answer = _poll_one(reader, setup, function, read, started_s)
                values.update(answer or {})
                if index == len(reads) and spec.modules is not None and not read.label:
                    reads += _module_reads(spec, values)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _module_reads(spec: RegisterMapSpec, values: Mapping[str, Any]) -> list[RegisterRead]:
    """The module blocks of the packs there are (the register carrying ``module_count``, else one)."""
    block = spec.modules
    assert block is not None
    count_field = next((r.field.name for r in spec.registers if r.field.value == "module_count"), None)
    packs = values.get(count_field, 1) if count_field is not None else 1
    packs = max(0, min(block.count, packs if isinstance(packs, int) else 1))
    reads: list[RegisterRead] = []
    for module in range(packs):
        reads += plan_reads(block.registers, block.base + module * block.stride, f"[module {module + 1}] ")
    return reads


def _poll_one(
    reader: Callable[..., Any], setup: Rs485Setup, function: int, read: RegisterRead, started_s: float
) -> dict[str, Any] | None:
    head = f"unit {setup.address} fc{function} {read.start}+{read.count}"
    try:
        reply = reader(read.start, count=read.count, device_id=setup.address)
    except ModbusException as error:
        print(f"{time.monotonic() - started_s:8.3f} --- {head} no answer ({' '.join(str(error).split())})", flush=True)
        return None
    elapsed = time.monotonic() - started_s
    if reply.isError():
        code = getattr(reply, "exception_code", "?")
        print(f"{elapsed:8.3f} bat {head} exception {code}", flush=True)
        return None
    words = list(reply.registers)
    if len(words) != read.count:
        print(f"{elapsed:8.3f} --- {head} {len(words)} words, expected {read.count}", flush=True)
        return None
    try:
        values = decode_read(read, words)
    except FrameError as error:  # cannot happen for whole words; shown raw all the same
        print(f"{elapsed:8.3f} --- {head} {' '.join(f'{w:04X}' for w in words)} ({error})", flush=True)
        return None
    print(f"{elapsed:8.3f} bat {head} {format_read(read, values)}", flush=True)
    return values


def format_read(read: RegisterRead, values: Mapping[str, Any]) -> str:
    """The fields of one read as ``[module i] name=value unit ...`` (the label only for a module's block)."""
    return read.label + format_fields(tuple(r.field for r in read.registers), values)


# --- the command -----------------------------------------------------------------------------------------------


def run_rs485(setup: Rs485Setup, duration_s: float | None) -> int:
    stop = threading.Event()
    started_s = time.monotonic()
    profile = setup.profile
    try:
        with stop_on_signals(stop), stop_after(stop, duration_s):
            if not setup.poll:
                _listen(setup, stop, started_s)
            elif profile.pylontech is not None:
                _poll_pylontech(setup, stop, started_s)
            else:
                _poll_modbus(setup, stop, started_s)
    except BrokenPipeError:
        detach_stdout()
    return 0
