"""The JK wired "NW" protocol's read-all replies: a frame's tagged payload to values by name
(:func:`decode_reply`, :class:`JkNwReply`) and back (:func:`encode_reply`, the simulator's side), the current
read with the protocol version the reply states. Every malformed input raises :class:`~gateway.errors.FrameError`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.bms.jk_nw_frame import HEADER_LEN, Command, FrameType, Source, build_frame, parse_envelope
from gateway.bms.jk_nw_tags import (
    CELLS_NAME,
    CELLS_TAG,
    CURRENT_NAME,
    DEFAULT_PROTOCOL_VERSION,
    KNOWN_PROTOCOL_VERSIONS,
    TAG_BY_NAME,
    TAGS,
    FieldValue,
)
from gateway.errors import FrameError


@dataclass(frozen=True, slots=True)
class JkNwReply:
    """A decoded read-all reply: header fields and every tagged field, by name, in wire order.

    Cell voltages are in V, temperatures in °C, current in A (+ charging), as :data:`TAGS` names them.
    The settings password (tag 0xB2) is a :class:`~gateway.secret.Secret` and never printed.
    """

    fields: Mapping[str, FieldValue]
    command: int = Command.READ_ALL
    source: int = Source.BMS
    frame_type: int = FrameType.REPLY
    terminal: int = 0
    record_number: int = 0

    def __getitem__(self, name: str) -> FieldValue:
        return self.fields[name]

    def get_number(self, name: str) -> int | float | None:
        value = self.fields.get(name)
        return value if isinstance(value, int | float) else None

    def get_text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value if isinstance(value, str) else None

    @property
    def protocol_version_stated(self) -> bool:
        """Whether the reply carried tag 0xC0; without it the current was read as :data:`DEFAULT_PROTOCOL_VERSION`."""
        return "protocol_version" in self.fields

    @property
    def protocol_version(self) -> int:
        """The version the current (tag 0x84) was decoded with: tag 0xC0, else :data:`DEFAULT_PROTOCOL_VERSION`."""
        value = self.fields.get("protocol_version", DEFAULT_PROTOCOL_VERSION)
        assert isinstance(value, int)
        return value


def current_from_raw(raw: int, protocol_version: int) -> float:
    """Tag 0x84 in A (+ charging). Version 1: bit 15 = charging, bits 0–14 in 10 mA. Version 0: offset 10000."""
    if protocol_version == 0:
        return round((10000 - raw) / 100, 2)
    magnitude = (raw & 0x7FFF) / 100
    return magnitude if raw & 0x8000 or not magnitude else -magnitude


def current_to_raw(current_a: float, protocol_version: int) -> int:
    """Inverse of :func:`current_from_raw`."""
    centiamps = round(current_a * 100)
    if protocol_version == 0:
        raw = 10000 - centiamps
        if not 0 <= raw <= 0xFFFF:
            raise ValueError(f"current {current_a} A out of range for protocol version 0")
        return raw
    if abs(centiamps) > 0x7FFF:
        raise ValueError(f"current {current_a} A out of range for protocol version 1")
    return (0x8000 | centiamps) if centiamps > 0 else -centiamps


def _decode_cells(payload: bytes, offset: int) -> tuple[tuple[float, ...], int]:
    """Tag 0x79 at ``payload[offset]``: returns the cell voltages (V) and the offset after the field."""
    if offset + 1 >= len(payload):
        raise FrameError("truncated", f"tag 0x79 at offset {HEADER_LEN + offset} has no length byte")
    size = payload[offset + 1]
    start = offset + 2
    if size % 3:
        raise FrameError("bad cell block", f"length {size} at offset {HEADER_LEN + offset} is not a multiple of 3")
    if start + size > len(payload):
        raise FrameError("truncated", f"tag 0x79 at offset {HEADER_LEN + offset} needs {size} bytes")
    count = size // 3
    cells: list[float | None] = [None] * count
    for i in range(count):
        number, millivolts = struct.unpack_from(">BH", payload, start + 3 * i)
        if not 1 <= number <= count or cells[number - 1] is not None:
            raise FrameError("bad cell number", f"cell {number} at offset {HEADER_LEN + start + 3 * i}")
        cells[number - 1] = millivolts / 1000
    return tuple(c for c in cells if c is not None), start + size


def decode_payload(payload: bytes) -> dict[str, FieldValue]:
    """Walk the tagged fields of a reply payload. Current is left raw (see :func:`decode_reply`)."""
    fields: dict[str, FieldValue] = {}
    offset = 0
    while offset < len(payload):
        tag = payload[offset]
        if tag == CELLS_TAG:
            if CELLS_NAME in fields:
                raise FrameError("duplicate tag", f"tag 0x79 at offset {HEADER_LEN + offset}")
            fields[CELLS_NAME], offset = _decode_cells(payload, offset)
            continue
        spec = TAGS.get(tag)
        if spec is None:
            raise FrameError("unknown tag", f"0x{tag:02X} at offset {HEADER_LEN + offset}")
        end = offset + 1 + spec.length
        if end > len(payload):
            raise FrameError("truncated", f"tag 0x{tag:02X} at offset {HEADER_LEN + offset} needs {spec.length} bytes")
        if spec.name in fields:
            raise FrameError("duplicate tag", f"tag 0x{tag:02X} at offset {HEADER_LEN + offset}")
        fields[spec.name] = spec.kind.decode(payload[offset + 1 : end])
        offset = end
    return fields


def decode_reply(frame: bytes) -> JkNwReply:
    """Decode a complete read-all reply.

    :raises FrameError: bad start, bad length, truncated, bad end marker, bad checksum, not a reply,
        unknown tag (at offset N), unsupported protocol version, or a malformed field.
    """
    envelope = parse_envelope(frame)
    if envelope.frame_type != FrameType.REPLY:
        raise FrameError("not a reply", f"frame type 0x{envelope.frame_type:02X}")
    fields = decode_payload(envelope.payload)
    version = fields.get("protocol_version", DEFAULT_PROTOCOL_VERSION)
    assert isinstance(version, int)
    if version not in KNOWN_PROTOCOL_VERSIONS:
        # The version decides what the current field means: never guess it.
        known = ", ".join(str(v) for v in sorted(KNOWN_PROTOCOL_VERSIONS))
        raise FrameError("unsupported protocol version", f"tag 0xC0 says {version}, known: {known}")
    raw_current = fields.get(CURRENT_NAME)
    if isinstance(raw_current, int):
        fields[CURRENT_NAME] = current_from_raw(raw_current, version)
    return JkNwReply(
        fields=MappingProxyType(fields),
        command=envelope.command,
        source=envelope.source,
        frame_type=envelope.frame_type,
        terminal=envelope.terminal,
        record_number=envelope.record_number,
    )


def encode_payload(fields: Mapping[str, FieldValue]) -> bytes:
    """Tagged fields in the order of ``fields``; the inverse of :func:`decode_payload` after current decoding."""
    version = fields.get("protocol_version", DEFAULT_PROTOCOL_VERSION)
    assert isinstance(version, int)
    parts: list[bytes] = []
    for name, value in fields.items():
        if name == CELLS_NAME:
            assert isinstance(value, tuple)
            cells = b"".join(struct.pack(">BH", i + 1, round(v * 1000)) for i, v in enumerate(value))
            parts.append(bytes((CELLS_TAG, len(cells))) + cells)
            continue
        tag = TAG_BY_NAME[name]
        spec = TAGS[tag]
        if name == CURRENT_NAME:
            assert isinstance(value, int | float)
            value = current_to_raw(value, version)
        parts.append(bytes((tag,)) + spec.kind.encode(value, spec.length))
    return b"".join(parts)


def encode_reply(reply: JkNwReply) -> bytes:
    """A complete reply frame for ``reply`` (the simulator's side)."""
    return build_frame(
        reply.command,
        reply.source,
        reply.frame_type,
        encode_payload(reply.fields),
        terminal=reply.terminal,
        record_number=reply.record_number,
    )
