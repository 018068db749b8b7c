"""The JK wired "NW" protocol's tag table: every tag of a read-all reply, its name (with its unit), its payload
length and how its bytes make a value (:class:`Kind`), and the meaning of the bits and codes some tags carry
(warnings, status, battery type, protocol version). Only 0x79, the cells, carries its own length.
Sources and facts: ``shared/protocols/jk_bms.md``. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.alarms import WIRED_WARNING_BITS
from gateway.model import Chemistry
from gateway.secret import Secret

MAX_TEMPERATURE_C: Final = 99
"""The highest temperature tags 0x80–0x82 can carry: raw 100 and above are 0 °C and below."""

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
