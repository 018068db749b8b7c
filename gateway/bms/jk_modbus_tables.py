"""The JK-PB's register tables: the three blocks (:data:`LIVE`, :data:`SETTINGS`, :data:`INFO`), each field's byte
offset, type, name (with its unit) and divisor, and where each block lives (base address, trigger register,
frame type).

One table serves both ways a JK-PB hands its data over (FC03 reads and trigger frames, see
:mod:`gateway.bms.jk_modbus`). Passcode fields are :attr:`Kind.SECRET`; the settings passcode
(:data:`SETTINGS_PASSCODE_NAME`) is the one opt-in control compares. Facts and sources:
``shared/protocols/jk_bms.md``, family 2. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.secret import Secret

BLOCK_SIZE: Final = 0x200
"""Bytes of address space per block: each block's base is 0x200 above the previous one."""


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
