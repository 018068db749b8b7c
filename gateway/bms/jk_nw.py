"""The JK BMS wired "NW" protocol (frames starting ``4E 57``), as pure functions.

Frame layout (requests and replies alike), all numbers big-endian::

    4E 57 | length (2) | terminal (4) | command | source | type | payload ... | record (4) | 68 | checksum (4)

``length`` counts from the length field itself to the last checksum byte (frame length − 2). The checksum field
is ``00 00 HI LO`` where ``HI LO`` is the 16-bit sum of every byte before it. A reply's payload is a run of
tagged fields: a tag byte, then a payload whose length :data:`TAGS` fixes (only 0x79, the cells, carries its
own length). Sources and facts: ``shared/protocols/jk_bms.md``.

Nothing here does I/O: bytes in, values out (:func:`decode_reply`), values in, bytes out (:func:`encode_reply`,
:func:`read_all_request`). Every malformed input raises :class:`~gateway.errors.FrameError`.

The protocol is split by job; this module is the one import for all of it, the name its users know:

* :mod:`gateway.bms.jk_nw_tags`: the tag table (name, length and kind of every tag) and the tags' bits and codes.
* :mod:`gateway.bms.jk_nw_frame`: the frame envelope: building, checking, framing on a serial line.
* :mod:`gateway.bms.jk_nw_codec`: read-all replies decoded and encoded, tag by tag.
* :mod:`gateway.bms.jk_nw_model`: replies to and from the domain model.
"""

from __future__ import annotations

from gateway.bms.jk_nw_codec import (
    JkNwReply,
    current_from_raw,
    current_to_raw,
    decode_payload,
    decode_reply,
    encode_payload,
    encode_reply,
)
from gateway.bms.jk_nw_frame import (
    END_MARKER,
    FRAMER,
    HEADER_LEN,
    MAX_FRAME_LEN,
    MIN_FRAME_LEN,
    START,
    TRAILER_LEN,
    Command,
    Envelope,
    FrameType,
    Source,
    build_frame,
    checksum,
    frame_length,
    parse_envelope,
    read_all_request,
)
from gateway.bms.jk_nw_model import (
    CHEMISTRY_CODES,
    SIMULATOR_EXTRAS,
    alarms_from_warnings,
    from_reading,
    to_reading,
    warnings_from_alarms,
)
from gateway.bms.jk_nw_tags import (
    BATTERY_TYPES,
    CELLS_NAME,
    CELLS_TAG,
    CURRENT_NAME,
    DEFAULT_PROTOCOL_VERSION,
    KNOWN_PROTOCOL_VERSIONS,
    MAX_TEMPERATURE_C,
    PROTOCOL_VERSION_TAG,
    SIMULATOR_PROTOCOL_VERSION,
    STATUS_BALANCER,
    STATUS_BATTERY_DROPPED,
    STATUS_CHARGE_MOS,
    STATUS_DISCHARGE_MOS,
    TAG_BY_NAME,
    TAGS,
    TEMPERATURE_SENSOR_NAMES,
    WARNING_BITS,
    FieldValue,
    Kind,
    TagSpec,
)

__all__ = [
    "BATTERY_TYPES",
    "CELLS_NAME",
    "CELLS_TAG",
    "CHEMISTRY_CODES",
    "CURRENT_NAME",
    "DEFAULT_PROTOCOL_VERSION",
    "END_MARKER",
    "FRAMER",
    "HEADER_LEN",
    "KNOWN_PROTOCOL_VERSIONS",
    "MAX_FRAME_LEN",
    "MAX_TEMPERATURE_C",
    "MIN_FRAME_LEN",
    "PROTOCOL_VERSION_TAG",
    "SIMULATOR_EXTRAS",
    "SIMULATOR_PROTOCOL_VERSION",
    "START",
    "STATUS_BALANCER",
    "STATUS_BATTERY_DROPPED",
    "STATUS_CHARGE_MOS",
    "STATUS_DISCHARGE_MOS",
    "TAGS",
    "TAG_BY_NAME",
    "TEMPERATURE_SENSOR_NAMES",
    "TRAILER_LEN",
    "WARNING_BITS",
    "Command",
    "Envelope",
    "FieldValue",
    "FrameType",
    "JkNwReply",
    "Kind",
    "Source",
    "TagSpec",
    "alarms_from_warnings",
    "build_frame",
    "checksum",
    "current_from_raw",
    "current_to_raw",
    "decode_payload",
    "decode_reply",
    "encode_payload",
    "encode_reply",
    "frame_length",
    "from_reading",
    "parse_envelope",
    "read_all_request",
    "to_reading",
    "warnings_from_alarms",
]
