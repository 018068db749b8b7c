"""The JK-PB inverter BMS on RS485, as pure functions: Modbus RTU register blocks and 300-byte trigger frames.

Three register blocks, each described once by a table (:data:`LIVE`, :data:`SETTINGS`, :data:`INFO`): byte
offset, type, name (with its unit) and divisor of every field. The same table serves both ways in which a
JK-PB hands its data over:

* **Modbus RTU, FC 0x03.** The register address is the block base plus the **byte** offset of the official
  table, the quantity counts 16-bit words, and the reply carries ``2 × quantity`` bytes taken contiguously
  from that byte offset (so a read at 0x1278 starts with the byte at live offset 0x78). Big-endian: a u32 is
  high word first. :func:`image_from_registers` turns replies into a :class:`BlockImage` of the block's
  bytes; :func:`read_plan` says which reads (at most :data:`MAX_READ_WORDS` words each) fetch given fields.
* **Trigger frames.** An FC 0x10 write of the value 0 to one trigger register (:func:`trigger_request`)
  makes the BMS send a 300-byte frame ``55 AA EB 90 type 00 data… checksum``, then ``00``, the FC 0x10
  acknowledgement and ``00``. The data is the block's bytes from offset 0, **little-endian**; byte 299 is
  the sum of bytes 0–298 mod 256. The frame names no unit: the acknowledgement does
  (:func:`scan_trigger_reply`). These writes change nothing in the BMS: they are reads.

A field made of single bytes (``u8``, ``i8``) sits at the same byte offset in both byte orders; wider
numbers are read in the image's byte order. Passcode fields are :attr:`Kind.SECRET`: their bytes are zeroed
as soon as an image is made (:func:`image_from_registers`, :func:`parse_frame`) and never decoded, so no
passcode reaches the model or a log. The one exception is the settings passcode
(:data:`SETTINGS_PASSCODE_NAME`), which opt-in control compares: it is lifted out of the bytes, before they
are zeroed, into :attr:`BlockImage.settings_passcode`, a :class:`~gateway.secret.Secret`. Facts and sources:
``shared/protocols/jk_bms.md``, family 2.

Nothing here does I/O. Every malformed input from a wire raises :class:`~gateway.errors.FrameError`; a
value that does not fit its field when encoding (the simulator's side) raises :class:`ValueError`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.alarms import PB_ALARM_BITS
from gateway.errors import FrameError
from gateway.model import Alarm, BatteryState, DeviceInfo, PackReading, ProtectionSettings
from gateway.secret import Secret

ByteOrder = Literal["big", "little"]
Value = int | float | str | Secret | tuple[int | float, ...]
"""A decoded field: a number (int when the divisor is 1), a tuple for an array field, text."""

BLOCK_SIZE: Final = 0x200
"""Bytes of address space per block: each block's base is 0x200 above the previous one."""
MAX_READ_WORDS: Final = 64
"""Most words one FC03 read asks for: about 40 is known to work and 128 to fail; 64 is safe in practice."""
MAX_GAP_WORDS: Final = 24
"""Unwanted words a read may span to join two wanted ranges: at 115200 baud 24 words (4 ms) cost less than
the turnaround of a second request."""

READ_HOLDING_REGISTERS: Final = 0x03
WRITE_MULTIPLE_REGISTERS: Final = 0x10

FRAME_START: Final = b"\x55\xaa\xeb\x90"
FRAME_LEN: Final = 300
FRAME_DATA_AT: Final = 6
"""Frame byte of block offset 0 (after start marker, frame type and one more byte)."""
FRAME_DATA_LEN: Final = FRAME_LEN - FRAME_DATA_AT - 1
"""Block bytes a frame carries: everything up to the checksum byte (offsets 0x000–0x124)."""
TRIGGER_ACK_LEN: Final = 8


# --- the tables --------------------------------------------------------------------------------------------


class Kind(enum.Enum):
    """How a field's bytes make a value."""

    U8 = "u8"
    I8 = "i8"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    TEXT = "text"
    """ASCII, NUL-padded."""
    SECRET = "secret"
    """A passcode: never decoded, zeroed on arrival."""


_WIDTH: Final[Mapping[Kind, int]] = MappingProxyType(
    {Kind.U8: 1, Kind.I8: 1, Kind.U16: 2, Kind.I16: 2, Kind.U32: 4, Kind.I32: 4}
)
_SIGNED: Final = frozenset({Kind.I8, Kind.I16, Kind.I32})


@dataclass(frozen=True, slots=True)
class Field:
    """One entry of a block table."""

    offset: int
    """Byte offset in the block (the official table's offset)."""
    kind: Kind
    name: str
    """Name of the decoded value, with its unit (``pack_voltage_v``)."""
    divisor: int = 1
    """Decoded value = raw / divisor (1000: mV → V; 10: 0.1 °C → °C)."""
    count: int = 1
    """Elements of an array field (cells), each ``width`` bytes, decoded as a tuple."""
    length: int = 0
    """Bytes of a text or secret field."""

    @property
    def width(self) -> int:
        """Bytes of one element (of the whole field for text)."""
        return _WIDTH.get(self.kind, self.length)

    @property
    def size(self) -> int:
        """Bytes the field occupies."""
        return self.width * self.count

    @property
    def end(self) -> int:
        return self.offset + self.size


def _num(offset: int, kind: Kind, name: str, divisor: int = 1, count: int = 1) -> Field:
    return Field(offset, kind, name, divisor, count)


def _text(offset: int, length: int, name: str) -> Field:
    return Field(offset, Kind.TEXT, name, length=length)


def _secret(offset: int, length: int, name: str) -> Field:
    return Field(offset, Kind.SECRET, name, length=length)


@dataclass(frozen=True, slots=True)
class Block:
    """A register block: where it lives, what it holds, and how to have it sent as a trigger frame."""

    name: str
    base: int
    """Modbus address of byte offset 0."""
    fields: tuple[Field, ...] = dataclasses.field(repr=False)
    trigger: int
    """Register whose FC16 write makes the BMS send this block as a 300-byte frame."""
    frame_type: int
    """Byte 4 of that frame."""
    size: int = BLOCK_SIZE
    by_name: Mapping[str, Field] = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Checked once at import, so a typo in a table cannot decode two values from the same bytes.
        by_name: dict[str, Field] = {}
        last: Field | None = None
        for spec in sorted(self.fields, key=lambda f: f.offset):
            if spec.name in by_name:
                raise ValueError(f"{self.name} block: field {spec.name} defined twice")
            if spec.size <= 0 or spec.end > self.size:
                raise ValueError(f"{self.name} block: field {spec.name} does not fit the block")
            if last is not None and spec.offset < last.end:
                raise ValueError(f"{self.name} block: fields {last.name} and {spec.name} overlap")
            by_name[spec.name] = spec
            last = spec
        object.__setattr__(self, "by_name", MappingProxyType(by_name))

    def address(self, name: str) -> int:
        """Modbus address of field ``name``."""
        return self.base + self.by_name[name].offset


_U8, _I8, _U16, _I16, _U32, _I32 = Kind.U8, Kind.I8, Kind.U16, Kind.I16, Kind.U32, Kind.I32
MAX_CELLS: Final = 32
TEMPERATURE_SENSORS: Final = 5
"""Battery temperature sensors T1–T5 (T3 from protocol V1.1)."""

LIVE: Final = Block(
    "live",
    0x1200,
    (
        _num(0x00, _U16, "cell_voltages_v", 1000, count=MAX_CELLS),
        _num(0x40, _U32, "cell_present_bitmap"),
        _num(0x44, _U16, "average_cell_v", 1000),
        _num(0x46, _U16, "cell_delta_v", 1000),
        _num(0x48, _U8, "max_cell_index"),
        _num(0x49, _U8, "min_cell_index"),
        _num(0x4A, _U16, "wire_resistances_ohm", 1000, count=MAX_CELLS),
        _num(0x8A, _I16, "mos_temperature_c", 10),
        _num(0x8C, _U32, "wire_resistance_alarm_bitmap"),
        _num(0x90, _U32, "pack_voltage_v", 1000),
        _num(0x94, _U32, "power_w", 1000),  # magnitude; the sign is the current's
        _num(0x98, _I32, "current_a", 1000),  # + charging
        _num(0x9C, _I16, "temperature_1_c", 10),
        _num(0x9E, _I16, "temperature_2_c", 10),
        _num(0xA0, _U32, "alarm_bitmap"),
        _num(0xA4, _I16, "balance_current_a", 1000),
        _num(0xA6, _U8, "balance_state"),  # 0 off, 1 charging cells, 2 discharging cells
        _num(0xA7, _U8, "soc_pct"),
        _num(0xA8, _I32, "remaining_capacity_ah", 1000),
        _num(0xAC, _U32, "full_charge_capacity_ah", 1000),
        _num(0xB0, _U32, "cycle_count"),
        _num(0xB4, _U32, "cycle_capacity_ah", 1000),
        _num(0xB8, _U8, "soh_pct"),
        _num(0xB9, _U8, "precharge_on"),
        _num(0xBA, _U16, "user_alarm"),
        _num(0xBC, _U32, "runtime_s"),
        _num(0xC0, _U8, "charge_mos_on"),
        _num(0xC1, _U8, "discharge_mos_on"),
        _num(0xC2, _U16, "user_alarm_2"),
        _num(0xD0, _U8, "temperature_sensor_bits"),  # bit 0 MOS, bits 1–5 T1–T5; 1 = fitted
        _num(0xD1, _U8, "heating_on"),
        _num(0xE4, _U16, "pack_voltage_2_v", 100),
        _num(0xE6, _I16, "heater_current_a", 1000),
        _num(0xEF, _U8, "charger_plugged"),
        _num(0xF0, _U32, "system_ticks_s", 10),
        _num(0xF8, _I16, "temperature_3_c", 10),
        _num(0xFA, _I16, "temperature_4_c", 10),
        _num(0xFC, _I16, "temperature_5_c", 10),
        _num(0x100, _U32, "rtc_s"),  # since 2020-01-01
        _num(0x108, _U32, "time_to_sleep_s"),
    ),
    trigger=0x1620,
    frame_type=0x02,
)

SETTINGS: Final = Block(
    "settings",
    0x1000,
    (
        _num(0x00, _U32, "smart_sleep_v", 1000),
        _num(0x04, _U32, "cell_uvp_v", 1000),
        _num(0x08, _U32, "cell_uvpr_v", 1000),
        _num(0x0C, _U32, "cell_ovp_v", 1000),
        _num(0x10, _U32, "cell_ovpr_v", 1000),
        _num(0x14, _U32, "balance_trigger_v", 1000),
        _num(0x18, _U32, "soc_100_v", 1000),
        _num(0x1C, _U32, "soc_0_v", 1000),
        _num(0x20, _U32, "request_charge_v", 1000),
        _num(0x24, _U32, "request_float_v", 1000),
        _num(0x28, _U32, "power_off_v", 1000),
        _num(0x2C, _U32, "max_charge_current_a", 1000),
        _num(0x30, _U32, "charge_ocp_delay_s"),
        _num(0x34, _U32, "charge_ocp_recovery_s"),
        _num(0x38, _U32, "max_discharge_current_a", 1000),
        _num(0x3C, _U32, "discharge_ocp_delay_s"),
        _num(0x40, _U32, "discharge_ocp_recovery_s"),
        _num(0x44, _U32, "scp_recovery_s"),
        _num(0x48, _U32, "max_balance_current_a", 1000),
        _num(0x4C, _I32, "charge_otp_c", 10),
        _num(0x50, _I32, "charge_otpr_c", 10),
        _num(0x54, _I32, "discharge_otp_c", 10),
        _num(0x58, _I32, "discharge_otpr_c", 10),
        _num(0x5C, _I32, "charge_utp_c", 10),
        _num(0x60, _I32, "charge_utpr_c", 10),
        _num(0x64, _I32, "mos_otp_c", 10),
        _num(0x68, _I32, "mos_otpr_c", 10),
        _num(0x6C, _U32, "cell_count"),
        _num(0x70, _U32, "charge_switch"),
        _num(0x74, _U32, "discharge_switch"),
        _num(0x78, _U32, "balancer_switch"),
        _num(0x7C, _U32, "capacity_ah", 1000),
        _num(0x80, _U32, "scp_delay_us"),
        _num(0x84, _U32, "balance_start_v", 1000),
        _num(0x108, _U32, "device_address"),
        _num(0x10C, _U32, "precharge_time_s"),
        _num(0x114, _U16, "control_bits"),
        _num(0x116, _I8, "heating_start_c"),
        _num(0x117, _I8, "heating_stop_c"),
        _num(0x118, _U8, "smart_sleep_h"),
        _num(0x119, _U8, "data_field_control"),
    ),
    trigger=0x161E,
    frame_type=0x01,
)

INFO: Final = Block(
    "info",
    0x1400,
    (
        _text(0x00, 16, "model"),
        _text(0x10, 8, "hardware_version"),
        _text(0x18, 8, "software_version"),
        _num(0x20, _U32, "info_runtime_s"),
        _num(0x24, _U32, "power_on_count"),
        _text(0x28, 16, "device_name"),  # user-set; the notes call it the serial number (see DeviceInfo mapping)
        _secret(0x38, 16, "device_passcode"),
        _text(0x48, 8, "manufacture_date"),  # YYMMDD
        _text(0x50, 11, "serial_number"),
        _secret(0x5B, 5, "passcode"),
        _text(0x60, 16, "user_data"),
        _secret(0x70, 16, "setup_passcode"),
        _text(0x80, 16, "user_data_2"),
    ),
    trigger=0x161C,
    frame_type=0x03,
)

SETTINGS_PASSCODE_NAME: Final = "setup_passcode"
"""The info field holding the settings password, the one the JK app asks for before a setting changes (the
wired protocol's tag 0xB2, "parameter password", factory ``123456``): info offset 0x70, 16 bytes of
NUL-padded text, Modbus 0x1470. The only passcode the gateway keeps (as a Secret), for control's comparison.

**[unverified]** which of the three info passcodes is the settings password is not documented. This one is
the best supported: devices report ``Setup passcode: 123456`` beside ``Device passcode: 1234`` (the Bluetooth
pairing PIN) and an empty or ``0000`` ``Passcode`` (syssi/esphome-jk-bms PR #759, a JK_B2A25SRP;
tmkasun/solar-hybrid-inverter-monitor issue #3, a JK-B1A20S15P), 123456 being JK's factory settings password
(syssi/esphome-jk-bms issue #682, on a JK_PB2A16S15P); syssi/esphome-jk-bms ``esp32-jk-pb-modbus-example.yaml``
reads 0x1470 as the pack's "password"; our two real captures carry a user-set value there
(``tests/data/jk_pb_frames.json``) and the factory 1234 in the device passcode. Correct it here once a capture
of the JK app settles it."""

SETTINGS_PASSCODE: Final = INFO.by_name[SETTINGS_PASSCODE_NAME]
assert SETTINGS_PASSCODE.kind is Kind.SECRET  # zeroed in every image; only lifted out as a Secret


def check_settings_passcode(password: Secret) -> None:
    """Whether ``password`` could be a JK-PB's settings passcode (latin-1, at most 16 bytes): one that cannot
    would never match. :raises ValueError: it cannot (the message does not show it)."""
    try:
        raw = password.reveal().encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("the password has a character a JK-PB cannot store") from None
    if len(raw) > SETTINGS_PASSCODE.length:
        raise ValueError(f"the password is longer than the {SETTINGS_PASSCODE.length} characters a JK-PB stores")


COMMAND_BASE: Final = 0x1600
"""The write-only command block (calibration, shutdown, presets, ... and the trigger registers)."""

BLOCKS: Final = (SETTINGS, LIVE, INFO)
BLOCK_BY_FRAME_TYPE: Final[Mapping[int, Block]] = MappingProxyType({b.frame_type: b for b in BLOCKS})
BLOCK_BY_TRIGGER: Final[Mapping[int, Block]] = MappingProxyType({b.trigger: b for b in BLOCKS})
TRIGGER_REGISTERS: Final = frozenset(BLOCK_BY_TRIGGER)
"""The only registers the gateway ever writes (value 0, to ask for a frame)."""


def block_at(address: int) -> Block | None:
    """The block whose address range holds ``address``, if any."""
    for block in BLOCKS:
        if block.base <= address < block.base + block.size:
            return block
    return None


# --- images: a block's bytes as far as they were received ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockImage:
    """A block's bytes (``block.size`` of them) and which of them came from the BMS; secrets are zeroed."""

    block: Block
    data: bytes
    known: bytes
    """One byte per data byte: 1 if it was received."""
    byteorder: ByteOrder
    """``big`` from FC03 replies, ``little`` from trigger frames."""
    settings_passcode: Secret | None = None
    """The settings passcode (info block, :data:`SETTINGS_PASSCODE_NAME`) when all its bytes were received and
    it is not empty; its bytes in :attr:`data` are zeroed like every other passcode's."""

    def has(self, spec: Field) -> bool:
        return all(self.known[spec.offset : spec.end])


def _scrub(block: Block, data: bytearray, known: bytearray) -> Secret | None:
    """Zero every passcode in ``data``; return the settings passcode, if the bytes held it, as a Secret."""
    passcode: Secret | None = None
    for spec in block.fields:
        if spec.kind is not Kind.SECRET:
            continue
        if spec is SETTINGS_PASSCODE and all(known[spec.offset : spec.end]):
            text = bytes(data[spec.offset : spec.end]).split(b"\x00", 1)[0].decode("latin-1")
            passcode = Secret(text) if text else None  # all NUL: firmware without one
        data[spec.offset : spec.end] = bytes(spec.size)
        known[spec.offset : spec.end] = bytes(spec.size)
    return passcode


def image_from_registers(block: Block, reads: Iterable[tuple[int, Sequence[int]]]) -> BlockImage:
    """The image that FC03 replies make: each ``(address, words)`` puts ``2 × len(words)`` bytes at byte
    offset ``address − block.base``, big-endian. Later reads overwrite earlier ones where they overlap.

    :raises FrameError: a read outside the block, an empty read, or a value that is no 16-bit word.
    """
    data = bytearray(block.size)
    known = bytearray(block.size)
    for address, words in reads:
        offset = address - block.base
        if not words:
            raise FrameError("empty reply", f"no registers from 0x{address & 0xFFFF:04X}")
        end = offset + 2 * len(words)
        if offset < 0 or end > block.size:
            raise FrameError(
                "bad address",
                f"{len(words)} registers from 0x{address & 0xFFFF:04X} leave the {block.name} block"
                f" 0x{block.base:04X}–0x{block.base + block.size - 1:04X}",
            )
        for index, word in enumerate(words):
            if not isinstance(word, int) or not 0 <= word <= 0xFFFF:
                raise FrameError("bad register", f"word {index} of the read at 0x{address:04X} is not 16 bits")
            at = offset + 2 * index
            data[at : at + 2] = word.to_bytes(2, "big")
            known[at : at + 2] = b"\x01\x01"
    passcode = _scrub(block, data, known)
    return BlockImage(block, bytes(data), bytes(known), "big", passcode)


def registers_from_image(data: bytes, offset: int, count: int) -> list[int]:
    """The words an FC03 read of ``count`` words at byte ``offset`` returns from a big-endian block image.

    :raises ValueError: the read leaves the image.
    """
    if offset < 0 or count < 1 or offset + 2 * count > len(data):
        raise ValueError(f"{count} words at byte offset {offset} leave a {len(data)}-byte image")
    return [int.from_bytes(data[offset + 2 * i : offset + 2 * i + 2], "big") for i in range(count)]


def _decode_text(raw: bytes) -> str:
    text = raw.split(b"\x00", 1)[0].decode("latin-1")
    return "".join(c if c.isprintable() else "?" for c in text).strip()


def _decode_field(spec: Field, data: bytes, byteorder: ByteOrder) -> Value:
    if spec.kind is Kind.TEXT:
        return _decode_text(data[spec.offset : spec.end])
    signed = spec.kind in _SIGNED
    items: list[int | float] = []
    for index in range(spec.count):
        at = spec.offset + index * spec.width
        raw = int.from_bytes(data[at : at + spec.width], byteorder, signed=signed)
        items.append(raw if spec.divisor == 1 else raw / spec.divisor)
    return tuple(items) if spec.count > 1 else items[0]


def decode(image: BlockImage) -> Mapping[str, Value]:
    """Every field of the image's block whose bytes were all received, by name; never a secret."""
    return MappingProxyType(
        {
            spec.name: _decode_field(spec, image.data, image.byteorder)
            for spec in image.block.fields
            if spec.kind is not Kind.SECRET and image.has(spec)
        }
    )


def _encode_field(spec: Field, value: Value, out: bytearray, byteorder: ByteOrder) -> None:
    if spec.kind in (Kind.TEXT, Kind.SECRET):
        text = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(text, str):
            raise ValueError(f"{spec.name}: expected text")
        raw = text.encode("latin-1")
        if len(raw) > spec.length:
            raise ValueError(f"{spec.name}: {len(raw)} bytes do not fit {spec.length}")
        out[spec.offset : spec.end] = raw.ljust(spec.length, b"\x00")
        return
    items = value if isinstance(value, tuple) else (value,)
    if len(items) != spec.count or not all(isinstance(i, int | float) for i in items):
        raise ValueError(f"{spec.name}: expected {spec.count} number(s)")
    bits = 8 * spec.width
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if spec.kind in _SIGNED else (0, (1 << bits) - 1)
    for index, item in enumerate(items):
        assert isinstance(item, int | float)
        raw_value = round(item * spec.divisor)
        if not low <= raw_value <= high:
            raise ValueError(f"{spec.name}: {item} out of range for {spec.kind.value}")
        at = spec.offset + index * spec.width
        out[at : at + spec.width] = raw_value.to_bytes(spec.width, byteorder, signed=spec.kind in _SIGNED)


def encode_image(block: Block, values: Mapping[str, Value], byteorder: ByteOrder = "big") -> bytes:
    """The block's bytes holding ``values`` (fields not given are 0): what the simulator serves.

    :raises ValueError: an unknown name, or a value that does not fit its field.
    """
    out = bytearray(block.size)
    for name, value in values.items():
        spec = block.by_name.get(name)
        if spec is None:
            raise ValueError(f"{block.name} block has no field {name}")
        _encode_field(spec, value, out, byteorder)
    return bytes(out)


# --- the read plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    """One FC03 request."""

    address: int
    count: int
    """Words, at most :data:`MAX_READ_WORDS`."""


def read_plan(
    block: Block,
    names: Iterable[str],
    *,
    max_words: int = MAX_READ_WORDS,
    max_gap_words: int = MAX_GAP_WORDS,
) -> tuple[Read, ...]:
    """Reads of at most ``max_words`` each, at even byte offsets, that fetch the named fields.

    Neighbouring fields share a read when the words between them number at most ``max_gap_words``, unless
    a secret lies between them: passcodes are never asked for.

    :raises ValueError: an unknown or secret name, or a field longer than ``max_words``.
    """
    spans: list[tuple[int, int]] = []
    for name in names:
        spec = block.by_name.get(name)
        if spec is None or spec.kind is Kind.SECRET:
            raise ValueError(f"{block.name} block has no readable field {name}")
        start, end = spec.offset & ~1, (spec.end + 1) & ~1
        if end - start > 2 * max_words:
            raise ValueError(f"field {name} is longer than {max_words} words")
        spans.append((start, end))
    secrets = [(s.offset, s.end) for s in block.fields if s.kind is Kind.SECRET]
    chunks: list[list[int]] = []
    for start, end in sorted(spans):
        if chunks:
            chunk = chunks[-1]
            secret_between = any(s < start and e > chunk[1] for s, e in secrets)
            if end - chunk[0] <= 2 * max_words and start - chunk[1] <= 2 * max_gap_words and not secret_between:
                chunk[1] = max(chunk[1], end)
                continue
        chunks.append([start, end])
    return tuple(Read(block.base + start, (end - start) // 2) for start, end in chunks)


# --- trigger frames ----------------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (reflected polynomial 0xA001, initial 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def _check_unit(unit: int) -> None:
    if not 1 <= unit <= 247:
        raise ValueError(f"Modbus unit {unit} outside 1–247")


def trigger_request(unit: int, block: Block) -> bytes:
    """The 11-byte FC16 write of one word, 0, to ``block``'s trigger register."""
    _check_unit(unit)
    return with_crc(
        bytes((unit, WRITE_MULTIPLE_REGISTERS)) + block.trigger.to_bytes(2, "big") + b"\x00\x01\x02\x00\x00"
    )


def trigger_ack(unit: int, block: Block) -> bytes:
    """The 8-byte FC16 acknowledgement ``unit`` sends after ``block``'s frame."""
    _check_unit(unit)
    return with_crc(bytes((unit, WRITE_MULTIPLE_REGISTERS)) + block.trigger.to_bytes(2, "big") + b"\x00\x01")


def frame_checksum(frame: bytes) -> int:
    """Byte 299 of a trigger frame: the sum of bytes 0–298 mod 256."""
    return sum(frame[: FRAME_LEN - 1]) & 0xFF


def parse_frame(frame: bytes) -> BlockImage:
    """Verify a 300-byte trigger frame and return the (little-endian) image of the block it carries.

    :raises FrameError: bad length, bad start, bad checksum or an unknown frame type.
    """
    if len(frame) != FRAME_LEN:
        raise FrameError("bad length", f"{len(frame)} bytes, a trigger frame has {FRAME_LEN}")
    if frame[:4] != FRAME_START:
        raise FrameError("bad start", f"expected 55 AA EB 90, got {frame[:4].hex(' ').upper()}")
    computed = frame_checksum(frame)
    if frame[-1] != computed:
        raise FrameError("bad checksum", f"frame says 0x{frame[-1]:02X}, computed 0x{computed:02X}")
    block = BLOCK_BY_FRAME_TYPE.get(frame[4])
    if block is None:
        raise FrameError("unknown frame type", f"0x{frame[4]:02X}")
    data = bytearray(block.size)
    known = bytearray(block.size)
    data[:FRAME_DATA_LEN] = frame[FRAME_DATA_AT : FRAME_LEN - 1]
    known[:FRAME_DATA_LEN] = b"\x01" * FRAME_DATA_LEN
    passcode = _scrub(block, data, known)
    return BlockImage(block, bytes(data), bytes(known), "little", passcode)


def encode_frame(block: Block, values: Mapping[str, Value]) -> bytes:
    """The 300-byte frame a JK-PB sends for ``block`` holding ``values`` (the simulator's side)."""
    data = encode_image(block, values, "little")[:FRAME_DATA_LEN]
    body = FRAME_START + bytes((block.frame_type, 0)) + data
    return body + bytes((frame_checksum(body),))


def _ack_unit(data: bytes, block: Block) -> int | None:
    """The unit of the first valid FC16 acknowledgement for ``block``'s trigger register in ``data``."""
    tail = block.trigger.to_bytes(2, "big") + b"\x00\x01"
    at = data.find(bytes((WRITE_MULTIPLE_REGISTERS,)) + tail, 1)
    while at >= 1:
        candidate = data[at - 1 : at - 1 + TRIGGER_ACK_LEN]
        if len(candidate) == TRIGGER_ACK_LEN and with_crc(candidate[:6]) == candidate:
            return candidate[0]
        at = data.find(bytes((WRITE_MULTIPLE_REGISTERS,)) + tail, at + 1)
    return None


def scan_trigger_reply(buffer: bytes, unit: int, block: Block, *, final: bool = False) -> BlockImage | None:
    """Find ``block``'s frame and ``unit``'s acknowledgement in the bytes received since the trigger request.

    Bytes before a start marker (an adapter's echo of the request, noise) are skipped, and a marker that
    starts no valid frame is passed over. Returns None while the reply may still be incomplete; with
    ``final`` (no more bytes will come) it raises instead.

    :raises FrameError: the frame is bad (once its acknowledgement shows the reply is over), of the wrong
        type, acknowledged by another unit, or (``final``) missing, truncated or unacknowledged.
    """
    fault: FrameError | None = None
    search_from = 0
    while (start := buffer.find(FRAME_START, search_from)) >= 0:
        frame = buffer[start : start + FRAME_LEN]
        if len(frame) < FRAME_LEN:
            if final:
                raise fault or FrameError("truncated", f"{len(frame)} of {FRAME_LEN} frame bytes")
            return None
        try:
            image = parse_frame(frame)
            if image.block is not block:
                raise FrameError(
                    "wrong frame type", f"asked for {block.name} (0x{block.frame_type:02X}), got 0x{frame[4]:02X}"
                )
        except FrameError as exc:
            fault = fault or exc
            search_from = start + 1
            continue
        acked_by = _ack_unit(buffer[start + FRAME_LEN :], block)
        if acked_by is None:
            if final:
                raise FrameError("no acknowledgement", f"{block.name} frame without the FC16 reply naming its unit")
            return None
        if acked_by != unit:
            raise FrameError("wrong unit", f"{block.name} frame acknowledged by unit {acked_by}, asked unit {unit}")
        return image
    if fault is not None and (final or _ack_unit(buffer, block) is not None):
        raise fault
    if final:
        raise FrameError("no frame", f"{len(buffer)} bytes without a 55 AA EB 90 frame")
    return None


def is_permitted_request(frame: bytes) -> bool:
    """True for the only requests the gateway may send: an FC03 read, or the FC16 write of one word, 0, to a
    trigger register, each to one unit. Everything else (any other write above all) is refused before it
    reaches the wire, and so is any request to unit 0: that is the broadcast address, which every pack on the
    bus would obey without answering (Modbus over Serial Line V1.02 §2.2: 0 broadcast, 1–247 a unit,
    248–255 reserved)."""
    if len(frame) < 4 or with_crc(frame[:-2]) != frame:
        return False
    if not 1 <= frame[0] <= 247:
        return False
    if frame[1] == READ_HOLDING_REGISTERS:
        return len(frame) == 8
    if frame[1] == WRITE_MULTIPLE_REGISTERS:
        register = int.from_bytes(frame[2:4], "big")
        return len(frame) == 11 and register in TRIGGER_REGISTERS and frame[4:9] == b"\x00\x01\x02\x00\x00"
    return False


# --- to and from the domain model ---------------------------------------------------------------------------

LIVE_POLLED: Final = (
    "cell_voltages_v",
    "cell_present_bitmap",
    "mos_temperature_c",
    "pack_voltage_v",
    "current_a",
    "temperature_1_c",
    "temperature_2_c",
    "alarm_bitmap",
    "balance_current_a",
    "balance_state",
    "soc_pct",
    "remaining_capacity_ah",
    "cycle_count",
    "cycle_capacity_ah",
    "soh_pct",
    "runtime_s",
    "charge_mos_on",
    "discharge_mos_on",
    "temperature_sensor_bits",
    "temperature_3_c",
    "temperature_4_c",
    "temperature_5_c",
)
"""The live fields :func:`to_state` uses: what the driver reads every poll."""

_SETTINGS_TO_MODEL: Final[Mapping[str, str]] = MappingProxyType(
    {
        name: name
        for name in (
            "cell_count",
            "capacity_ah",
            "cell_ovp_v",
            "cell_ovpr_v",
            "cell_uvp_v",
            "cell_uvpr_v",
            "max_charge_current_a",
            "max_discharge_current_a",
            "power_off_v",
            "charge_ocp_delay_s",
            "charge_ocp_recovery_s",
            "discharge_ocp_delay_s",
            "discharge_ocp_recovery_s",
            "scp_recovery_s",
            "balance_start_v",
            "balance_trigger_v",
            "max_balance_current_a",
            "charge_otp_c",
            "charge_otpr_c",
            "discharge_otp_c",
            "discharge_otpr_c",
            "charge_utp_c",
            "charge_utpr_c",
            "mos_otp_c",
            "mos_otpr_c",
        )
    }
    | {
        "balancer_switch": "balancer_enabled",
        "charge_switch": "charge_mos_switch",
        "discharge_switch": "discharge_mos_switch",
    }
)
"""Settings field → :class:`ProtectionSettings` field."""
SETTINGS_POLLED: Final = tuple(_SETTINGS_TO_MODEL)
_SWITCHES: Final = frozenset({"balancer_switch", "charge_switch", "discharge_switch"})
_REQUIRED_SETTINGS: Final = (
    "cell_count",
    "cell_ovp_v",
    "cell_ovpr_v",
    "cell_uvp_v",
    "cell_uvpr_v",
    "max_charge_current_a",
    "max_discharge_current_a",
)
SETTINGS_NOT_CARRIED: Final = frozenset(
    f.name
    for f in dataclasses.fields(ProtectionSettings)
    if f.name not in _SETTINGS_TO_MODEL.values() and f.name != "measured_at_s"
)
""":class:`ProtectionSettings` fields a JK-PB does not report: always None from this codec."""

INFO_POLLED: Final = ("model", "hardware_version", "software_version", "manufacture_date", "serial_number")

SETTINGS_PASSCODE_READ: Final = Read(INFO.address(SETTINGS_PASSCODE_NAME), SETTINGS_PASSCODE.size // 2)
"""The FC03 read of the settings passcode (0x1470, 8 words): made only for opt-in control, never by a poll."""

POLL_PLAN: Final[Mapping[Block, tuple[Read, ...]]] = MappingProxyType(
    {
        LIVE: read_plan(LIVE, LIVE_POLLED),
        SETTINGS: read_plan(SETTINGS, SETTINGS_POLLED),
        INFO: read_plan(INFO, INFO_POLLED),
    }
)
"""What the driver reads of each block over FC03."""

_TEMPERATURE_NAMES: Final = tuple(f"temperature_{n}_c" for n in range(1, TEMPERATURE_SENSORS + 1))
MOS_SENSOR_BIT: Final = 1 << 0


def _number(values: Mapping[str, Value], name: str, block: Block) -> int | float:
    value = values.get(name)
    if not isinstance(value, int | float):
        raise FrameError("missing field", f"{block.name} block lacks {name} (0x{block.address(name):04X})")
    return value


def _optional(values: Mapping[str, Value], name: str) -> float | None:
    value = values.get(name)
    return float(value) if isinstance(value, int | float) else None


def _int(values: Mapping[str, Value], name: str, default: int) -> int:
    value = values.get(name)
    return int(value) if isinstance(value, int | float) else default


def alarms_from_bitmap(bitmap: int) -> frozenset[Alarm]:
    """Alarm bitmap (live 0xA0) → alarms; bits the protocol leaves undefined are ignored."""
    return frozenset(alarm for bit, alarm in PB_ALARM_BITS.items() if bitmap >> bit & 1)


def bitmap_from_alarms(alarms: Iterable[Alarm]) -> int:
    """Inverse of :func:`alarms_from_bitmap`; alarms without a JK-PB bit are dropped."""
    wanted = frozenset(alarms)
    return sum(1 << bit for bit, alarm in PB_ALARM_BITS.items() if alarm in wanted)


def to_state(live: Mapping[str, Value], measured_at_s: float) -> BatteryState:
    """Decoded live fields → the pack's state, stamped with the monotonic time of the reply.

    The cell count is the highest cell present in the bitmap; a cell missing below it keeps its slot.

    :raises FrameError: a field the model needs is missing, or no cell is present.
    """
    cells = live.get("cell_voltages_v")
    if not isinstance(cells, tuple):
        raise FrameError("missing field", f"live block lacks cell_voltages_v (0x{LIVE.base:04X})")
    count = int(_number(live, "cell_present_bitmap", LIVE)).bit_length()
    if count == 0:
        raise FrameError("no cells", "the cell-present bitmap (0x1240) is 0")
    sensors = _int(live, "temperature_sensor_bits", 0xFF)  # firmware without the bits: all fitted
    temperatures = [
        _optional(live, name) if sensors >> (index + 1) & 1 else None for index, name in enumerate(_TEMPERATURE_NAMES)
    ]
    while temperatures and temperatures[-1] is None:
        temperatures.pop()  # sensors the pack does not have, rather than sensors that failed
    return BatteryState(
        measured_at_s=measured_at_s,
        cell_voltages_v=tuple(float(v) for v in cells[:count]),
        pack_voltage_v=float(_number(live, "pack_voltage_v", LIVE)),
        current_a=float(_number(live, "current_a", LIVE)),
        soc_pct=float(_number(live, "soc_pct", LIVE)),
        soh_pct=_optional(live, "soh_pct"),
        remaining_capacity_ah=_optional(live, "remaining_capacity_ah"),
        cycle_count=None if "cycle_count" not in live else _int(live, "cycle_count", 0),
        cycle_capacity_ah=_optional(live, "cycle_capacity_ah"),
        mos_temperature_c=_optional(live, "mos_temperature_c") if sensors & MOS_SENSOR_BIT else None,
        battery_temperatures_c=tuple(temperatures),
        charge_mos_on=bool(_int(live, "charge_mos_on", 0)),
        discharge_mos_on=bool(_int(live, "discharge_mos_on", 0)),
        balancer_on=bool(_int(live, "balance_state", 0)),
        balance_current_a=_optional(live, "balance_current_a"),
        alarms=alarms_from_bitmap(_int(live, "alarm_bitmap", 0)),
        runtime_s=_optional(live, "runtime_s"),
    )


def to_settings(settings: Mapping[str, Value], measured_at_s: float) -> ProtectionSettings:
    """Decoded settings fields → protection settings; what a JK-PB lacks (:data:`SETTINGS_NOT_CARRIED`) is None.

    :raises FrameError: a setting the model requires is missing.
    """
    for name in _REQUIRED_SETTINGS:
        _number(settings, name, SETTINGS)
    values: dict[str, Any] = {}
    for name, model_name in _SETTINGS_TO_MODEL.items():
        value = _optional(settings, name)
        values[model_name] = bool(value) if name in _SWITCHES and value is not None else value
    values["cell_count"] = int(_number(settings, "cell_count", SETTINGS))
    return ProtectionSettings(measured_at_s=measured_at_s, battery_type=None, **values)


def to_device(info: Mapping[str, Value]) -> DeviceInfo:
    """Decoded info fields → what the BMS says about itself (empty text is None).

    ``serial_number`` is the factory serial at 0x50; the text at 0x28, which the research notes call the
    serial number, is a name the user can set (``device_name``), so it is not used as one.
    """

    def text(name: str) -> str | None:
        value = info.get(name)
        return value if isinstance(value, str) and value else None

    return DeviceInfo(
        model=text("model"),
        software_version=text("software_version"),
        hardware_version=text("hardware_version"),
        serial_number=text("serial_number"),
        manufacture_date=text("manufacture_date"),
    )


SIMULATOR_DEVICE: Final = DeviceInfo(
    model="JK_PB-SIMULATOR", hardware_version="15A", software_version="SIM15.41", manufacture_date="240101"
)
"""Device texts the simulator uses where the reading's do not fit the JK-PB fields."""
SIMULATOR_EXTRAS: Final[Mapping[str, Value]] = MappingProxyType(
    {
        "smart_sleep_v": 3.5,
        "soc_100_v": 3.45,
        "soc_0_v": 2.9,
        "request_charge_v": 3.45,
        "request_float_v": 3.35,
        "scp_delay_us": 1500,
        "control_bits": 0x0208,  # RS485 port, float mode
        "device_passcode": Secret("1234"),
        "setup_passcode": Secret("S1mPa55code"),
        "device_name": "bms-gateway-sim",
        "user_data": "JK-BMS",
    }
)
"""Values for fields the domain model does not hold, used when the simulator builds a pack's blocks."""


def _fit(text: str | None, spec: Field, fallback: str | None) -> str:
    if text is not None and len(text.encode("latin-1", "replace")) <= spec.length:
        return text
    return fallback or ""


def values_from_reading(
    reading: PackReading, extras: Mapping[str, Value] = SIMULATOR_EXTRAS
) -> Mapping[Block, Mapping[str, Value]]:
    """The fields a JK-PB would report for ``reading``, per block: the inverse of :func:`to_state`,
    :func:`to_settings` and :func:`to_device` for everything the protocol carries.

    PB-only values the model lacks come from ``extras``; a model value that is None is sent as 0, except
    SOH (100 %) and remaining capacity (capacity × SOC).
    """
    state, settings, device = reading.state, reading.settings, reading.device
    cells = state.cell_voltages_v
    temperatures = (*state.battery_temperatures_c[:TEMPERATURE_SENSORS], None, None, None, None, None)
    sensor_bits = (MOS_SENSOR_BIT if state.mos_temperature_c is not None else 0) | sum(
        1 << (i + 1) for i, t in enumerate(temperatures[:TEMPERATURE_SENSORS]) if t is not None
    )
    capacity_ah = settings.capacity_ah or 0.0
    remaining = state.remaining_capacity_ah
    live: dict[str, Value] = {
        "cell_voltages_v": (*cells, *(0.0,) * (MAX_CELLS - len(cells))),
        "cell_present_bitmap": (1 << len(cells)) - 1,
        "average_cell_v": state.average_cell_v if cells else 0.0,
        "cell_delta_v": state.cell_delta_v if cells else 0.0,
        "max_cell_index": cells.index(state.max_cell_v) if cells else 0,
        "min_cell_index": cells.index(state.min_cell_v) if cells else 0,
        "wire_resistances_ohm": (0.05,) * MAX_CELLS,
        "mos_temperature_c": state.mos_temperature_c or 0.0,
        "pack_voltage_v": state.pack_voltage_v,
        "power_w": abs(state.power_w),
        "current_a": state.current_a,
        **{name: t or 0.0 for name, t in zip(_TEMPERATURE_NAMES, temperatures, strict=False)},
        "alarm_bitmap": bitmap_from_alarms(state.alarms),
        "balance_current_a": state.balance_current_a or 0.0,
        "balance_state": 1 if state.balancer_on else 0,
        "soc_pct": round(state.soc_pct),
        "remaining_capacity_ah": capacity_ah * state.soc_pct / 100 if remaining is None else remaining,
        "full_charge_capacity_ah": capacity_ah,
        "cycle_count": state.cycle_count or 0,
        "cycle_capacity_ah": state.cycle_capacity_ah or 0.0,
        "soh_pct": 100 if state.soh_pct is None else round(state.soh_pct),
        "runtime_s": round(state.runtime_s or 0),
        "charge_mos_on": int(state.charge_mos_on),
        "discharge_mos_on": int(state.discharge_mos_on),
        "temperature_sensor_bits": sensor_bits,
        "pack_voltage_2_v": state.pack_voltage_v,
        "system_ticks_s": round(state.runtime_s or 0),
    }
    settings_values: dict[str, Value] = {}
    for name, model_name in _SETTINGS_TO_MODEL.items():
        value = getattr(settings, model_name)
        settings_values[name] = 0 if value is None else int(value) if isinstance(value, bool) else value
    info: dict[str, Value] = {
        "model": _fit(device.model, INFO.by_name["model"], SIMULATOR_DEVICE.model),
        "hardware_version": _fit(
            device.hardware_version, INFO.by_name["hardware_version"], SIMULATOR_DEVICE.hardware_version
        ),
        "software_version": _fit(
            device.software_version, INFO.by_name["software_version"], SIMULATOR_DEVICE.software_version
        ),
        "manufacture_date": _fit(
            device.manufacture_date, INFO.by_name["manufacture_date"], SIMULATOR_DEVICE.manufacture_date
        ),
        "serial_number": _fit(device.serial_number, INFO.by_name["serial_number"], ""),
        "info_runtime_s": round(state.runtime_s or 0),
    }
    out: dict[Block, dict[str, Value]] = {LIVE: live, SETTINGS: settings_values, INFO: info}
    for name, value in extras.items():
        for block, values in out.items():
            if name in block.by_name and name not in values:
                values[name] = value
    return MappingProxyType({block: MappingProxyType(values) for block, values in out.items()})
