"""The JK BMS wired "NW" protocol (frames starting ``4E 57``), as pure functions.

Frame layout (requests and replies alike), all numbers big-endian::

    4E 57 | length (2) | terminal (4) | command | source | type | payload ... | record (4) | 68 | checksum (4)

``length`` counts from the length field itself to the last checksum byte (frame length − 2). The checksum field
is ``00 00 HI LO`` where ``HI LO`` is the 16-bit sum of every byte before it. A reply's payload is a run of
tagged fields: a tag byte, then a payload whose length :data:`TAGS` fixes (only 0x79, the cells, carries its
own length). Sources and facts: ``shared/protocols/jk_bms.md``.

Nothing here does I/O: bytes in, values out (:func:`decode_reply`), values in, bytes out (:func:`encode_reply`,
:func:`read_all_request`). Every malformed input raises :class:`~gateway.errors.FrameError`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.alarms import WIRED_WARNING_BITS
from gateway.errors import FrameError
from gateway.model import Alarm, BatteryState, Chemistry, DeviceInfo, PackReading, ProtectionSettings
from gateway.secret import Secret

START: Final = b"\x4e\x57"
END_MARKER: Final = 0x68
HEADER_LEN: Final = 11
"""Start (2), length (2), terminal (4), command, source, type."""
TRAILER_LEN: Final = 9
"""Record number (4), end marker, checksum (4)."""
MIN_FRAME_LEN: Final = HEADER_LEN + TRAILER_LEN
MAX_TEMPERATURE_C: Final = 99
"""The highest temperature tags 0x80–0x82 can carry: raw 100 and above are 0 °C and below."""
MAX_FRAME_LEN: Final = 1024
"""No JK reply comes near this (about 300 bytes for 32 cells); a larger length field is garbage."""


class Command(enum.IntEnum):
    ACTIVATE = 0x01
    WRITE = 0x02
    READ = 0x03
    PASSWORD = 0x05
    READ_ALL = 0x06


class Source(enum.IntEnum):
    BMS = 0x00
    BLUETOOTH = 0x01
    GPS = 0x02
    PC = 0x03


class FrameType(enum.IntEnum):
    REQUEST = 0x00
    REPLY = 0x01
    UPLOAD = 0x02


# --- field kinds -------------------------------------------------------------------------------------------

FieldValue = int | float | str | Secret | tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Kind:
    """How a tag's payload maps to a value and back."""

    decode: Callable[[bytes], FieldValue]
    encode: Callable[[FieldValue, int], bytes]


def _unsigned(divisor: int = 1) -> Kind:
    def decode(raw: bytes) -> FieldValue:
        value = int.from_bytes(raw, "big")
        return value if divisor == 1 else value / divisor

    def encode(value: FieldValue, length: int) -> bytes:
        assert isinstance(value, int | float)
        return round(value * divisor).to_bytes(length, "big")

    return Kind(decode, encode)


def _signed() -> Kind:
    def decode(raw: bytes) -> FieldValue:
        return int.from_bytes(raw, "big", signed=True)

    def encode(value: FieldValue, length: int) -> bytes:
        assert isinstance(value, int | float)
        return round(value).to_bytes(length, "big", signed=True)

    return Kind(decode, encode)


def _temperature() -> Kind:
    # Raw 0..99 is °C as is; from 100 up the value is 100 − raw, so 100 is 0 °C and 101 is −1 °C.
    # Source: the vendor table "101 is −1 (100 benchmark)" (syssi/esphome-jk-bms
    # docs/protocol-design-uart-ttl-gps-port.md, 0x80 row) and the field reports that real BMSs send 100 at
    # about 0 °C: Louisvdw/dbus-serialbattery #354 (app shows "−0 °C", ice-bath check 100 − raw) and #339,
    # syssi/esphome-jk-bms #685 (fixed in c90367c). syssi's fix reads 99 − raw (1 °C colder); we follow the
    # vendor's 100 benchmark and the app. A BMS never reports +100 °C here: raw 100 is the freezing point.
    def decode(raw: bytes) -> FieldValue:
        value = int.from_bytes(raw, "big")
        return value if value < 100 else 100 - value

    def encode(value: FieldValue, length: int) -> bytes:
        assert isinstance(value, int | float)
        celsius = round(value)
        if celsius > MAX_TEMPERATURE_C:
            raise ValueError(f"temperature {value} °C does not fit the JK field (at most {MAX_TEMPERATURE_C} °C)")
        # 0 °C goes out as 100, as real BMSs send it (the reports above); raw 0 still decodes to 0 °C.
        return (celsius if celsius > 0 else 100 - celsius).to_bytes(length, "big")

    return Kind(decode, encode)


def _text(secret: bool = False) -> Kind:
    # latin-1 maps every byte, so any payload decodes and re-encodes unchanged; NUL padding is stripped.
    def decode(raw: bytes) -> FieldValue:
        text = raw.rstrip(b"\x00").decode("latin-1")
        return Secret(text) if secret else text

    def encode(value: FieldValue, length: int) -> bytes:
        text = value.reveal() if isinstance(value, Secret) else value
        assert isinstance(text, str)
        data = text.encode("latin-1")
        if len(data) > length:
            raise ValueError(f"text of {len(data)} bytes does not fit a {length}-byte field")
        return data.ljust(length, b"\x00")

    return Kind(decode, encode)


_U = _unsigned()
_MV = _unsigned(1000)
_CV = _unsigned(100)
_I16 = _signed()
_TEMP = _temperature()
_TEXT = _text()
_SECRET = _text(secret=True)
PROTOCOL_VERSION_TAG: Final = 0xC0
_CURRENT_RAW = _U  # interpreted once the protocol version (tag 0xC0, last in the frame) is known


@dataclass(frozen=True, slots=True)
class TagSpec:
    tag: int
    name: str
    length: int
    kind: Kind


CELLS_TAG: Final = 0x79
CURRENT_NAME: Final = "current_a"

TAGS: Final[Mapping[int, TagSpec]] = MappingProxyType(
    {
        spec.tag: spec
        for spec in (
            TagSpec(0x80, "mos_temperature_c", 2, _TEMP),
            TagSpec(0x81, "temperature_1_c", 2, _TEMP),
            TagSpec(0x82, "temperature_2_c", 2, _TEMP),
            TagSpec(0x83, "pack_voltage_v", 2, _CV),
            TagSpec(0x84, CURRENT_NAME, 2, _CURRENT_RAW),
            TagSpec(0x85, "soc_pct", 1, _U),
            TagSpec(0x86, "temperature_sensor_count", 1, _U),
            TagSpec(0x87, "cycle_count", 2, _U),
            TagSpec(0x89, "cycle_capacity_ah", 4, _U),
            TagSpec(0x8A, "cell_count", 2, _U),
            TagSpec(0x8B, "warnings", 2, _U),
            TagSpec(0x8C, "status", 2, _U),
            TagSpec(0x8E, "pack_ovp_v", 2, _CV),
            TagSpec(0x8F, "pack_uvp_v", 2, _CV),
            TagSpec(0x90, "cell_ovp_v", 2, _MV),
            TagSpec(0x91, "cell_ovpr_v", 2, _MV),
            TagSpec(0x92, "cell_ovp_delay_s", 2, _U),
            TagSpec(0x93, "cell_uvp_v", 2, _MV),
            TagSpec(0x94, "cell_uvpr_v", 2, _MV),
            TagSpec(0x95, "cell_uvp_delay_s", 2, _U),
            TagSpec(0x96, "cell_delta_protect_v", 2, _MV),
            TagSpec(0x97, "max_discharge_current_a", 2, _U),
            TagSpec(0x98, "discharge_ocp_delay_s", 2, _U),
            TagSpec(0x99, "max_charge_current_a", 2, _U),
            TagSpec(0x9A, "charge_ocp_delay_s", 2, _U),
            TagSpec(0x9B, "balance_start_v", 2, _MV),
            TagSpec(0x9C, "balance_trigger_v", 2, _MV),
            TagSpec(0x9D, "balancer_switch", 1, _U),
            TagSpec(0x9E, "mos_otp_c", 2, _U),
            TagSpec(0x9F, "mos_otpr_c", 2, _U),
            TagSpec(0xA0, "box_otp_c", 2, _U),
            TagSpec(0xA1, "box_otpr_c", 2, _U),
            TagSpec(0xA2, "temperature_delta_protect_c", 2, _U),
            TagSpec(0xA3, "charge_otp_c", 2, _U),
            TagSpec(0xA4, "discharge_otp_c", 2, _U),
            TagSpec(0xA5, "charge_utp_c", 2, _I16),
            TagSpec(0xA6, "charge_utpr_c", 2, _I16),
            TagSpec(0xA7, "discharge_utp_c", 2, _I16),
            TagSpec(0xA8, "discharge_utpr_c", 2, _I16),
            TagSpec(0xA9, "cell_count_setting", 1, _U),
            TagSpec(0xAA, "capacity_ah", 4, _U),
            TagSpec(0xAB, "charge_mos_switch", 1, _U),
            TagSpec(0xAC, "discharge_mos_switch", 1, _U),
            TagSpec(0xAD, "current_calibration_ma", 2, _U),
            TagSpec(0xAE, "board_address", 1, _U),
            TagSpec(0xAF, "battery_type", 1, _U),
            TagSpec(0xB0, "sleep_wait_s", 2, _U),
            TagSpec(0xB1, "low_soc_alarm_pct", 1, _U),
            TagSpec(0xB2, "password", 10, _SECRET),
            TagSpec(0xB3, "dedicated_charger_switch", 1, _U),
            TagSpec(0xB4, "device_id", 8, _TEXT),
            TagSpec(0xB5, "manufacture_date", 4, _TEXT),
            TagSpec(0xB6, "runtime_min", 4, _U),
            TagSpec(0xB7, "software_version", 15, _TEXT),
            TagSpec(0xB8, "start_current_calibration", 1, _U),
            TagSpec(0xB9, "actual_capacity_ah", 4, _U),
            TagSpec(0xBA, "manufacturer", 24, _TEXT),
            TagSpec(PROTOCOL_VERSION_TAG, "protocol_version", 1, _U),
        )
    }
)
TAG_BY_NAME: Final[Mapping[str, int]] = MappingProxyType({s.name: s.tag for s in TAGS.values()})
CELLS_NAME: Final = "cell_voltages_v"

WARNING_BITS: Final = WIRED_WARNING_BITS
"""Tag 0x8B bit → alarm, from the one alarm table."""
STATUS_CHARGE_MOS: Final = 1 << 0
STATUS_DISCHARGE_MOS: Final = 1 << 1
STATUS_BALANCER: Final = 1 << 2
STATUS_BATTERY_DROPPED: Final = 1 << 3

BATTERY_TYPES: Final[Mapping[int, Chemistry]] = MappingProxyType(
    {0: Chemistry.LIFEPO4, 1: Chemistry.LI_ION, 2: Chemistry.LTO}
)
TEMPERATURE_SENSOR_NAMES: Final = ("temperature_1_c", "temperature_2_c")

DEFAULT_PROTOCOL_VERSION: Final = 0
"""Assumed when a reply lacks tag 0xC0: the vendor's stated default ("0xC0 … Default value 0x00", syssi
docs/protocol-design-uart-ttl-gps-port.md, 0xC0 row), i.e. the 10000-offset current. Every capture we have
carries 0xC0 = 1, so a reply without it is rare: :attr:`JkNwReply.protocol_version_stated` says so, and the
driver logs it once."""
SIMULATOR_PROTOCOL_VERSION: Final = 1
"""What the simulator states in tag 0xC0: the version of every real capture (replies A–E)."""
KNOWN_PROTOCOL_VERSIONS: Final = frozenset({0, 1})


# --- envelope ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """A frame with verified start, length, end marker and checksum, payload not yet interpreted."""

    command: int
    source: int
    frame_type: int
    payload: bytes
    terminal: int = 0
    record_number: int = 0


def checksum(data: bytes) -> int:
    """16-bit sum of ``data``: the value of a frame's checksum over every byte before the checksum field."""
    return sum(data) & 0xFFFF


def frame_length(header: bytes) -> int:
    """Total frame length in bytes from the first four bytes of a frame (start and length field).

    :raises FrameError: bad start or an impossible length.
    """
    if len(header) < 4:
        raise FrameError("truncated", f"{len(header)} bytes, need 4 to read the length field")
    if header[:2] != START:
        raise FrameError("bad start", f"expected 4E 57, got {header[:2].hex(' ').upper()}")
    total = int.from_bytes(header[2:4], "big") + 2
    if not MIN_FRAME_LEN <= total <= MAX_FRAME_LEN:
        raise FrameError("bad length", f"length field {total - 2} outside {MIN_FRAME_LEN - 2}..{MAX_FRAME_LEN - 2}")
    return total


def build_frame(
    command: int,
    source: int,
    frame_type: int,
    payload: bytes,
    terminal: int = 0,
    record_number: int = 0,
) -> bytes:
    """Wrap ``payload`` into a complete frame with length, trailer and checksum."""
    length = HEADER_LEN + len(payload) + TRAILER_LEN - 2
    body = b"".join(
        (
            START,
            length.to_bytes(2, "big"),
            terminal.to_bytes(4, "big"),
            bytes((command, source, frame_type)),
            payload,
            record_number.to_bytes(4, "big"),
            bytes((END_MARKER,)),
        )
    )
    return body + checksum(body).to_bytes(4, "big")


def parse_envelope(frame: bytes) -> Envelope:
    """Verify a frame's start, length field, end marker and checksum.

    :raises FrameError: naming the first fault found.
    """
    total = frame_length(frame[:4])
    if len(frame) < total:
        raise FrameError("truncated", f"length field says {total} bytes, got {len(frame)}")
    if len(frame) > total:
        raise FrameError("bad length", f"length field says {total} bytes, got {len(frame)}")
    end_at = total - 5
    if frame[end_at] != END_MARKER:
        raise FrameError("bad end marker", f"expected 0x68 at offset {end_at}, got 0x{frame[end_at]:02X}")
    stated = int.from_bytes(frame[-2:], "big")
    computed = checksum(frame[:-4])
    if stated != computed:
        raise FrameError("bad checksum", f"frame says 0x{stated:04X}, computed 0x{computed:04X}")
    return Envelope(
        command=frame[8],
        source=frame[9],
        frame_type=frame[10],
        payload=frame[HEADER_LEN : total - TRAILER_LEN],
        terminal=int.from_bytes(frame[4:8], "big"),
        record_number=int.from_bytes(frame[end_at - 4 : end_at], "big"),
    )


# --- requests ----------------------------------------------------------------------------------------------


def read_all_request(source: Source = Source.PC) -> bytes:
    """The read-all request: command 0x06, register 0x00 (all)."""
    return build_frame(Command.READ_ALL, source, FrameType.REQUEST, b"\x00")


# --- replies -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JkNwReply:
    """A decoded read-all reply: header fields and every tagged field, by name, in wire order.

    Cell voltages are in V, temperatures in °C, current in A (+ charging), as :data:`TAGS` names them.
    The settings password (tag 0xB2) is a :class:`~gateway.secret.Secret` and never printed.
    """

    fields: Mapping[str, FieldValue]
    command: int = Command.READ_ALL
    source: int = Source.BMS
    frame_type: int = FrameType.REPLY
    terminal: int = 0
    record_number: int = 0

    def __getitem__(self, name: str) -> FieldValue:
        return self.fields[name]

    def get_number(self, name: str) -> int | float | None:
        value = self.fields.get(name)
        return value if isinstance(value, int | float) else None

    def get_text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value if isinstance(value, str) else None

    @property
    def protocol_version_stated(self) -> bool:
        """Whether the reply carried tag 0xC0; without it the current was read as :data:`DEFAULT_PROTOCOL_VERSION`."""
        return "protocol_version" in self.fields

    @property
    def protocol_version(self) -> int:
        """The version the current (tag 0x84) was decoded with: tag 0xC0, else :data:`DEFAULT_PROTOCOL_VERSION`."""
        value = self.fields.get("protocol_version", DEFAULT_PROTOCOL_VERSION)
        assert isinstance(value, int)
        return value


def current_from_raw(raw: int, protocol_version: int) -> float:
    """Tag 0x84 in A (+ charging). Version 1: bit 15 = charging, bits 0–14 in 10 mA. Version 0: offset 10000."""
    if protocol_version == 0:
        return round((10000 - raw) / 100, 2)
    magnitude = (raw & 0x7FFF) / 100
    return magnitude if raw & 0x8000 or not magnitude else -magnitude


def current_to_raw(current_a: float, protocol_version: int) -> int:
    """Inverse of :func:`current_from_raw`."""
    centiamps = round(current_a * 100)
    if protocol_version == 0:
        raw = 10000 - centiamps
        if not 0 <= raw <= 0xFFFF:
            raise ValueError(f"current {current_a} A out of range for protocol version 0")
        return raw
    if abs(centiamps) > 0x7FFF:
        raise ValueError(f"current {current_a} A out of range for protocol version 1")
    return (0x8000 | centiamps) if centiamps > 0 else -centiamps


def _decode_cells(payload: bytes, offset: int) -> tuple[tuple[float, ...], int]:
    """Tag 0x79 at ``payload[offset]``: returns the cell voltages (V) and the offset after the field."""
    if offset + 1 >= len(payload):
        raise FrameError("truncated", f"tag 0x79 at offset {HEADER_LEN + offset} has no length byte")
    size = payload[offset + 1]
    start = offset + 2
    if size % 3:
        raise FrameError("bad cell block", f"length {size} at offset {HEADER_LEN + offset} is not a multiple of 3")
    if start + size > len(payload):
        raise FrameError("truncated", f"tag 0x79 at offset {HEADER_LEN + offset} needs {size} bytes")
    count = size // 3
    cells: list[float | None] = [None] * count
    for i in range(count):
        number, millivolts = struct.unpack_from(">BH", payload, start + 3 * i)
        if not 1 <= number <= count or cells[number - 1] is not None:
            raise FrameError("bad cell number", f"cell {number} at offset {HEADER_LEN + start + 3 * i}")
        cells[number - 1] = millivolts / 1000
    return tuple(c for c in cells if c is not None), start + size


def decode_payload(payload: bytes) -> dict[str, FieldValue]:
    """Walk the tagged fields of a reply payload. Current is left raw (see :func:`decode_reply`)."""
    fields: dict[str, FieldValue] = {}
    offset = 0
    while offset < len(payload):
        tag = payload[offset]
        if tag == CELLS_TAG:
            if CELLS_NAME in fields:
                raise FrameError("duplicate tag", f"tag 0x79 at offset {HEADER_LEN + offset}")
            fields[CELLS_NAME], offset = _decode_cells(payload, offset)
            continue
        spec = TAGS.get(tag)
        if spec is None:
            raise FrameError("unknown tag", f"0x{tag:02X} at offset {HEADER_LEN + offset}")
        end = offset + 1 + spec.length
        if end > len(payload):
            raise FrameError("truncated", f"tag 0x{tag:02X} at offset {HEADER_LEN + offset} needs {spec.length} bytes")
        if spec.name in fields:
            raise FrameError("duplicate tag", f"tag 0x{tag:02X} at offset {HEADER_LEN + offset}")
        fields[spec.name] = spec.kind.decode(payload[offset + 1 : end])
        offset = end
    return fields


def decode_reply(frame: bytes) -> JkNwReply:
    """Decode a complete read-all reply.

    :raises FrameError: bad start, bad length, truncated, bad end marker, bad checksum, not a reply,
        unknown tag (at offset N), unsupported protocol version, or a malformed field.
    """
    envelope = parse_envelope(frame)
    if envelope.frame_type != FrameType.REPLY:
        raise FrameError("not a reply", f"frame type 0x{envelope.frame_type:02X}")
    fields = decode_payload(envelope.payload)
    version = fields.get("protocol_version", DEFAULT_PROTOCOL_VERSION)
    assert isinstance(version, int)
    if version not in KNOWN_PROTOCOL_VERSIONS:
        # The version decides what the current field means: never guess it.
        known = ", ".join(str(v) for v in sorted(KNOWN_PROTOCOL_VERSIONS))
        raise FrameError("unsupported protocol version", f"tag 0xC0 says {version}, known: {known}")
    raw_current = fields.get(CURRENT_NAME)
    if isinstance(raw_current, int):
        fields[CURRENT_NAME] = current_from_raw(raw_current, version)
    return JkNwReply(
        fields=MappingProxyType(fields),
        command=envelope.command,
        source=envelope.source,
        frame_type=envelope.frame_type,
        terminal=envelope.terminal,
        record_number=envelope.record_number,
    )


def encode_payload(fields: Mapping[str, FieldValue]) -> bytes:
    """Tagged fields in the order of ``fields``; the inverse of :func:`decode_payload` after current decoding."""
    version = fields.get("protocol_version", DEFAULT_PROTOCOL_VERSION)
    assert isinstance(version, int)
    parts: list[bytes] = []
    for name, value in fields.items():
        if name == CELLS_NAME:
            assert isinstance(value, tuple)
            cells = b"".join(struct.pack(">BH", i + 1, round(v * 1000)) for i, v in enumerate(value))
            parts.append(bytes((CELLS_TAG, len(cells))) + cells)
            continue
        tag = TAG_BY_NAME[name]
        spec = TAGS[tag]
        if name == CURRENT_NAME:
            assert isinstance(value, int | float)
            value = current_to_raw(value, version)
        parts.append(bytes((tag,)) + spec.kind.encode(value, spec.length))
    return b"".join(parts)


def encode_reply(reply: JkNwReply) -> bytes:
    """A complete reply frame for ``reply`` (the simulator's side)."""
    return build_frame(
        reply.command,
        reply.source,
        reply.frame_type,
        encode_payload(reply.fields),
        terminal=reply.terminal,
        record_number=reply.record_number,
    )


# --- to and from the domain model ---------------------------------------------------------------------------


def _bit(mask: int, bit: int) -> bool:
    return bool(mask & bit)


def alarms_from_warnings(warnings: int) -> frozenset[Alarm]:
    return frozenset(alarm for bit, alarm in WARNING_BITS.items() if warnings >> bit & 1)


def warnings_from_alarms(alarms: frozenset[Alarm]) -> int:
    return sum(1 << bit for bit, alarm in WARNING_BITS.items() if alarm in alarms)


def _required(reply: JkNwReply, name: str) -> int | float:
    value = reply.get_number(name)
    if value is None:
        raise FrameError("missing field", f"reply has no tag 0x{TAG_BY_NAME[name]:02X} ({name})")
    return value


def _optional_float(reply: JkNwReply, name: str) -> float | None:
    value = reply.get_number(name)
    return None if value is None else float(value)


def to_reading(reply: JkNwReply, measured_at_s: float, pack_id: str) -> PackReading:
    """Map a decoded reply onto the shared model, stamped with the monotonic time of the reply.

    :raises FrameError: a field the model requires is missing from the reply.
    """
    cells = reply.fields.get(CELLS_NAME)
    if not isinstance(cells, tuple) or not cells:
        raise FrameError("missing field", "reply has no cell voltages (tag 0x79)")
    status = int(_required(reply, "status"))
    sensor_count = int(reply.get_number("temperature_sensor_count") or 0)
    temperatures = tuple(
        _optional_float(reply, name) if index < sensor_count else None
        for index, name in enumerate(TEMPERATURE_SENSOR_NAMES)
    )
    runtime_min = reply.get_number("runtime_min")
    state = BatteryState(
        measured_at_s=measured_at_s,
        cell_voltages_v=cells,
        pack_voltage_v=float(_required(reply, "pack_voltage_v")),
        current_a=float(_required(reply, CURRENT_NAME)),
        soc_pct=float(_required(reply, "soc_pct")),
        cycle_count=_int_or_none(reply.get_number("cycle_count")),
        cycle_capacity_ah=_optional_float(reply, "cycle_capacity_ah"),
        mos_temperature_c=_optional_float(reply, "mos_temperature_c"),
        battery_temperatures_c=temperatures,
        charge_mos_on=_bit(status, STATUS_CHARGE_MOS),
        discharge_mos_on=_bit(status, STATUS_DISCHARGE_MOS),
        balancer_on=_bit(status, STATUS_BALANCER),
        alarms=alarms_from_warnings(int(reply.get_number("warnings") or 0)),
        runtime_s=None if runtime_min is None else float(runtime_min) * 60,
    )
    battery_type = reply.get_number("battery_type")
    capacity = reply.get_number("capacity_ah")
    settings = ProtectionSettings(
        measured_at_s=measured_at_s,
        cell_count=int(reply.get_number("cell_count_setting") or len(cells)),
        capacity_ah=None if capacity is None else float(capacity),
        battery_type=None if battery_type is None else BATTERY_TYPES.get(int(battery_type)),
        cell_ovp_v=float(_required(reply, "cell_ovp_v")),
        cell_ovpr_v=float(_required(reply, "cell_ovpr_v")),
        cell_uvp_v=float(_required(reply, "cell_uvp_v")),
        cell_uvpr_v=float(_required(reply, "cell_uvpr_v")),
        max_charge_current_a=float(_required(reply, "max_charge_current_a")),
        max_discharge_current_a=float(_required(reply, "max_discharge_current_a")),
        pack_ovp_v=_optional_float(reply, "pack_ovp_v"),
        pack_uvp_v=_optional_float(reply, "pack_uvp_v"),
        cell_ovp_delay_s=_optional_float(reply, "cell_ovp_delay_s"),
        cell_uvp_delay_s=_optional_float(reply, "cell_uvp_delay_s"),
        cell_delta_protect_v=_optional_float(reply, "cell_delta_protect_v"),
        charge_ocp_delay_s=_optional_float(reply, "charge_ocp_delay_s"),
        discharge_ocp_delay_s=_optional_float(reply, "discharge_ocp_delay_s"),
        balance_start_v=_optional_float(reply, "balance_start_v"),
        balance_trigger_v=_optional_float(reply, "balance_trigger_v"),
        balancer_enabled=_bool_or_none(reply.get_number("balancer_switch")),
        charge_otp_c=_optional_float(reply, "charge_otp_c"),
        discharge_otp_c=_optional_float(reply, "discharge_otp_c"),
        charge_utp_c=_optional_float(reply, "charge_utp_c"),
        charge_utpr_c=_optional_float(reply, "charge_utpr_c"),
        discharge_utp_c=_optional_float(reply, "discharge_utp_c"),
        discharge_utpr_c=_optional_float(reply, "discharge_utpr_c"),
        mos_otp_c=_optional_float(reply, "mos_otp_c"),
        mos_otpr_c=_optional_float(reply, "mos_otpr_c"),
        box_otp_c=_optional_float(reply, "box_otp_c"),
        box_otpr_c=_optional_float(reply, "box_otpr_c"),
        charge_mos_switch=_bool_or_none(reply.get_number("charge_mos_switch")),
        discharge_mos_switch=_bool_or_none(reply.get_number("discharge_mos_switch")),
    )
    device = DeviceInfo(
        model=reply.get_text("manufacturer"),
        software_version=reply.get_text("software_version"),
        manufacture_date=reply.get_text("manufacture_date"),
    )
    return PackReading(pack_id=pack_id, state=state, settings=settings, device=device)


CHEMISTRY_CODES: Final[Mapping[Chemistry, int]] = MappingProxyType({v: k for k, v in BATTERY_TYPES.items()})

SIMULATOR_EXTRAS: Final[Mapping[str, FieldValue]] = MappingProxyType(
    {
        "temperature_delta_protect_c": 20,
        "current_calibration_ma": 1000,
        "board_address": 1,
        "sleep_wait_s": 10,
        "low_soc_alarm_pct": 20,
        "password": Secret("123456"),
        "dedicated_charger_switch": 0,
        "device_id": "bmsgw-sm",
        "start_current_calibration": 0,
        "actual_capacity_ah": 0,
        "protocol_version": SIMULATOR_PROTOCOL_VERSION,
    }
)
"""Values for tags the domain model does not hold, used when the simulator builds a reply."""


def from_reading(reading: PackReading, extras: Mapping[str, FieldValue] = SIMULATOR_EXTRAS) -> JkNwReply:
    """The reply a JK BMS would send for ``reading``; the inverse of :func:`to_reading`.

    Tags come in wire order. Values the model does not hold come from ``extras``; a setting that is
    ``None`` in the model is sent as 0.
    """
    state, settings, device = reading.state, reading.settings, reading.device
    fitted = 0
    for temperature in state.battery_temperatures_c:
        if temperature is None:
            break
        fitted += 1
    temperatures = [t or 0.0 for t in state.battery_temperatures_c[:2]]
    temperatures += [0.0] * (2 - len(temperatures))
    status = (
        (STATUS_CHARGE_MOS if state.charge_mos_on else 0)
        | (STATUS_DISCHARGE_MOS if state.discharge_mos_on else 0)
        | (STATUS_BALANCER if state.balancer_on else 0)
    )
    known: dict[str, FieldValue | bool | None] = {
        CELLS_NAME: tuple(state.cell_voltages_v),
        "mos_temperature_c": state.mos_temperature_c,
        "temperature_1_c": temperatures[0],
        "temperature_2_c": temperatures[1],
        "pack_voltage_v": state.pack_voltage_v,
        CURRENT_NAME: state.current_a,
        "soc_pct": round(state.soc_pct),
        "temperature_sensor_count": fitted,
        "cycle_count": state.cycle_count,
        "cycle_capacity_ah": state.cycle_capacity_ah,
        "cell_count": state.cell_count,
        "warnings": warnings_from_alarms(state.alarms),
        "status": status,
        "balancer_switch": settings.balancer_enabled,
        "cell_count_setting": settings.cell_count,
        "capacity_ah": settings.capacity_ah,
        "battery_type": None if settings.battery_type is None else CHEMISTRY_CODES[settings.battery_type],
        "charge_mos_switch": settings.charge_mos_switch,
        "discharge_mos_switch": settings.discharge_mos_switch,
        "manufacture_date": device.manufacture_date or "2401",
        "runtime_min": None if state.runtime_s is None else state.runtime_s // 60,
        "software_version": device.software_version or "SIM_S11.26",
        "manufacturer": device.model or "bms-gateway simulator",
    }
    fields: dict[str, FieldValue] = {}
    for name in (CELLS_NAME, *TAG_BY_NAME):
        if name in known:
            value = known[name]
        elif name in extras:
            value = extras[name]
        else:
            value = getattr(settings, name, None)
        if isinstance(value, bool):
            value = int(value)
        fields[name] = 0 if value is None else value
    return JkNwReply(fields=MappingProxyType(fields))


def _int_or_none(value: int | float | None) -> int | None:
    return None if value is None else int(value)


def _bool_or_none(value: int | float | None) -> bool | None:
    return None if value is None else bool(value)


class _JkNwFramer:
    """Frame boundaries for :class:`~gateway.transport.serial_link.SerialLink`."""

    start = START
    header_len = 4

    def frame_length(self, header: bytes) -> int:
        return frame_length(header)


FRAMER: Final = _JkNwFramer()
