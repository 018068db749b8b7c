"""The fields of a profile's frames: which kind key a field has (value, flags, pair, text, text_value, constant,
invalid), which keys each kind accepts, and the checks of each kind, including the value and flag names
sent and inverter frames may carry. :mod:`gateway.profiles.schema` parses the frames around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from gateway.profiles.section import Section, suggest
from gateway.profiles.spec import (
    INTEGER_SIZES,
    INVERTER_VALUE_NAMES,
    PAIR_BITS,
    ByteOrder,
    FieldKind,
    FieldSpec,
    SendMode,
)
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, TEXT_VALUES, VALUE_NAMES

_KIND_KEYS: Final = tuple(kind.value for kind in FieldKind)
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
    "invalid_when_missing",
    "rounding",
    "negate",
    *_KIND_KEYS,
)

_KIND_EXTRA_KEYS: Final[Mapping[FieldKind, frozenset[str]]] = {
    FieldKind.VALUE: frozenset(
        {
            "size",
            "signed",
            "scale",
            "value_offset",
            "min",
            "max",
            "byte_order",
            "invalid_when_missing",
            "rounding",
            "negate",
        }
    ),
    FieldKind.FLAGS: frozenset({"bit"}),
    FieldKind.PAIR: frozenset({"bit"}),
    FieldKind.TEXT: frozenset({"size", "pad"}),
    FieldKind.TEXT_VALUE: frozenset({"size", "pad"}),
    FieldKind.CONSTANT: frozenset({"size", "bit", "signed", "byte_order"}),
    FieldKind.INVALID: frozenset({"size", "signed", "byte_order"}),
}
"""Keys, besides ``name``, ``offset`` and the kind key itself, that each kind of field accepts."""


@dataclass(frozen=True, slots=True)
class FrameDefaults:
    """What every frame of one list inherits from the top level."""

    byte_order: ByteOrder
    mode: SendMode
    period_s: float | None
    """Top-level period_s of sent frames; None: each frame gives its own."""
    min_gap_s: float
    inverter: bool
    """The list is inverter_frames: inverter value names, no min_gap_s."""


def _field_kind(section: Section) -> FieldKind:
    kinds = [FieldKind(key) for key in _KIND_KEYS if section.has(key)]
    if FieldKind.INVALID in kinds and len(kinds) == 2:
        other = next(kind for kind in kinds if kind is not FieldKind.INVALID)
        section.fail(f"invalid: true marks an unused number and cannot go with {other} (leave one out)")
    if len(kinds) != 1:
        given = " and ".join(kinds) if kinds else "none"
        section.fail(f"needs exactly one of {', '.join(_KIND_KEYS)} (has {given})")
    kind = kinds[0]
    for key in section.data:
        if key not in ("name", "offset", kind) and key not in _KIND_EXTRA_KEYS[kind]:
            article = "an" if kind is FieldKind.INVALID else "a"
            section.fail(f"key '{key}' does not apply to {article} {kind} field")
    return kind


def _field_bit_and_size(section: Section, kind: FieldKind) -> tuple[int | None, int]:
    if kind is FieldKind.FLAGS and not section.has("bit"):
        section.fail("a flags field needs 'bit' (0-7)")
    if kind is FieldKind.PAIR:
        if not section.has("bit"):
            section.fail("a pair field needs 'bit' (0, 2, 4 or 6: its low bit)")
        bit = section.integer("bit")
        if bit not in PAIR_BITS:
            section.fail(f"a pair field's bit must be 0, 2, 4 or 6 (its low bit), got {bit}")
        return bit, 1
    if kind is FieldKind.CONSTANT and section.has("bit") == section.has("size"):
        section.fail("a constant field needs exactly one of size, bit")
    if section.has("bit"):
        bit = section.integer("bit")
        if not 0 <= bit <= 7:
            section.fail(f"bit {bit} not in 0-7")
        return bit, 1
    size = section.integer("size")
    if kind in (FieldKind.TEXT, FieldKind.TEXT_VALUE):
        if size < 1:
            section.fail(f"size must be >= 1, got {size}")
    elif size not in INTEGER_SIZES:
        section.fail(f"size {size} not one of {', '.join(map(str, INTEGER_SIZES))}")
    return None, size


def parse_field(item: object, index: int, frame_where: str, defaults: FrameDefaults) -> FieldSpec:
    if isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]:
        where = f"{frame_where} field '{item['name']}'"
    else:
        where = f"{frame_where} fields[{index}]"
    section = Section(item, where, _FIELD_KEYS, ("name", "offset"))
    name = section.string("name")
    kind = _field_kind(section)
    offset = section.integer("offset")
    if offset < 0:
        section.fail(f"offset must be >= 0, got {offset}")
    bit, size = _field_bit_and_size(section, kind)
    signed = section.boolean("signed", False)
    order = section.byte_order(defaults.byte_order)

    if kind is FieldKind.VALUE:
        return _value_field(section, name, offset, size, signed, order, inverter=defaults.inverter)
    if kind in (FieldKind.FLAGS, FieldKind.PAIR):
        flags = section.data[kind]
        if not isinstance(flags, list) or not flags or not all(isinstance(f, str) for f in flags):
            section.fail(f"{kind} must be a non-empty list of flag names, got {flags!r}")
        for flag in flags:
            _check_name(section, flag, numeric=False, inverter=defaults.inverter)
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
    if kind is FieldKind.TEXT_VALUE:
        value = section.string("text_value")
        if value not in TEXT_VALUES:
            hint = suggest(value, TEXT_VALUES)
            section.fail(f"unknown text value '{value}'" + (f" (did you mean '{hint}'?)" if hint else ""))
        if defaults.inverter:
            section.fail("an inverter frame carries no text values")
        text_pad: Literal["nul", "space"] = (
            "space" if section.choice("pad", ("nul", "space"), "nul") == "space" else "nul"
        )
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, value=value, pad=text_pad)
    if kind is FieldKind.INVALID:
        if section.data["invalid"] is not True:
            section.fail(f"invalid must be true, got {section.data['invalid']!r} (leave the field out instead)")
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, signed=signed, byte_order=order)
    constant = section.integer("constant")
    spec = FieldSpec(
        name=name, kind=kind, offset=offset, size=size, bit=bit, signed=signed, byte_order=order, constant=constant
    )
    low, high = spec.raw_range
    if not low <= constant <= high:
        section.fail(f"constant {constant} out of range {low}..{high}")
    return spec


def _value_field(
    section: Section, name: str, offset: int, size: int, signed: bool, order: ByteOrder, *, inverter: bool
) -> FieldSpec:
    value = section.string("value")
    _check_name(section, value, numeric=True, inverter=inverter)
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
        kind=FieldKind.VALUE,
        offset=offset,
        size=size,
        signed=signed,
        scale=scale,
        value_offset=value_offset,
        byte_order=order,
        value=value,
        minimum=minimum,
        maximum=maximum,
        invalid_when_missing=section.boolean("invalid_when_missing", False),
        rounding="floor" if section.choice("rounding", ("nearest", "floor"), "nearest") == "floor" else "nearest",
        negate=section.boolean("negate", False),
    )
    low, high = spec.clamp_range
    if low > high:
        raw_low, raw_high = spec.raw_range
        section.fail(f"min..max leaves no raw value in the field's range {raw_low}..{raw_high}")
    return spec


def _check_name(section: Section, name: object, *, numeric: bool, inverter: bool) -> None:
    """Fail unless ``name`` is a value name of the right kind for the frame list (sent or inverter)."""
    if inverter:
        if numeric and name in INVERTER_VALUE_NAMES:
            return
        if not numeric:
            section.fail(f"an inverter frame carries no flags ('{name}'); decode it with value: and a size")
        hint = suggest(str(name), INVERTER_VALUE_NAMES)
        section.fail(f"unknown inverter value '{name}'" + (f" (did you mean '{hint}'?)" if hint else ""))
    wanted, other = (NUMERIC_VALUES, FLAG_VALUES) if numeric else (FLAG_VALUES, NUMERIC_VALUES)
    if name in wanted:
        return
    if name in other:
        if numeric:
            section.fail(f"'{name}' is a flag, not a numeric value: carry it with flags: [{name}] and a bit")
        section.fail(f"'{name}' is a numeric value, not a flag: carry it with value: {name} and a size")
    if name in INVERTER_VALUE_NAMES:
        section.fail(f"'{name}' is an inverter value: only inverter_frames carry it")
    hint = suggest(str(name), VALUE_NAMES)
    section.fail(f"unknown value '{name}'" + (f" (did you mean '{hint}'?)" if hint else ""))
