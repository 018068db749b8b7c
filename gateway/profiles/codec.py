"""Compiled CAN frame codecs: a validated :class:`~gateway.profiles.spec.FrameSpec` in, a frozen encoder out.

All interpretation of the profile happens once, in :func:`compile_frame`. Each frame gets **one**
:class:`struct.Struct` covering its whole payload, in the profile's default byte order:

* a value field whose byte order is the default becomes an integer item (``B b H h I i``);
* a value field with the other byte order becomes a ``Ns`` item filled by ``int.to_bytes``;
* a byte holding bit fields becomes one ``B`` item: constant bits are precomputed into a base mask, each
  flags field adds its bit when any of its flags is true, and each 2-bit pair adds 0b01 (raised: any flag
  true) or 0b10 (cleared) at its position;
* text, constant and invalid fields become precomputed items of an argument template; a text_value field
  is filled at encode time from its text value, cut to its size and padded;
* unused bytes are ``x`` pad bytes (zero).

:meth:`CanFrameCodec.encode` then only scales, saturates, and calls ``Struct.pack`` once.

Saturation is a safety rule: a value beyond a field's range (its integer range, narrowed by the field's
``min``/``max``) is sent as the nearest end of that range, never wrapped: a negative current limit on an
unsigned field (or a signed one with ``min: 0``) becomes 0, and 70000 raw into u16 becomes 65535. A field with
``invalid_when_missing`` sends its invalid marker for a missing, None or NaN value, and saturates one count
short of the marker otherwise.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, NamedTuple

from gateway.errors import FrameError, GatewayError
from gateway.limits.rounding import round_raw
from gateway.profiles.spec import PAIR_CLEARED, PAIR_RAISED, ByteOrder, FieldKind, FieldSpec, FrameSpec
from gateway.values import SAFE_ROUNDING, Value

_INT_CODES: Final[Mapping[tuple[int, bool], str]] = {
    (1, False): "B",
    (1, True): "b",
    (2, False): "H",
    (2, True): "h",
    (4, False): "I",
    (4, True): "i",
}
_ORDER_PREFIX: Final[Mapping[ByteOrder, str]] = {"little": "<", "big": ">"}


class EncodeError(GatewayError, ValueError):
    """A value handed to :meth:`CanFrameCodec.encode` is missing, not a number, or NaN (and no marker applies)."""


class _NumericSlot(NamedTuple):
    """A value field, ready to encode: ``raw = round((value - value_offset) / scale)``, saturated."""

    arg: int
    """Position of the field's item in the frame's struct arguments."""
    value: str
    scale: float
    value_offset: float
    low: int
    high: int
    byte_order: ByteOrder | None
    """None: packed as an integer item; else packed with ``int.to_bytes`` in this order."""
    size: int
    signed: bool
    field: str
    digits: int | None
    """Decimal places to round decoded values to; None: decode to int."""
    invalid: int | None
    """Raw marker sent for a missing, None or NaN value; None: such a value is an error."""
    floor: bool
    """Round the scaled value down (``rounding: floor``), not to the nearest."""
    direction: int
    """For a limit, which way to round its magnitude (:data:`~gateway.values.SAFE_ROUNDING`); 0: to the nearest."""
    sign: int
    """-1 for a ``negate`` field (the wire carries the value's opposite), else 1."""


class _TextSlot(NamedTuple):
    """A text_value field: its text, filled in at encode time."""

    arg: int
    value: str
    size: int
    pad: bytes
    field: str


class _BitsSlot(NamedTuple):
    """One byte that holds bit fields."""

    arg: int
    base: int
    """Bits of constant bit fields, always set."""
    flags: tuple[tuple[int, int, tuple[str, ...], str], ...]
    """Per flags or pair field: (bits when raised, bits when cleared, flag names, field name)."""
    decoded: tuple[tuple[str, int, FieldKind], ...]
    """Per bit field, for decode: (field name, lowest bit, kind)."""


class _StaticSlot(NamedTuple):
    """A text or constant field: bytes precomputed at compile time."""

    arg: int
    field: FieldSpec


@dataclass(frozen=True, slots=True, eq=False)
class CanFrameCodec:
    """One compiled frame: encodes published values into its payload and decodes a payload by field name.

    Build it with :func:`compile_frame`; it cannot change afterwards.
    """

    can_id: int
    """11-bit CAN identifier."""
    period_s: float
    """Transmit period, s (0 in request mode)."""
    min_gap_s: float
    """Shortest time between two sends of this id, s; 0: no limit."""
    dlc: int
    """Payload length, bytes; :meth:`encode` always returns exactly this many."""
    name: str
    """Short frame name from the profile."""
    spec: FrameSpec
    """The validated declaration this codec was compiled from."""
    value_names: frozenset[str]
    """Every value name :meth:`encode` reads."""
    _struct: struct.Struct
    _decode_struct: struct.Struct
    _template: tuple[int | bytes, ...]
    _numeric: tuple[_NumericSlot, ...]
    _bits: tuple[_BitsSlot, ...]
    _static: tuple[_StaticSlot, ...]
    _texts: tuple[_TextSlot, ...] = ()

    @property
    def label(self) -> str:
        """``frame 0x351``, as messages name it."""
        return self.spec.label

    def encode(self, values: Mapping[str, Value]) -> bytes:
        """The payload for ``values`` (published value name → value), exactly :attr:`dlc` bytes.

        Numbers beyond a field's range saturate at that range. Extra names in ``values`` are ignored.

        :raises EncodeError: a needed value is missing, is a string, or is NaN.
        """
        args = list(self._template)
        label, field, name = self.label, "", ""
        try:
            # Plain tuple unpacking: the fastest way through the precompiled slots.
            for (
                arg,
                name,
                scale,
                value_offset,
                low,
                high,
                order,
                size,
                signed,
                field,
                _,
                invalid,
                floor,
                direction,
                sign,
            ) in self._numeric:
                value = values[name] if invalid is None else values.get(name)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    if invalid is None:
                        raise KeyError(name) if value is None else ValueError(name)
                    raw = invalid
                elif isinstance(value, str):
                    raise EncodeError(f"{label} field '{field}': value '{name}' is a string")
                else:
                    scaled = (sign * value - value_offset) / scale
                    if scaled >= high:
                        raw = high
                    elif scaled <= low:
                        raw = low
                    else:
                        raw = math.floor(scaled) if floor else round_raw(scaled, direction)
                args[arg] = raw if order is None else raw.to_bytes(size, order, signed=signed)
            for arg, byte, flags, _ in self._bits:
                for raised_bits, cleared_bits, names, field in flags:  # noqa: B007 - the error message names it
                    raised = False
                    for name in names:  # no short cut: a missing name fails whatever the others are
                        if values[name]:
                            raised = True
                    byte |= raised_bits if raised else cleared_bits
                args[arg] = byte
            for arg, name, size, pad, field in self._texts:
                text = values[name]
                if not isinstance(text, str):
                    raise EncodeError(f"{label} field '{field}': value '{name}' is not text")
                raw_text = text.encode("ascii", errors="replace")[:size]
                args[arg] = raw_text + pad * (size - len(raw_text))
        except KeyError:
            raise EncodeError(f"{label} field '{field}': missing value '{name}'") from None
        except EncodeError:
            raise
        except ValueError:  # NaN without a marker
            raise EncodeError(f"{label} field '{field}': value '{name}' is NaN") from None
        return self._struct.pack(*args)

    def decode(self, data: bytes) -> dict[str, Value]:
        """The physical value of every field in ``data``, keyed by field name.

        Value fields decode to ``raw * scale + value_offset`` (an int when scale and offset are integers; NaN
        for the invalid marker of an ``invalid_when_missing`` field), flags fields to bool, pairs to True
        (0b01, raised) or False (0b10, cleared) and to the raw int 0 or 3 for the two states SMA leaves
        undefined, text fields to their text without padding, constant fields to their raw int, invalid fields
        to NaN (or the raw int when they do not hold the marker). Bytes beyond the last field are ignored.

        :raises FrameError: ``data`` is shorter than the fields need.
        """
        if len(data) < self._decode_struct.size:
            raise FrameError(
                "short frame",
                f"{self.label}: {len(data)} bytes, fields need {self._decode_struct.size}",
            )
        items = self._decode_struct.unpack_from(data)
        out: dict[str, Value] = {}
        for slot in self._numeric:
            item = items[slot.arg]
            raw = (
                item if isinstance(item, int) else int.from_bytes(item, slot.byte_order or "little", signed=slot.signed)
            )
            if raw == slot.invalid:
                out[slot.field] = math.nan
                continue
            physical = slot.sign * (raw * slot.scale + slot.value_offset)
            out[slot.field] = int(physical) if slot.digits is None else round(physical, slot.digits)
        for bits in self._bits:
            byte = items[bits.arg]
            for field, bit, kind in bits.decoded:
                if kind is FieldKind.PAIR:
                    state = (byte >> bit) & 0b11
                    out[field] = True if state == PAIR_RAISED else False if state == PAIR_CLEARED else state
                elif kind is FieldKind.FLAGS:
                    out[field] = bool(byte >> bit & 1)
                else:
                    out[field] = byte >> bit & 1
        for text_slot in self._texts:
            item = items[text_slot.arg]
            out[text_slot.field] = item.decode("ascii", errors="replace").rstrip(text_slot.pad.decode())
        for static in self._static:
            spec, item = static.field, items[static.arg]
            if spec.kind is FieldKind.TEXT:
                pad = " " if spec.pad == "space" else "\x00"
                out[spec.name] = item.decode("ascii", errors="replace").rstrip(pad)
                continue
            number = int.from_bytes(item, spec.byte_order, signed=spec.signed)
            out[spec.name] = math.nan if number == spec.invalid_raw else number
        return {field.name: out[field.name] for field in self.spec.fields}

    def decode_values(self, data: bytes) -> dict[str, Value]:
        """The fields of ``data`` that carry one named value, keyed by that name (inverter frames: the
        :data:`~gateway.profiles.spec.INVERTER_VALUE_NAMES`), as :meth:`decode` gives them.

        :raises FrameError: ``data`` is shorter than the fields need.
        """
        decoded = self.decode(data)
        out: dict[str, Value] = {}
        for spec in self.spec.fields:
            if spec.value is not None:
                out[spec.value] = decoded[spec.name]
            elif len(spec.flags) == 1:
                out[spec.flags[0]] = decoded[spec.name]
        return out


def _decimals(number: float) -> int:
    """Decimal places of ``number`` as written, e.g. 2 for 0.01."""
    exponent = Decimal(repr(number)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def compile_frame(spec: FrameSpec) -> CanFrameCodec:
    """Compile a validated frame into its frozen codec. Fields must not overlap (the schema checks that)."""
    formats: list[str] = []
    template: list[int | bytes] = []
    numeric: list[_NumericSlot] = []
    bits: list[_BitsSlot] = []
    static: list[_StaticSlot] = []
    texts: list[_TextSlot] = []
    bit_fields: dict[int, list[FieldSpec]] = {}
    for field in spec.fields:
        if field.bit is not None:
            bit_fields.setdefault(field.offset, []).append(field)
    starts = {field.offset: field for field in spec.fields if field.bit is None}
    value_names: set[str] = set()

    position = 0
    while position < spec.dlc:
        index = len(template)
        if position in bit_fields:
            fields = bit_fields[position]
            base = sum(1 << f.bit for f in fields if f.bit is not None and f.constant)
            flags = tuple(
                (PAIR_RAISED << f.bit, PAIR_CLEARED << f.bit, f.flags, f.name)
                if f.kind is FieldKind.PAIR
                else (1 << f.bit, 0, f.flags, f.name)
                for f in fields
                if f.bit is not None and f.flags
            )
            decoded = tuple((f.name, f.bit, f.kind) for f in fields if f.bit is not None)
            bits.append(_BitsSlot(index, base, flags, decoded))
            value_names.update(name for f in fields for name in f.flags)
            formats.append("B")
            template.append(base)
            position += 1
            continue
        start = starts.get(position)
        if start is None:
            formats.append("x")
            position += 1
            continue
        field = start
        if field.kind is FieldKind.VALUE:
            assert field.value is not None
            native = field.byte_order == spec.byte_order or field.size == 1
            low, high = field.clamp_range
            integral = isinstance(field.scale, int) and isinstance(field.value_offset, int)
            digits = None if integral else max(_decimals(field.scale), _decimals(field.value_offset))
            numeric.append(
                _NumericSlot(
                    arg=index,
                    value=field.value,
                    scale=field.scale,
                    value_offset=field.value_offset,
                    low=low,
                    high=high,
                    byte_order=None if native else field.byte_order,
                    size=field.size,
                    signed=field.signed,
                    field=field.name,
                    digits=digits,
                    invalid=field.invalid_raw,
                    floor=field.rounding == "floor",
                    direction=SAFE_ROUNDING.get(field.value, 0),
                    sign=-1 if field.negate else 1,
                )
            )
            value_names.add(field.value)
            formats.append(_INT_CODES[field.size, field.signed] if native else f"{field.size}s")
            template.append(0 if native else bytes(field.size))
        elif field.kind is FieldKind.TEXT_VALUE:
            assert field.value is not None
            pad = b" " if field.pad == "space" else b"\x00"
            texts.append(_TextSlot(index, field.value, field.size, pad, field.name))
            value_names.add(field.value)
            formats.append(f"{field.size}s")
            template.append(pad * field.size)
        else:
            static.append(_StaticSlot(index, field))
            formats.append(f"{field.size}s")
            if field.kind is FieldKind.TEXT:
                template.append(field.text_bytes)
            else:
                raw = field.invalid_raw if field.kind is FieldKind.INVALID else field.constant
                assert raw is not None
                template.append(raw.to_bytes(field.size, field.byte_order, signed=field.signed))
        position += field.size

    prefix = _ORDER_PREFIX[spec.byte_order]
    extent = max((f.offset + f.size for f in spec.fields), default=0)
    decode_formats = _formats_up_to(formats, extent)
    return CanFrameCodec(
        can_id=spec.can_id,
        period_s=spec.period_s,
        min_gap_s=spec.min_gap_s,
        dlc=spec.dlc,
        name=spec.name,
        spec=spec,
        value_names=frozenset(value_names),
        _struct=struct.Struct(prefix + "".join(formats)),
        _decode_struct=struct.Struct(prefix + "".join(decode_formats)),
        _template=tuple(template),
        _numeric=tuple(numeric),
        _bits=tuple(bits),
        _static=tuple(static),
        _texts=tuple(texts),
    )


def _formats_up_to(formats: list[str], extent: int) -> list[str]:
    """The struct items of ``formats`` that cover bytes ``0..extent-1`` (drops trailing pad bytes)."""
    out: list[str] = []
    size = 0
    for item in formats:
        if size >= extent:
            break
        out.append(item)
        size += struct.calcsize("<" + item)
    return out


__all__ = ["CanFrameCodec", "EncodeError", "compile_frame"]
