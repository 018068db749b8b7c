"""One CAN frame as one line of text, decoded by a profile: shared by ``run --dry-run`` and ``monitor`` (live and
``--log``).

A line is the id, the frame's name, the payload in hex and every field as ``name=value unit``::

    0x351 limits          [8] 28 02 e8 03 08 07 c0 01  charge_voltage_limit=55.2 V charge_current_limit=100.0 A ...

Units come from the published value a field carries (``_v`` → V, ``_pct`` → %, ...; :func:`value_unit`), so a
profile never states them twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Final, TextIO

import can

from gateway.errors import FrameError
from gateway.profiles import CanFrameCodec, Profile
from gateway.profiles.spec import FieldSpec
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
        return format_decode_error(error)
    return format_decoded(codec, decoded)


def format_decode_error(error: FrameError) -> str:
    """What a frame the profile knows shows instead of its fields when they cannot be decoded."""
    return f"({error})"


def format_decoded(codec: CanFrameCodec, decoded: Mapping[str, Value]) -> str:
    """Fields ``codec`` decoded as ``name=value unit``; a frame with many flags names only the set ones."""
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


class FrameMonitor:
    """``monitor``'s lines for CAN frames, from a bus or a log: battery frames, inverter frames, unknown ids raw.

    Each line is the time (``elapsed_s``: since the start, or since a log's first frame), who sends the frame by
    the profile (``bat``, ``inv``, ``---`` for an id it does not know), id, name, payload and fields. The counts
    say what was shown: ``frames`` lines in all, of them ``unknown`` ids the profile does not know, ``undecodable``
    frames of a known id whose fields cannot be decoded (a short frame), ``error_frames``.
    """

    def __init__(self, profile: Profile, out: TextIO, *, changes_only: bool = False) -> None:
        self._known: dict[int, tuple[str, CanFrameCodec]] = {codec.can_id: ("bat", codec) for codec in profile.frames}
        self._known.update({codec.can_id: ("inv", codec) for codec in profile.inverter_frames})
        self._name_width = max((len(codec.name) for _, codec in self._known.values()), default=len("request"))
        # Request mode (Growatt): the inverter's request frame, which carries no fields of interest.
        self._request_id: int | None = getattr(profile, "request_id", None)
        self._out = out
        self._changes_only = changes_only
        self._last: dict[tuple[int, bool], bytes] = {}
        self.frames = 0
        self.unknown = 0
        self.undecodable = 0
        self.error_frames = 0

    def show(self, message: can.Message, elapsed_s: float) -> None:
        if message.is_error_frame:
            self.frames += 1
            self.error_frames += 1
            print(f"{elapsed_s:8.3f} --- error frame", file=self._out, flush=True)
            return
        can_id, extended, data = message.arbitration_id, bool(message.is_extended_id), bytes(message.data)
        if self._changes_only:
            key = (can_id, extended)
            if self._last.get(key) == data:
                return
            self._last[key] = data
        self.frames += 1
        # A profile's ids are 11-bit: an extended frame with the same number is someone else's.
        side, codec = self._known.get(can_id, ("---", None)) if not extended else ("---", None)
        name = "?" if codec is None else codec.name
        if codec is None and not extended and can_id == self._request_id:
            side, name = "inv", "request"
        elif codec is None:
            self.unknown += 1
        head = f"{elapsed_s:8.3f} {side} {format_id(can_id, extended=extended)} {name:<{self._name_width}}"
        if message.is_remote_frame:
            print(f"{head} remote request, dlc {message.dlc}", file=self._out, flush=True)
            return
        payload = format_payload(data)
        if codec is None:
            print(f"{head} {payload}", file=self._out, flush=True)
            return
        try:
            fields = format_decoded(codec, codec.decode(data))
        except FrameError as error:
            self.undecodable += 1
            fields = format_decode_error(error)
        print(f"{head} {payload:<27} {fields}", file=self._out, flush=True)


__all__ = [
    "FrameMonitor",
    "field_decimals",
    "field_unit",
    "format_decode_error",
    "format_decoded",
    "format_fields",
    "format_frame",
    "format_id",
    "format_payload",
    "format_value",
    "value_unit",
]
