"""Field layouts shared by the RS485 codecs: one field spec → bytes (big-endian), and bytes → value.

Pylontech ASCII INFO and Modbus registers both carry big-endian integers, flag bytes, ASCII text and lists, so
one encoder serves both: Pylontech writes the bytes as hex, a register map splits them into 16-bit words.
Encoding never fails on a value: numbers saturate at the field's range (never wrap), NaN encodes as 0 and text
is cut or padded to its size. The specs come from RS485 profile files (:mod:`gateway.rs485.profile`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import FrameError
from gateway.limits.rounding import round_raw
from gateway.rs485.values import AnyValue, Namespace
from gateway.values import SAFE_ROUNDING


class FieldKind(enum.StrEnum):
    NUMBER = "number"
    """``value`` scaled: raw = round((value + offset) / scale), negated with ``negate``."""
    CONSTANT = "constant"
    FLAGS = "flags"
    """Bits set when any of their named flags is true."""
    TEXT = "text"
    """ASCII of a text value (or the literal ``constant_text``), padded to ``size`` bytes."""
    LIST = "list"
    """A list value: a count of ``count_size`` bytes (0: none), then each item as a number of ``size`` bytes."""
    STATE = "state"
    """Pylontech state code: 0x02 when any ``above`` flag is set, 0x01 when any ``below`` flag is, else 0."""
    MODULES = "modules"
    """Pylontech: the sub-fields once per module of the answer."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A field present only when an earlier field's value is above ``above`` (Pylontech 0x42 capacities)."""

    field: str
    above: float


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a Pylontech INFO layout or a register map."""

    name: str
    kind: FieldKind
    size: int
    """Bytes (LIST: bytes per item; MODULES: 0)."""
    value: str | None = None
    """The value carried (NUMBER, TEXT, LIST)."""
    scale: float = 1.0
    offset: float = 0.0
    signed: bool = False
    negate: bool = False
    """Send the value negated (Pylontech sends the discharge current limit as a negative number)."""
    bitmask: bool = False
    """The value is an integer bit mask: send its bits ``shift`` to ``shift + 8 × size − 1`` (no scaling)."""
    shift: int = 0
    constant: int = 0
    constant_text: str | None = None
    pad: bytes = b"\x00"
    bits: tuple[tuple[int, tuple[str, ...]], ...] = ()
    """FLAGS: (bit, flag names) pairs; bit 0 is the least significant bit of the last byte."""
    above: tuple[str, ...] = ()
    below: tuple[str, ...] = ()
    count_size: int = 1
    """LIST: bytes of the count before the items; 0 for a fixed-length list of ``length`` items."""
    length: int | None = None
    """LIST without a count: items sent (missing ones as ``missing``, extra ones cut)."""
    missing: int = 0
    """LIST without a count: the raw value of an item that is not there."""
    only_if: Condition | None = None
    fields: tuple[FieldSpec, ...] = ()
    """MODULES: the fields repeated per module."""
    description: str = ""

    @property
    def wire_size(self) -> int | None:
        """Bytes on the wire when fixed, else None (counted lists, modules)."""
        if self.kind is FieldKind.MODULES:
            return None
        if self.kind is FieldKind.LIST:
            return None if self.count_size else self.size * (self.length or 0)
        return self.size


def _limits(size: int, signed: bool) -> tuple[int, int]:
    bits = 8 * size
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _pack(raw: int, size: int, signed: bool) -> bytes:
    low, high = _limits(size, signed)
    return max(low, min(high, raw)).to_bytes(size, "big", signed=signed)


def _number_raw(spec: FieldSpec, value: float) -> int:
    if isinstance(value, bool):
        value = float(value)
    if not math.isfinite(value):
        if math.isnan(value):
            return 0
        return _limits(spec.size, spec.signed)[1 if value > 0 else 0] * (-1 if spec.negate else 1)
    if spec.bitmask:
        return (int(value) >> spec.shift) & ((1 << (8 * spec.size)) - 1)
    raw = (value + spec.offset) / spec.scale
    # Limits round towards safety by magnitude (SAFE_ROUNDING), so a DCL sent negative is made no larger either.
    return round_raw(-raw if spec.negate else raw, SAFE_ROUNDING.get(spec.value or "", 0))


def _as_number(value: AnyValue | None) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    return math.nan  # text, list or missing: never raise while answering


def encode_field(spec: FieldSpec, values: Namespace) -> bytes:
    """``spec``'s bytes for ``values`` (MODULES fields are expanded by the caller)."""
    kind = spec.kind
    if kind is FieldKind.NUMBER:
        assert spec.value is not None
        return _pack(_number_raw(spec, _as_number(values.get(spec.value))), spec.size, spec.signed)
    if kind is FieldKind.CONSTANT:
        return _pack(spec.constant, spec.size, spec.signed)
    if kind is FieldKind.FLAGS:
        raw = 0
        for bit, names in spec.bits:
            if any(bool(values.get(name, False)) for name in names):
                raw |= 1 << bit
        return raw.to_bytes(spec.size, "big")
    if kind is FieldKind.TEXT:
        text = spec.constant_text if spec.constant_text is not None else str(values.get(spec.value or "", ""))
        data = text.encode("ascii", errors="replace")[: spec.size]
        return data + spec.pad * (spec.size - len(data))
    if kind is FieldKind.STATE:
        if any(bool(values.get(name, False)) for name in spec.above):
            return (0x02).to_bytes(spec.size, "big")
        if any(bool(values.get(name, False)) for name in spec.below):
            return (0x01).to_bytes(spec.size, "big")
        return bytes(spec.size)
    if kind is FieldKind.LIST:
        items = values.get(spec.value or "", ())
        numbers = list(items) if isinstance(items, tuple) else []
        if spec.count_size:
            numbers = numbers[: _limits(spec.count_size, False)[1]]
            out = bytearray(len(numbers).to_bytes(spec.count_size, "big"))
        else:
            out = bytearray()
            length = spec.length or 0
            for number in numbers[:length]:
                out += _pack(_number_raw(spec, number), spec.size, spec.signed)
            # Absent items carry the raw "none" pattern (0x8000 for a signed word), not a saturated number.
            out += spec.missing.to_bytes(spec.size, "big") * (length - min(length, len(numbers)))
            return bytes(out)
        for number in numbers:
            out += _pack(_number_raw(spec, number), spec.size, spec.signed)
        return bytes(out)
    raise ValueError(f"field {spec.name}: {kind} is expanded by its codec")


def encode_fields(fields: tuple[FieldSpec, ...], values: Namespace, modules: Sequence[Namespace] = ()) -> bytes:
    """The fields one after another; a field with ``only_if`` is left out unless its condition holds; a
    MODULES field repeats its sub-fields once per namespace of ``modules``."""
    out = bytearray()
    sent: dict[str, float] = {}
    for spec in fields:
        if spec.only_if is not None and not sent.get(spec.only_if.field, -math.inf) > spec.only_if.above:
            continue
        if spec.kind is FieldKind.MODULES:
            for module in modules:
                out += encode_fields(spec.fields, module)
            continue
        data = encode_field(spec, values)
        if spec.kind in (FieldKind.NUMBER, FieldKind.CONSTANT) and spec.size <= 4:
            sent[spec.name] = int.from_bytes(data, "big", signed=spec.signed)
        out += data
    return bytes(out)


# --- decoding (monitor, tests) -------------------------------------------------------------------------------


def _unscale(spec: FieldSpec, raw: int) -> float | int:
    if spec.bitmask:
        return raw << spec.shift
    value = (-raw if spec.negate else raw) * spec.scale - spec.offset
    if spec.scale == 1 and spec.offset == 0:
        return int(value)
    return round(value, 6)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int, what: str) -> bytes:
        if self.at + size > len(self.data):
            raise FrameError("short info", f"{what} needs {size} bytes at offset {self.at}, {len(self.data)} in all")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def decode_field(spec: FieldSpec, reader: _Reader) -> Any:
    kind = spec.kind
    if kind is FieldKind.LIST:
        count = int.from_bytes(reader.take(spec.count_size, spec.name), "big") if spec.count_size else spec.length or 0
        return tuple(
            _unscale(spec, int.from_bytes(reader.take(spec.size, spec.name), "big", signed=spec.signed))
            for _ in range(count)
        )
    raw_bytes = reader.take(spec.size, spec.name)
    if kind is FieldKind.TEXT:
        return raw_bytes.rstrip(spec.pad + b"\x00 ").decode("ascii", errors="replace")
    raw = int.from_bytes(raw_bytes, "big", signed=spec.signed and kind is FieldKind.NUMBER)
    if kind is FieldKind.NUMBER:
        return _unscale(spec, raw)
    if kind is FieldKind.FLAGS:
        return {"+".join(names): bool(raw >> bit & 1) for bit, names in spec.bits}
    return raw  # CONSTANT, STATE


def decode_fields(fields: tuple[FieldSpec, ...], data: bytes) -> dict[str, Any]:
    """``data`` read field by field: {field name: value}; MODULES repeat until ``data`` is used up.

    :raises FrameError: ``data`` is shorter than the layout, or longer.
    """
    reader = _Reader(data)
    out = _decode_into(fields, reader)
    if reader.left:
        raise FrameError("long info", f"{reader.left} bytes left over after the last field")
    return out


def _decode_into(fields: tuple[FieldSpec, ...], reader: _Reader) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in fields:
        if spec.only_if is not None:
            earlier = out.get(spec.only_if.field)
            if not isinstance(earlier, int | float) or not earlier > spec.only_if.above:
                continue
        if spec.kind is FieldKind.MODULES:
            modules = []
            while reader.left:
                modules.append(_decode_into(spec.fields, reader))
            out[spec.name] = modules
        else:
            out[spec.name] = decode_field(spec, reader)
    return out


def field_values(spec: FieldSpec) -> Mapping[str, str]:
    """The value names ``spec`` refers to, each with the role it plays (for load-time validation)."""
    names: dict[str, str] = {}
    if spec.value is not None:
        names[spec.value] = spec.kind.value
    for _bit, flags in spec.bits:
        names.update(dict.fromkeys(flags, "flag"))
    names.update(dict.fromkeys(spec.above + spec.below, "flag"))
    return names
