"""The profile schema: parsed YAML data in, validated frozen specs out.

A profile is data, never code. This module turns the plain Python objects that ``yaml.safe_load`` returns
into :class:`ProfileSpec`, :class:`FrameSpec` and :class:`FieldSpec`, and rejects anything wrong with a
:class:`~gateway.errors.ProfileError` whose one-line message names the file, the frame and the field, e.g.::

    profiles/x.yaml: frame 0x351 field 'charge_current_limit': overlaps field 'charge_voltage_limit' (bytes 0-1)

It does no I/O and builds no encoders: :mod:`gateway.profiles.codec` compiles the specs, and
:mod:`gateway.profiles.loader` reads files.

Schema (one YAML file per inverter protocol)::

    name, description, inverters: [..], sources: [..]
    transport: can            # the only transport so far
    bitrate: 500000           # bit/s
    byte_order: little        # default for every multi-byte field (little | big)
    heartbeat: {id: 0x305, timeout_s: 10}      # optional
    failsafe: {silence_after_s: 60}
    frames:                   # what the battery (we) sends
      - {id: 0x351, name: limits, period_s: 1.0, dlc: 8, fields: [...]}
    inverter_frames: [...]    # what the inverter sends; same shape, period_s is its expected period

    field: name, offset (byte), then exactly one of
      value: <numeric value name>   size 1|2|4, signed, scale, value_offset, byte_order,
                                    min, max (physical clamp, in the value's unit)
      flags: [<flag value names>]   bit 0-7 (set when ANY named flag is true)
      text: "PYLON"                 size (bytes), pad: nul | space
      constant: <int>               size 1|2|4 (signed, byte_order) or bit 0-7 (constant 0 or 1)
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from gateway.errors import ProfileError
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, VALUE_NAMES

ByteOrder = Literal["little", "big"]

INTEGER_SIZES: Final = (1, 2, 4)
"""Byte sizes an integer (value or constant) field may have."""
MAX_CLASSIC_DLC: Final = 8
"""Largest data length of a classic CAN frame, bytes."""
MAX_STANDARD_ID: Final = 0x7FF
"""Largest 11-bit standard CAN identifier."""
TRANSPORTS: Final = ("can",)
"""Transports a profile may name."""

_TOP_KEYS: Final = (
    "name",
    "description",
    "inverters",
    "sources",
    "transport",
    "bitrate",
    "byte_order",
    "heartbeat",
    "failsafe",
    "frames",
    "inverter_frames",
)
_HEARTBEAT_KEYS: Final = ("id", "timeout_s")
_FAILSAFE_KEYS: Final = ("silence_after_s",)
_FRAME_KEYS: Final = ("id", "name", "period_s", "dlc", "fields")
_KIND_KEYS: Final = ("value", "flags", "text", "constant")
_FIELD_KEYS: Final = (
    "name",
    "offset",
    "size",
    "bit",
    "signed",
    "scale",
    "value_offset",
    "min",
    "max",
    "byte_order",
    "pad",
    *_KIND_KEYS,
)


class FieldKind(enum.StrEnum):
    """What a field carries; named after the YAML key that selects it."""

    VALUE = "value"
    FLAGS = "flags"
    TEXT = "text"
    CONSTANT = "constant"


_KIND_EXTRA_KEYS: Final[Mapping[FieldKind, frozenset[str]]] = {
    FieldKind.VALUE: frozenset({"size", "signed", "scale", "value_offset", "min", "max", "byte_order"}),
    FieldKind.FLAGS: frozenset({"bit"}),
    FieldKind.TEXT: frozenset({"size", "pad"}),
    FieldKind.CONSTANT: frozenset({"size", "bit", "signed", "byte_order"}),
}
"""Keys, besides ``name``, ``offset`` and the kind key itself, that each kind of field accepts."""

_PAD_BYTES: Final[Mapping[str, bytes]] = {"nul": b"\x00", "space": b" "}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One validated field of a frame. Byte offsets count from 0; bit 0 is a byte's least significant bit."""

    name: str
    """Field name, unique in its frame; the key of :meth:`CanFrameCodec.decode` results."""
    kind: FieldKind
    offset: int
    """First byte of the field, bytes from the frame start."""
    size: int
    """Length, bytes (1 for a bit field)."""
    bit: int | None = None
    """Bit number 0-7 within byte ``offset`` for a 1-bit field; None for a whole-byte field."""
    signed: bool = False
    """Two's-complement integer (value and constant fields)."""
    scale: float = 1
    """Physical units per raw count: ``raw = round((value - value_offset) / scale)``."""
    value_offset: float = 0
    """Physical value at raw 0, in the value's unit."""
    byte_order: ByteOrder = "little"
    """Byte order of a multi-byte integer field."""
    value: str | None = None
    """Numeric value name (:data:`~gateway.values.NUMERIC_VALUES`) of a value field."""
    flags: tuple[str, ...] = ()
    """Flag names (:data:`~gateway.values.FLAG_VALUES`) of a flags field: the bit is set when any is true."""
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

    @property
    def is_bit(self) -> bool:
        """The field is a single bit."""
        return self.bit is not None

    @property
    def span(self) -> str:
        """Where the field sits, for messages: ``bytes 0-1``, ``byte 4`` or ``byte 0 bit 3``."""
        if self.bit is not None:
            return f"byte {self.offset} bit {self.bit}"
        return _byte_span(self.offset, self.size)

    @property
    def raw_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer the field can hold."""
        if self.bit is not None:
            return 0, 1
        bits = 8 * self.size
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    @property
    def clamp_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer a value field sends: :attr:`raw_range` narrowed by min/max."""
        low, high = self.raw_range
        if self.minimum is not None:
            low = max(low, math.ceil((self.minimum - self.value_offset) / self.scale - 1e-9))
        if self.maximum is not None:
            high = min(high, math.floor((self.maximum - self.value_offset) / self.scale + 1e-9))
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
    """Transmit period, s (for an inverter frame: its expected period)."""
    dlc: int
    """Data length, bytes: every encoded frame has exactly this many."""
    fields: tuple[FieldSpec, ...]
    """Fields in file order."""
    byte_order: ByteOrder
    """The profile's default byte order (fields may override theirs)."""

    @property
    def label(self) -> str:
        """``frame 0x351``, as messages name it."""
        return f"frame {self.can_id:#05x}"


@dataclass(frozen=True, slots=True)
class HeartbeatSpec:
    """The frame the inverter sends to show it is alive."""

    can_id: int
    """CAN identifier of the heartbeat frame (one of the profile's inverter frames)."""
    timeout_s: float
    """How long without a heartbeat counts as lost, s."""


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


def _byte_span(offset: int, size: int) -> str:
    return f"byte {offset}" if size == 1 else f"bytes {offset}-{offset + size - 1}"


def _type_name(obj: object) -> str:
    return "null" if obj is None else type(obj).__name__


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


class _Section:
    """A mapping from the YAML file with the label that error messages put in front of its problems."""

    def __init__(self, data: object, where: str, allowed: Sequence[str], required: Sequence[str]) -> None:
        self.where = where
        if not isinstance(data, Mapping):
            self.fail(f"must be a mapping, got {_type_name(data)}")
        self.data: Mapping[object, object] = data
        for key in data:
            if key not in allowed:
                hint = _suggest(str(key), allowed)
                more = f"did you mean '{hint}'?" if hint else "valid: " + ", ".join(sorted(allowed))
                self.fail(f"unknown key '{key}' ({more})")
        for key in required:
            if key not in data:
                self.fail(f"missing key '{key}'")

    def fail(self, problem: str) -> NoReturn:
        raise ProfileError(f"{self.where}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{key} must be an integer, got {value!r}")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(f"{key} must be a number, got {value!r}")
        return value

    def positive(self, key: str, default: float | None = None) -> float:
        value = self.number(key, default)
        if value <= 0:
            self.fail(f"{key} must be > 0, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            self.fail(f"{key} must be a non-empty string, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{key} must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            self.fail(f"{key} must be {' or '.join(choices)}, got {value!r}")
        assert isinstance(value, str)
        return value

    def byte_order(self, default: ByteOrder) -> ByteOrder:
        return "big" if self.choice("byte_order", ("little", "big"), default) == "big" else "little"

    def items(self, key: str) -> list[object]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.fail(f"{key} must be a list, got {_type_name(value)}")
        return value


def parse_profile(data: object, source: str) -> ProfileSpec:
    """Validate ``data`` (what ``yaml.safe_load`` returned for the file ``source``) into a :class:`ProfileSpec`.

    :raises ProfileError: on the first problem found, naming ``source``, frame and field.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(f"{source}: top level must be a mapping, got {_type_name(data)}")
    top = _Section(data, source, _TOP_KEYS, ("name", "description", "transport", "bitrate", "failsafe", "frames"))
    name = top.string("name")
    description = top.string("description")
    inverters = top.strings("inverters")
    sources = top.strings("sources")
    transport = top.string("transport")
    if transport not in TRANSPORTS:
        top.fail(f"transport {transport!r} not supported (valid: {', '.join(TRANSPORTS)})")
    bitrate = top.integer("bitrate")
    if bitrate <= 0:
        top.fail(f"bitrate must be > 0, got {bitrate}")
    byte_order = top.byte_order("little")
    failsafe = _Section(top.data["failsafe"], f"{source}: failsafe", _FAILSAFE_KEYS, _FAILSAFE_KEYS)
    silence_after_s = failsafe.positive("silence_after_s")

    frames = _parse_frames(top.items("frames"), "frames", source, byte_order, ())
    inverter_frames = _parse_frames(top.items("inverter_frames"), "inverter_frames", source, byte_order, frames)

    heartbeat = None
    if top.has("heartbeat"):
        section = _Section(top.data["heartbeat"], f"{source}: heartbeat", _HEARTBEAT_KEYS, _HEARTBEAT_KEYS)
        can_id = section.integer("id")
        if can_id not in {frame.can_id for frame in inverter_frames}:
            section.fail(f"id {can_id:#05x} is not one of the inverter_frames")
        heartbeat = HeartbeatSpec(can_id=can_id, timeout_s=section.positive("timeout_s"))
    return ProfileSpec(
        name=name,
        description=description,
        inverters=inverters,
        sources=sources,
        transport=transport,
        bitrate=bitrate,
        byte_order=byte_order,
        heartbeat=heartbeat,
        silence_after_s=silence_after_s,
        frames=frames,
        inverter_frames=inverter_frames,
    )


def _parse_frames(
    items: list[object], key: str, source: str, byte_order: ByteOrder, earlier: tuple[FrameSpec, ...]
) -> tuple[FrameSpec, ...]:
    frames: list[FrameSpec] = []
    seen = {frame.can_id for frame in earlier}
    for index, item in enumerate(items):
        frame = _parse_frame(item, f"{source}: {key}[{index}]", source, byte_order)
        if frame.can_id in seen:
            raise ProfileError(f"{source}: {frame.label}: duplicate frame id")
        seen.add(frame.can_id)
        frames.append(frame)
    return tuple(frames)


def _parse_frame(item: object, where: str, source: str, byte_order: ByteOrder) -> FrameSpec:
    can_id = item.get("id") if isinstance(item, Mapping) else None
    if isinstance(can_id, int) and not isinstance(can_id, bool) and 0 <= can_id <= MAX_STANDARD_ID:
        where = f"{source}: frame {can_id:#05x}"  # name the frame by its id as soon as it has a valid one
    section = _Section(item, where, _FRAME_KEYS, ("id", "period_s", "dlc", "fields"))
    can_id = section.integer("id")
    if not 0 <= can_id <= MAX_STANDARD_ID:
        section.fail(f"id {can_id:#x} is not an 11-bit standard id (0x000-0x7ff)")
    label = f"frame {can_id:#05x}"
    name = section.string("name", label.removeprefix("frame "))
    period_s = section.positive("period_s")
    dlc = section.integer("dlc")
    if not 0 <= dlc <= MAX_CLASSIC_DLC:
        section.fail(f"dlc must be 0-{MAX_CLASSIC_DLC}, got {dlc}")

    fields: list[FieldSpec] = []
    owners: dict[tuple[int, int], FieldSpec] = {}  # (byte, bit) -> the field painted there, to find overlaps
    for index, raw_field in enumerate(section.items("fields")):
        field = _parse_field(raw_field, index, f"{source}: {label}", byte_order)
        field_where = f"{source}: {label} field '{field.name}'"
        if any(other.name == field.name for other in fields):
            raise ProfileError(f"{field_where}: duplicate field name")
        if field.offset + field.size > dlc:
            fits = "does" if field.size == 1 else "do"
            raise ProfileError(f"{field_where}: {_byte_span(field.offset, field.size)} {fits} not fit in dlc {dlc}")
        cells = (
            [(field.offset, field.bit)]
            if field.bit is not None
            else [(byte, bit) for byte in range(field.offset, field.offset + field.size) for bit in range(8)]
        )
        for cell in cells:
            other = owners.get(cell)
            if other is not None:
                raise ProfileError(f"{field_where}: overlaps field '{other.name}' ({other.span})")
        owners.update(dict.fromkeys(cells, field))
        fields.append(field)
    return FrameSpec(can_id=can_id, name=name, period_s=period_s, dlc=dlc, fields=tuple(fields), byte_order=byte_order)


def _parse_field(item: object, index: int, frame_where: str, byte_order: ByteOrder) -> FieldSpec:
    if isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]:
        where = f"{frame_where} field '{item['name']}'"
    else:
        where = f"{frame_where} fields[{index}]"
    section = _Section(item, where, _FIELD_KEYS, ("name", "offset"))
    name = section.string("name")
    kinds = [FieldKind(key) for key in _KIND_KEYS if section.has(key)]
    if len(kinds) != 1:
        given = " and ".join(kinds) if kinds else "none"
        section.fail(f"needs exactly one of value, flags, text, constant (has {given})")
    kind = kinds[0]
    for key in section.data:
        if key not in ("name", "offset", kind) and key not in _KIND_EXTRA_KEYS[kind]:
            section.fail(f"key '{key}' does not apply to a {kind} field")
    offset = section.integer("offset")
    if offset < 0:
        section.fail(f"offset must be >= 0, got {offset}")

    bit: int | None = None
    if kind is FieldKind.FLAGS and not section.has("bit"):
        section.fail("a flags field needs 'bit' (0-7)")
    if kind is FieldKind.CONSTANT and section.has("bit") == section.has("size"):
        section.fail("a constant field needs exactly one of size, bit")
    if section.has("bit"):
        bit = section.integer("bit")
        if not 0 <= bit <= 7:
            section.fail(f"bit {bit} not in 0-7")
        size = 1
    else:
        size = section.integer("size")
        if kind is FieldKind.TEXT:
            if size < 1:
                section.fail(f"size must be >= 1, got {size}")
        elif size not in INTEGER_SIZES:
            section.fail(f"size {size} not one of {', '.join(map(str, INTEGER_SIZES))}")

    signed = section.boolean("signed", False)
    order = section.byte_order(byte_order)
    if kind is FieldKind.VALUE:
        value = section.string("value")
        _check_name(section, value, numeric=True)
        scale = section.number("scale", 1)
        if scale <= 0:
            section.fail(f"scale must be > 0, got {scale!r}")
        value_offset = section.number("value_offset", 0)
        minimum = section.number("min") if section.has("min") else None
        maximum = section.number("max") if section.has("max") else None
        if minimum is not None and maximum is not None and minimum > maximum:
            section.fail(f"min {minimum!r} is greater than max {maximum!r}")
        spec = FieldSpec(
            name=name,
            kind=kind,
            offset=offset,
            size=size,
            signed=signed,
            scale=scale,
            value_offset=value_offset,
            byte_order=order,
            value=value,
            minimum=minimum,
            maximum=maximum,
        )
        low, high = spec.clamp_range
        if low > high:
            raw_low, raw_high = spec.raw_range
            section.fail(f"min..max leaves no raw value in the field's range {raw_low}..{raw_high}")
        return spec
    if kind is FieldKind.FLAGS:
        flags = section.data["flags"]
        if not isinstance(flags, list) or not flags or not all(isinstance(f, str) for f in flags):
            section.fail(f"flags must be a non-empty list of flag names, got {flags!r}")
        for flag in flags:
            _check_name(section, flag, numeric=False)
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, bit=bit, flags=tuple(flags))
    if kind is FieldKind.TEXT:
        text = section.data["text"]
        if not isinstance(text, str):
            section.fail(f"text must be a string, got {text!r} (quote it in the YAML)")
        if not text.isascii():
            section.fail(f"text must be ASCII, got {text!r}")
        if len(text) > size:
            section.fail(f"text {text!r} is {len(text)} bytes, longer than size {size}")
        pad: Literal["nul", "space"] = "space" if section.choice("pad", ("nul", "space"), "nul") == "space" else "nul"
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, text=text, pad=pad)
    constant = section.integer("constant")
    spec = FieldSpec(
        name=name, kind=kind, offset=offset, size=size, bit=bit, signed=signed, byte_order=order, constant=constant
    )
    low, high = spec.raw_range
    if not low <= constant <= high:
        section.fail(f"constant {constant} out of range {low}..{high}")
    return spec


def _check_name(section: _Section, name: object, *, numeric: bool) -> None:
    """Fail unless ``name`` is a numeric value name (``numeric``) or a flag name."""
    wanted, other = (NUMERIC_VALUES, FLAG_VALUES) if numeric else (FLAG_VALUES, NUMERIC_VALUES)
    if name in wanted:
        return
    if name in other:
        if numeric:
            section.fail(f"'{name}' is a flag, not a numeric value: carry it with flags: [{name}] and a bit")
        section.fail(f"'{name}' is a numeric value, not a flag: carry it with value: {name} and a size")
    hint = _suggest(str(name), VALUE_NAMES)
    section.fail(f"unknown value '{name}'" + (f" (did you mean '{hint}'?)" if hint else ""))
