"""Real JK BMS "NW" frames (requests and read-all replies) for tests, loaded from ``data/jk_nw_frames.json``.

The JSON is a copy of entries 0-6 of the research file ``shared/testdata/jk_frames.json``; every entry keeps
its ``source`` and ``origin``. Entries 0-1 are read-all requests, 2-6 are the real replies A-E.

The small frame helpers here do their own arithmetic on purpose, so tests can check the codec against
something that does not share its code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, NamedTuple

DATA_FILE: Final = Path(__file__).parent / "data" / "jk_nw_frames.json"

HEADER_LEN: Final = 11
"""Start (2), length (2), terminal (4), command, source, frame type."""
TRAILER_LEN: Final = 9
"""Record number (4), end marker 0x68, checksum field (4)."""


class Request(NamedTuple):
    frame: bytes
    expected: dict[str, Any]


class Reply(NamedTuple):
    id: str
    """The letter the research notes use for the frame, "A" to "E"."""
    frame: bytes
    expected: dict[str, Any]


def _load() -> tuple[list[Request], list[Reply]]:
    entries: list[dict[str, Any]] = json.loads(DATA_FILE.read_text(encoding="utf-8"))["frames"]
    requests: list[Request] = []
    replies: list[Reply] = []
    for entry in entries:
        frame = bytes.fromhex(entry["hex"])
        if "request" in entry["family"]:
            requests.append(Request(frame, entry["expected"]))
        else:
            replies.append(Reply(chr(ord("A") + len(replies)), frame, entry["expected"]))
    return requests, replies


_requests, _replies = _load()
REQUESTS: Final[list[Request]] = _requests
"""The read-all requests: source 0x03 (PC), then source 0x02 (GPS)."""
REPLIES: Final[list[Reply]] = _replies
"""The five real read-all replies A-E."""
REPLY_BY_ID: Final[dict[str, Reply]] = {reply.id: reply for reply in REPLIES}


def sum16(data: bytes) -> int:
    """The NW checksum value: the 16-bit sum of ``data``."""
    return sum(data) & 0xFFFF


def payload_of(frame: bytes) -> bytes:
    """The bytes between a frame's 11-byte header and its 9-byte trailer."""
    return frame[HEADER_LEN:-TRAILER_LEN]


def wrap(payload: bytes, header_from: bytes = b"", frame_type: int | None = None) -> bytes:
    """A frame around ``payload`` with a correct length field, end marker and checksum.

    The header (terminal, command, source, type) and record number are copied from ``header_from`` when
    given, else they are those of a read-all reply from the BMS. ``frame_type`` overrides the type byte.
    """
    if header_from:
        head = bytearray(header_from[:HEADER_LEN])
        record = header_from[-TRAILER_LEN : -TRAILER_LEN + 4]
    else:
        head = bytearray(b"\x4e\x57\x00\x00\x00\x00\x00\x00\x06\x00\x01")
        record = b"\x00\x00\x00\x00"
    if frame_type is not None:
        head[10] = frame_type
    total = HEADER_LEN + len(payload) + TRAILER_LEN
    head[2:4] = (total - 2).to_bytes(2, "big")
    body = bytes(head) + payload + record + b"\x68"
    return body + b"\x00\x00" + sum16(body).to_bytes(2, "big")


def with_temperatures(frame: bytes, raw: int) -> bytes:
    """``frame`` with tags 0x80, 0x81 and 0x82 all set to ``raw``.

    In every real reply the three temperature tags come right after the cell block (0x79, length, cells),
    each as a tag byte and a big-endian u16, so they are patched by position, not through the codec.
    """
    payload = bytearray(payload_of(frame))
    first = 2 + payload[1]
    for index, tag in enumerate((0x80, 0x81, 0x82)):
        at = first + 3 * index
        assert payload[at] == tag, f"tag 0x{tag:02X} expected at payload offset {at}"
        payload[at + 1 : at + 3] = raw.to_bytes(2, "big")
    return wrap(bytes(payload), header_from=frame)


def without_protocol_version(frame: bytes) -> bytes:
    """``frame`` without its last tag, 0xC0 (protocol version), as every real reply ends with ``C0 01``."""
    payload = payload_of(frame)
    assert payload[-2] == 0xC0, "tag 0xC0 expected last"
    return wrap(payload[:-2], header_from=frame)


def with_current_raw(frame: bytes, raw: int) -> bytes:
    """``frame`` with tag 0x84 (current) set to ``raw``; 0x84 follows 0x80–0x83 (3 bytes each) after the cells."""
    payload = bytearray(payload_of(frame))
    at = 2 + payload[1] + 4 * 3
    assert payload[at] == 0x84, f"tag 0x84 expected at payload offset {at}"
    payload[at + 1 : at + 3] = raw.to_bytes(2, "big")
    return wrap(bytes(payload), header_from=frame)
