"""One CAN frame as one line of text, decoded by a profile: shared by ``run --dry-run`` and ``monitor``.

A line is the id, the frame's name, the payload in hex and every field as ``name=value unit``::

    0x351 limits          [8] 28 02 e8 03 08 07 c0 01  charge_voltage_limit=55.2 V charge_current_limit=100.0 A ...

Units come from the published value a field carries (``_v`` → V, ``_pct`` → %, ...; :func:`value_unit`), so a
profile never states them twice.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Final

from gateway.errors import FrameError
from gateway.profiles import CanFrameCodec
from gateway.profiles.schema import FieldSpec
from gateway.values import Value

_UNIT_SUFFIXES: Final = (
    # Longest first: "_kwh" before "_wh", "_ah" and "_mv" before "_v"/"_a".
    ("_kwh", "kWh"),
    ("_wh", "Wh"),
    ("_pct", "%"),
    ("_ah", "Ah"),
    ("_mv", "mV"),
    ("_ma", "mA"),
    ("_kw", "kW"),
    ("_v", "V"),
    ("_a", "A"),
    ("_w", "W"),
    ("_c", "°C"),
    ("_k", "K"),
    ("_s", "s"),
)
MAX_EXPLICIT_FLAGS: Final = 6
"""A frame with more flag fields than this shows only the set ones (alarm frames have a dozen or more)."""
_BIT_KINDS: Final = frozenset({"flags", "pair"})
"""Kinds shown as set/raised or not (pairs: SMA-style 2-bit alarms)."""


def value_unit(value_name: str) -> str:
    """The unit of a published value, from its name's suffix (``charge_voltage_limit_v`` → ``V``); ``""`` if none."""
    for suffix, unit in _UNIT_SUFFIXES:
        if value_name.endswith(suffix):
            return unit
    return ""


def field_unit(field: FieldSpec) -> str:
    """The unit of a field's decoded value: that of the value it carries; ``""`` for flags, text and constants."""
    return value_unit(field.value) if field.value is not None else ""


def _decimals(number: float) -> int:
    exponent = Decimal(repr(number)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def field_decimals(field: FieldSpec) -> int:
    """Decimal places a value field resolves: 1 for scale 0.1, 0 for scale 1 (and offset whole)."""
    return max(_decimals(field.scale), _decimals(field.value_offset))


def format_value(field: FieldSpec, value: Value) -> str:
    """One decoded field value with its unit, as many decimals as the field's scale resolves."""
    if isinstance(value, bool):
        if str(field.kind) == "pair":
            return "raised" if value else "cleared"
        return "1" if value else "0"
    if isinstance(value, str):
        return '"' + value.replace("\x00", "\\0") + '"'
    if isinstance(value, float) and math.isnan(value):
        return "invalid"  # the field carried the invalid marker
    unit = field_unit(field)
    text = f"{value:.{field_decimals(field)}f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def format_fields(codec: CanFrameCodec, data: bytes) -> str:
    """Every field of ``data`` decoded by ``codec`` as ``name=value unit``, or why it cannot be decoded."""
    try:
        decoded = codec.decode(data)
    except FrameError as error:
        return f"({error})"
    by_name = {field.name: field for field in codec.spec.fields}
    flags = [name for name in decoded if name in by_name and str(by_name[name].kind) in _BIT_KINDS]
    items = [
        f"{name}={_format_named(by_name.get(name), value)}"
        for name, value in decoded.items()
        if name not in flags or len(flags) <= MAX_EXPLICIT_FLAGS
    ]
    if len(flags) > MAX_EXPLICIT_FLAGS:
        raised = [name for name in flags if decoded[name]]
        items.append(f"set ({len(raised)} of {len(flags)}): {', '.join(raised) or 'none'}")
    return " ".join(items)


def _format_named(field: FieldSpec | None, value: Value) -> str:
    # A key the decoder returns without a field of that name (a kind added later): shown as it is.
    return str(value) if field is None else format_value(field, value)


def format_payload(data: bytes) -> str:
    """``[3] 01 02 03``: length and bytes in hex."""
    return f"[{len(data)}] {data.hex(' ').upper()}".rstrip()


def format_id(can_id: int, *, extended: bool = False) -> str:
    return f"0x{can_id:08X}" if extended else f"0x{can_id:03X}"


def format_frame(codec: CanFrameCodec | None, can_id: int, data: bytes, *, name_width: int = 0) -> str:
    """The whole line for one frame; ``codec`` None: a frame the profile does not know, shown raw."""
    name = "?" if codec is None else codec.name
    head = f"{format_id(can_id)} {name:<{name_width}} {format_payload(data):<27}"
    return head if codec is None else f"{head} {format_fields(codec, data)}"


__all__ = [
    "field_decimals",
    "field_unit",
    "format_fields",
    "format_frame",
    "format_id",
    "format_payload",
    "format_value",
    "value_unit",
]
