"""The validated profile specs: the frozen :class:`ProfileSpec`, :class:`FrameSpec`, :class:`FieldSpec` and
:class:`HeartbeatSpec` that :mod:`gateway.profiles.schema` makes of a YAML profile and :mod:`gateway.profiles.codec`
compiles, with the enums and limits they use and the names inverter frames may carry.

No parsing and no I/O here; the YAML reference is :mod:`gateway.profiles.schema`'s docstring.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from gateway.profiles.behaviour import InverterBehaviour

ByteOrder = Literal["little", "big"]

INTEGER_SIZES: Final = (1, 2, 4)
"""Byte sizes an integer (value, constant or invalid) field may have."""
PAIR_BITS: Final = (0, 2, 4, 6)
"""Bits a 2-bit alarm pair may start at (its low bit)."""
PAIR_RAISED: Final = 0b01
"""A pair's state when raised: SMA "lower bit = raised"."""
PAIR_CLEARED: Final = 0b10
"""A pair's state when cleared: SMA "upper bit = cleared"."""
MAX_CLASSIC_DLC: Final = 8
"""Largest data length of a classic CAN frame, bytes."""
MAX_STANDARD_ID: Final = 0x7FF
"""Largest 11-bit standard CAN identifier."""
TRANSPORTS: Final = ("can",)
"""Transports a profile may name."""
DEFAULT_HEARTBEAT_TIMEOUT_S: Final = 10.0
"""Heartbeat timeout when a profile gives none, s: Deye answers late now and then (every ~2 h)."""
HEARTBEAT_TOLERANCE: Final = 2
"""timeout_s must be at least this many heartbeat periods: one late frame must not count as lost."""

INVERTER_VALUE_NAMES: Final[Mapping[str, str]] = {
    "inverter_voltage_v": "battery voltage the inverter measures, V",
    "inverter_current_a": "battery current the inverter measures, A, + charging",
    "inverter_temperature_c": "battery temperature the inverter measures, °C",
    "inverter_soc_pct": "state of charge the inverter uses, %",
    "inverter_soh_pct": "state of health the inverter uses, %",
    "inverter_charge_voltage_setpoint_v": "the inverter's charge voltage set-point, V",
    "inverter_charge_procedure": "the inverter's charge procedure code",
    "inverter_operating_state": "the inverter's operating state code",
    "inverter_error_code": "the inverter's active error code",
    "inverter_power_w": "battery power the inverter measures, W, + charging",
}
"""Names the value fields of inverter frames may carry (SMA 0x305/0x306 and the like), with units."""


class FieldKind(enum.StrEnum):
    """What a field carries; named after the YAML key that selects it."""

    VALUE = "value"
    FLAGS = "flags"
    PAIR = "pair"
    TEXT = "text"
    TEXT_VALUE = "text_value"
    CONSTANT = "constant"
    INVALID = "invalid"


class SendMode(enum.StrEnum):
    """When the frames go out."""

    BROADCAST = "broadcast"
    """Every frame every period_s."""
    REQUEST = "request"
    """The whole set once per request frame from the inverter; nothing otherwise."""


class OnLost(enum.StrEnum):
    """What the gateway does while the inverter's heartbeat is lost."""

    KEEP_SENDING = "keep_sending"
    STOP = "stop"
    """Send nothing, except one whole set every ``retry_after_s``."""


class StaleAction(enum.StrEnum):
    """What the gateway sends while the BMS data is stale (older than the BMS timeout)."""

    ZEROS = "zeros"
    """Currents 0, enables cleared, comm alarm; silence only after ``silence_after_s``."""
    SILENCE = "silence"
    """Nothing, at once."""


_PAD_BYTES: Final[Mapping[str, bytes]] = {"nul": b"\x00", "space": b" "}


def invalid_marker(size: int, *, signed: bool) -> int:
    """The raw "not available" integer of a ``size``-byte field: all ones unsigned, the most negative signed.

    1 byte: 0xFF / -128 (0x80); 2 bytes: 0xFFFF / -32768 (0x8000); 4 bytes: 0xFFFFFFFF / 0x80000000.
    """
    bits = 8 * size
    return -(1 << (bits - 1)) if signed else (1 << bits) - 1


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One validated field of a frame. Byte offsets count from 0; bit 0 is a byte's least significant bit."""

    name: str
    """Field name, unique in its frame; the key of :meth:`CanFrameCodec.decode` results."""
    kind: FieldKind
    offset: int
    """First byte of the field, bytes from the frame start."""
    size: int
    """Length, bytes (1 for a bit field or pair)."""
    bit: int | None = None
    """Bit number 0-7 within byte ``offset`` of a bit field (the low bit of a pair); None for whole bytes."""
    signed: bool = False
    """Two's-complement integer (value, constant and invalid fields)."""
    scale: float = 1
    """Physical units per raw count: ``raw = round((value - value_offset) / scale)``."""
    value_offset: float = 0
    """Physical value at raw 0, in the value's unit."""
    byte_order: ByteOrder = "little"
    """Byte order of a multi-byte integer field."""
    value: str | None = None
    """Value name of a value field (a numeric value, or an inverter value in an inverter frame), or the text
    value of a text_value field."""
    flags: tuple[str, ...] = ()
    """Flag names of a flags or pair field: set (raised) when any is true."""
    text: str | None = None
    """ASCII constant of a text field, before padding."""
    pad: Literal["nul", "space"] = "nul"
    """What fills a text field after its text."""
    constant: int | None = None
    """Raw integer of a constant field."""
    minimum: float | None = None
    """Smallest physical value a value field sends (YAML ``min``); lower values saturate here."""
    maximum: float | None = None
    """Largest physical value a value field sends (YAML ``max``); higher values saturate here."""
    invalid_when_missing: bool = False
    """A value field sends :attr:`invalid_raw` when its value is missing, None or NaN."""
    negate: bool = False
    """The wire carries the value with the opposite sign (e.g. SMA's 0x305 current, negative while charging)."""
    rounding: Literal["nearest", "floor"] = "nearest"
    """How a value field's scaled value becomes an integer: to the nearest, or down (as the sources of some
    protocols truncate)."""

    @property
    def is_bit(self) -> bool:
        """The field is a single bit or a 2-bit pair."""
        return self.bit is not None

    @property
    def bit_width(self) -> int:
        """Bits the field occupies: 1 for a bit field, 2 for a pair, ``8 * size`` otherwise."""
        if self.kind is FieldKind.PAIR:
            return 2
        return 1 if self.bit is not None else 8 * self.size

    @property
    def span(self) -> str:
        """Where the field sits, for messages: ``bytes 0-1``, ``byte 4``, ``byte 0 bit 3`` or ``byte 0 bits 2-3``."""
        if self.kind is FieldKind.PAIR and self.bit is not None:
            return f"byte {self.offset} bits {self.bit}-{self.bit + 1}"
        if self.bit is not None:
            return f"byte {self.offset} bit {self.bit}"
        return byte_span(self.offset, self.size)

    @property
    def raw_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer the field can hold."""
        if self.bit is not None:
            return 0, (1 << self.bit_width) - 1
        bits = 8 * self.size
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    @property
    def invalid_raw(self) -> int | None:
        """The invalid marker of an ``invalid`` field or an ``invalid_when_missing`` value field, else None."""
        if self.kind is FieldKind.INVALID or self.invalid_when_missing:
            return invalid_marker(self.size, signed=self.signed)
        return None

    @property
    def clamp_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer a value field sends for a real value.

        :attr:`raw_range`, narrowed by min/max, and by one count at the marker's end when the field has an
        invalid marker (so that no real value ever reads as "not available").
        """
        low, high = self.raw_range
        if self.minimum is not None:
            low = max(low, math.ceil((self.minimum - self.value_offset) / self.scale - 1e-9))
        if self.maximum is not None:
            high = min(high, math.floor((self.maximum - self.value_offset) / self.scale + 1e-9))
        marker = self.invalid_raw
        if marker is not None:
            low, high = (max(low, marker + 1), high) if self.signed else (low, min(high, marker - 1))
        return low, high

    @property
    def text_bytes(self) -> bytes:
        """The padded bytes of a text field, exactly ``size`` long."""
        raw = (self.text or "").encode("ascii")
        return raw + _PAD_BYTES[self.pad] * (self.size - len(raw))


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """One validated CAN frame."""

    can_id: int
    """11-bit standard CAN identifier."""
    name: str
    """Short name for logs and messages (defaults to the hex id)."""
    period_s: float
    """Transmit period, s (for an inverter frame: its expected period; 0 in request mode: only when asked)."""
    dlc: int
    """Data length, bytes: every encoded frame has exactly this many."""
    fields: tuple[FieldSpec, ...]
    """Fields in file order."""
    byte_order: ByteOrder
    """The profile's default byte order (fields may override theirs)."""
    min_gap_s: float = 0.0
    """Shortest time between two sends of this id, s (SMA: 0.2); 0: no limit."""
    sources: tuple[str, ...] = ()
    """Where its layout comes from, or one ``unverified: ...`` entry (:mod:`gateway.profiles.sources`)."""

    @property
    def label(self) -> str:
        """``frame 0x351``, as messages name it."""
        return f"frame {self.can_id:#05x}"


@dataclass(frozen=True, slots=True)
class HeartbeatSpec:
    """The frame the inverter sends to show it is alive, and what to do when it stops."""

    can_id: int
    """CAN identifier of the heartbeat frame (one of the profile's inverter frames)."""
    timeout_s: float
    """How long without a heartbeat counts as lost, s."""
    on_lost: OnLost = OnLost.KEEP_SENDING
    """What the gateway does while the heartbeat is lost."""
    retry_after_s: float | None = None
    """With ``on_lost: stop``: seconds between the single whole sets sent to retry; else None."""


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A whole validated profile, before compilation."""

    name: str
    description: str
    inverters: tuple[str, ...]
    sources: tuple[str, ...]
    transport: str
    bitrate: int
    """CAN bit rate, bit/s."""
    byte_order: ByteOrder
    heartbeat: HeartbeatSpec | None
    silence_after_s: float
    """Stop transmitting after this long with stale BMS data, s."""
    frames: tuple[FrameSpec, ...]
    inverter_frames: tuple[FrameSpec, ...]
    aliases: tuple[str, ...] = ()
    """Further names the profile loads by."""
    mode: SendMode = SendMode.BROADCAST
    request_id: int | None = None
    """The inverter's request frame id in request mode; None in broadcast mode."""
    stale: StaleAction = StaleAction.ZEROS
    """What goes out while the BMS data is stale."""
    inverter_behaviour: InverterBehaviour | None = None
    """How the inverter reacts to 0 A and to silence, as the profile states it."""
    confirmed_by: tuple[str, ...] = ()
    """Public reports of this protocol on real inverters, ``<inverter>: <report>``."""


def byte_span(offset: int, size: int) -> str:
    return f"byte {offset}" if size == 1 else f"bytes {offset}-{offset + size - 1}"
