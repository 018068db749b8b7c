"""The JK wired "NW" protocol's frames (starting ``4E 57``), payload not interpreted: building a frame around
a payload (:func:`build_frame`, :func:`read_all_request`), checking one's start, length, end marker and
checksum (:func:`parse_envelope`), and finding its length on a serial line (:data:`FRAMER`).

Frame layout (requests and replies alike), all numbers big-endian::

    4E 57 | length (2) | terminal (4) | command | source | type | payload ... | record (4) | 68 | checksum (4)

``length`` counts from the length field itself to the last checksum byte (frame length − 2). The checksum field
is ``00 00 HI LO`` where ``HI LO`` is the 16-bit sum of every byte before it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from gateway.errors import FrameError

START: Final = b"\x4e\x57"
END_MARKER: Final = 0x68
HEADER_LEN: Final = 11
"""Start (2), length (2), terminal (4), command, source, type."""
TRAILER_LEN: Final = 9
"""Record number (4), end marker, checksum (4)."""
MIN_FRAME_LEN: Final = HEADER_LEN + TRAILER_LEN
MAX_FRAME_LEN: Final = 1024
"""No JK reply comes near this (about 300 bytes for 32 cells); a larger length field is garbage."""


class Command(enum.IntEnum):
    ACTIVATE = 0x01
    WRITE = 0x02
    READ = 0x03
    PASSWORD = 0x05
    READ_ALL = 0x06


class Source(enum.IntEnum):
    BMS = 0x00
    BLUETOOTH = 0x01
    GPS = 0x02
    PC = 0x03


class FrameType(enum.IntEnum):
    REQUEST = 0x00
    REPLY = 0x01
    UPLOAD = 0x02


# --- envelope ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """A frame with verified start, length, end marker and checksum, payload not yet interpreted."""

    command: int
    source: int
    frame_type: int
    payload: bytes
    terminal: int = 0
    record_number: int = 0


def checksum(data: bytes) -> int:
    """16-bit sum of ``data``: the value of a frame's checksum over every byte before the checksum field."""
    return sum(data) & 0xFFFF


def frame_length(header: bytes) -> int:
    """Total frame length in bytes from the first four bytes of a frame (start and length field).

    :raises FrameError: bad start or an impossible length.
    """
    if len(header) < 4:
        raise FrameError("truncated", f"{len(header)} bytes, need 4 to read the length field")
    if header[:2] != START:
        raise FrameError("bad start", f"expected 4E 57, got {header[:2].hex(' ').upper()}")
    total = int.from_bytes(header[2:4], "big") + 2
    if not MIN_FRAME_LEN <= total <= MAX_FRAME_LEN:
        raise FrameError("bad length", f"length field {total - 2} outside {MIN_FRAME_LEN - 2}..{MAX_FRAME_LEN - 2}")
    return total


def build_frame(
    command: int,
    source: int,
    frame_type: int,
    payload: bytes,
    terminal: int = 0,
    record_number: int = 0,
) -> bytes:
    """Wrap ``payload`` into a complete frame with length, trailer and checksum."""
    length = HEADER_LEN + len(payload) + TRAILER_LEN - 2
    body = b"".join(
        (
            START,
            length.to_bytes(2, "big"),
            terminal.to_bytes(4, "big"),
            bytes((command, source, frame_type)),
            payload,
            record_number.to_bytes(4, "big"),
            bytes((END_MARKER,)),
        )
    )
    return body + checksum(body).to_bytes(4, "big")


def parse_envelope(frame: bytes) -> Envelope:
    """Verify a frame's start, length field, end marker and checksum.

    :raises FrameError: naming the first fault found.
    """
    total = frame_length(frame[:4])
    if len(frame) < total:
        raise FrameError("truncated", f"length field says {total} bytes, got {len(frame)}")
    if len(frame) > total:
        raise FrameError("bad length", f"length field says {total} bytes, got {len(frame)}")
    end_at = total - 5
    if frame[end_at] != END_MARKER:
        raise FrameError("bad end marker", f"expected 0x68 at offset {end_at}, got 0x{frame[end_at]:02X}")
    stated = int.from_bytes(frame[-2:], "big")
    computed = checksum(frame[:-4])
    if stated != computed:
        raise FrameError("bad checksum", f"frame says 0x{stated:04X}, computed 0x{computed:04X}")
    return Envelope(
        command=frame[8],
        source=frame[9],
        frame_type=frame[10],
        payload=frame[HEADER_LEN : total - TRAILER_LEN],
        terminal=int.from_bytes(frame[4:8], "big"),
        record_number=int.from_bytes(frame[end_at - 4 : end_at], "big"),
    )


# --- requests ----------------------------------------------------------------------------------------------


def read_all_request(source: Source = Source.PC) -> bytes:
    """The read-all request: command 0x06, register 0x00 (all)."""
    return build_frame(Command.READ_ALL, source, FrameType.REQUEST, b"\x00")


class _JkNwFramer:
    """Frame boundaries for :class:`~gateway.transport.serial_link.SerialLink`."""

    start = START
    header_len = 4

    def frame_length(self, header: bytes) -> int:
        return frame_length(header)


FRAMER: Final = _JkNwFramer()
