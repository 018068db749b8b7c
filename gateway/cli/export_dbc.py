"""``bms-gateway export-dbc PROFILE [-o FILE]``: the profile as a DBC file, for SavvyCAN, cantools or Wireshark.

Generated with cantools (an optional dependency, imported only here and only when the command runs). One
message per frame, battery frames sent by node ``Battery``, inverter frames by ``Inverter``; one signal per
field:

* value fields: ``size × 8`` bits, Intel (``@1``) for little endian, Motorola (``@0``) for big endian, signed
  or not, factor = scale, offset = value_offset, unit from the value's name, min/max = the range the field can
  send (its integer range narrowed by the profile's ``min``/``max``);
* flags fields and 1-bit constants: 1-bit signals; 2-bit alarm pairs: 2-bit signals, 1 raised, 2 cleared;
* text fields: one 8-bit signal per byte (``manufacturer_0`` …), since a DBC has no string signals;
* constants and ``invalid`` fields: their raw integer, min = max = that integer.

A field of a kind this exporter does not know is left out, and the message comment says so. The file is
written in cp1252, the encoding DBC tools expect.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Final

from gateway import __version__
from gateway.cli.common import detach_stdout
from gateway.cli.frames import field_decimals, field_unit
from gateway.errors import GatewayError
from gateway.profiles import CanFrameCodec, Profile, load_profile, spec
from gateway.profiles.spec import FieldSpec, FrameSpec
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, TEXT_VALUES

DBC_ENCODING: Final = "cp1252"
BATTERY_NODE: Final = "Battery"
INVERTER_NODE: Final = "Inverter"
EXPORTED_KINDS: Final = frozenset({"value", "flags", "pair", "text", "text_value", "constant", "invalid"})
"""Field kinds that become signals; any other kind is skipped with a comment. Strings, not FieldKind members:
a kind the engine renames or drops degrades to "skipped" instead of breaking the import."""
PAIR_CHOICES: Final = {1: "raised", 2: "cleared"}
"""Raw states of an SMA-style 2-bit alarm pair: lower bit raised, upper bit cleared."""
MISSING_CANTOOLS: Final = "export-dbc needs cantools: pip install 'bms-gateway[tools]'"

_INVERTER_VALUES: Final[dict[str, str]] = dict(getattr(spec, "INVERTER_VALUE_NAMES", {}))
"""Descriptions of the values inverter frames carry, where the schema has them."""

# Characters profiles use in prose that cp1252 lacks.
_PLAIN: Final = str.maketrans({"→": "->", "←": "<-", "−": "-", "×": "x", "≤": "<=", "≥": ">=", "Ω": "Ohm", '"': "'"})


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("export-dbc", help="write a DBC file generated from a profile (needs cantools)")
    parser.add_argument("profile", metavar="PROFILE", help="built-in profile name or profile file")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default: standard output)")
    parser.set_defaults(func=run)


def _text(text: str) -> str:
    """``text`` as a DBC comment can hold it: one line, cp1252, no double quotes."""
    plain = " ".join(text.translate(_PLAIN).split())
    return plain.encode(DBC_ENCODING, errors="replace").decode(DBC_ENCODING)


def _identifier(name: str, taken: set[str]) -> str:
    """A DBC identifier for ``name``, unique among ``taken`` (which it joins)."""
    ident = re.sub(r"\W", "_", name.encode("ascii", errors="replace").decode("ascii")) or "unnamed"
    if ident[0].isdigit():
        ident = "_" + ident
    unique, number = ident, 2
    while unique in taken:
        unique, number = f"{ident}_{number}", number + 1
    taken.add(unique)
    return unique


def _start_bit(offset: int, size: int, byte_order: str) -> int:
    # DBC start bit: the LSB for Intel; for Motorola the MSB, bit 7 of the field's first byte.
    return offset * 8 if byte_order == "little" or size == 1 else offset * 8 + 7


def _physical_range(field: FieldSpec) -> tuple[float, float]:
    low, high = field.clamp_range
    digits = field_decimals(field)  # 3276.7, not 3276.7000000000003
    sign = -1 if field.negate else 1
    ends = sorted(sign * (raw * field.scale + field.value_offset) for raw in (low, high))
    return round(ends[0], digits), round(ends[1], digits)


def _marker(field: FieldSpec) -> int:
    """The invalid marker of an integer field: all ones unsigned, the most negative number signed."""
    bits = 8 * field.size
    return -(1 << (bits - 1)) if field.signed else (1 << bits) - 1


def _value_comment(field: FieldSpec) -> str:
    assert field.value is not None
    described = NUMERIC_VALUES.get(field.value) or _INVERTER_VALUES.get(field.value) or field.value
    comment = f"{field.value}: {described}"
    if getattr(field, "invalid_when_missing", False):
        comment += f"; raw {_marker(field)} = invalid (value not available)"
    return comment


def _signals(field: FieldSpec, receiver: str, taken: set[str], cantools: Any) -> list[Any]:
    """The signals for one field; ``[]`` for a kind not in :data:`EXPORTED_KINDS`."""
    can = cantools.database.can
    factory = cantools.database.conversion.BaseConversion.factory
    kind = str(field.kind)
    order = "little_endian" if field.byte_order == "little" or field.size == 1 else "big_endian"
    if kind == "value":
        low, high = _physical_range(field)
        return [
            can.Signal(
                name=_identifier(field.name, taken),
                start=_start_bit(field.offset, field.size, field.byte_order),
                length=8 * field.size,
                byte_order=order,
                is_signed=field.signed,
                # A negated field (the wire carries -value) decodes with the scale and offset negated.
                conversion=factory(
                    scale=-field.scale if field.negate else field.scale,
                    offset=-field.value_offset if field.negate else field.value_offset,
                ),
                minimum=low,
                maximum=high,
                unit=field_unit(field) or None,
                comment=_text(_value_comment(field)),
                receivers=[receiver],
            )
        ]
    if kind == "pair":
        assert field.bit is not None
        described = ", ".join(field.flags)
        return [
            can.Signal(
                name=_identifier(field.name, taken),
                start=field.offset * 8 + field.bit,
                length=2,
                conversion=factory(choices=dict(PAIR_CHOICES)),
                minimum=0,
                maximum=3,
                comment=_text(f"alarm pair: 1 raised when any of {described}, 2 cleared"),
                receivers=[receiver],
            )
        ]
    if kind == "flags" or (kind == "constant" and field.bit is not None):
        assert field.bit is not None
        if kind == "flags":
            described = ", ".join(f"{flag} ({FLAG_VALUES.get(flag, flag)})" for flag in field.flags)
            comment = f"1 when any of: {described}"
        else:
            comment = f"constant {field.constant}"
        constant = field.constant if kind == "constant" else None
        return [
            can.Signal(
                name=_identifier(field.name, taken),
                start=field.offset * 8 + field.bit,
                length=1,
                minimum=0 if constant is None else constant,
                maximum=1 if constant is None else constant,
                comment=_text(comment),
                receivers=[receiver],
            )
        ]
    if kind in ("text", "text_value"):
        # One 8-bit signal per ASCII byte: a fixed text names each byte's character, a text value its source.
        text = field.text_bytes if kind == "text" else None
        size = len(text) if text is not None else field.size

        def byte_comment(index: int) -> str:
            if text is not None:
                char = text[index]
                return f"byte {index} of ASCII text {text.decode('ascii')!r} ({chr(char)!r} = {char})"
            return f"byte {index} of the ASCII text of {field.value}: {TEXT_VALUES.get(field.value or '')}"

        return [
            can.Signal(
                name=_identifier(f"{field.name}_{index}", taken),
                start=(field.offset + index) * 8,
                length=8,
                minimum=0,
                maximum=255,
                comment=_text(byte_comment(index)),
                receivers=[receiver],
            )
            for index in range(size)
        ]
    if kind in ("constant", "invalid"):
        raw = field.constant if kind == "constant" else _marker(field)
        assert raw is not None
        return [
            can.Signal(
                name=_identifier(field.name, taken),
                start=_start_bit(field.offset, field.size, field.byte_order),
                length=8 * field.size,
                byte_order=order,
                is_signed=field.signed,
                minimum=raw,
                maximum=raw,
                comment=_text(f"constant {raw}" if kind == "constant" else f"unused: always the invalid marker {raw}"),
                receivers=[receiver],
            )
        ]
    return []


def _request_label(request_id: int | None) -> str:
    return "request" if request_id is None else f"request frame 0x{request_id:03X}"


def _message(
    codec: CanFrameCodec, sender: str, receiver: str, names: set[str], request_id: int | None, cantools: Any
) -> Any:
    spec: FrameSpec = codec.spec
    signals: list[Any] = []
    taken: set[str] = set()
    skipped: list[str] = []
    for field in spec.fields:
        if str(field.kind) not in EXPORTED_KINDS:
            skipped.append(f"field '{field.name}' ({field.kind}, {field.span})")
            continue
        signals.extend(_signals(field, receiver, taken, cantools))
    who = "battery (the gateway)" if sender == BATTERY_NODE else "inverter"
    if spec.period_s > 0:
        comment = f"{spec.name}: sent by the {who} every {spec.period_s:g} s"
    else:  # request mode: no period of its own
        comment = f"{spec.name}: sent by the {who} in answer to each {_request_label(request_id)}"
    if skipped:
        comment += "; not exported, kind unknown to export-dbc: " + "; ".join(skipped)
    return cantools.database.can.Message(
        frame_id=spec.can_id,
        name=_identifier(spec.name, names),
        length=spec.dlc,
        signals=signals,
        senders=[sender],
        cycle_time=round(spec.period_s * 1000) if spec.period_s > 0 else None,
        comment=_text(comment),
        strict=True,
    )


def build_database(profile: Profile) -> Any:
    """The cantools database for ``profile``. :raises GatewayError: cantools is not installed."""
    try:
        import cantools
    except ImportError:
        raise GatewayError(MISSING_CANTOOLS) from None
    can = cantools.database.can
    names: set[str] = set()
    request_id: int | None = getattr(profile, "request_id", None)
    messages = [_message(codec, BATTERY_NODE, INVERTER_NODE, names, request_id, cantools) for codec in profile.frames]
    messages += [
        _message(codec, INVERTER_NODE, BATTERY_NODE, names, None, cantools) for codec in profile.inverter_frames
    ]
    sources = "; ".join(profile.sources) or "none stated"
    comment = (
        f"bms-gateway {__version__} profile {profile.name}: {profile.description}. Sources: {sources}. "
        f"Bitrate {profile.bitrate} bit/s. Generated from the profile file; the profile is the reference."
    )
    return can.Database(
        messages=messages,
        nodes=[
            can.Node(BATTERY_NODE, comment="the battery side: bms-gateway"),
            can.Node(INVERTER_NODE, comment=_text("the inverter: " + (", ".join(profile.inverters) or profile.name))),
        ],
        buses=[can.Bus("CAN", comment=_text(comment), baudrate=profile.bitrate)],
        version=f"bms-gateway {__version__} {profile.name}",
        strict=True,
    )


def dbc_bytes(profile: Profile) -> bytes:
    """The DBC file for ``profile``, encoded as DBC tools expect. :raises GatewayError: no cantools."""
    text: str = build_database(profile).as_dbc_string()
    return text.encode(DBC_ENCODING, errors="replace")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    data = dbc_bytes(profile)
    if args.output is None:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `export-dbc P | head`
            detach_stdout()
        return 0
    try:
        args.output.write_bytes(data)
    except OSError as error:
        raise GatewayError(f"{args.output}: cannot write: {error.strerror or error}") from None
    print(f"wrote {args.output}: {len(profile.frames) + len(profile.inverter_frames)} messages", file=sys.stderr)
    return 0
