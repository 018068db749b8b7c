"""The BMS's last replies, kept for the support bundle (``bms-gateway report``), with the password taken out.

The JK BMS sends its settings password in every read-all reply (tag 0xB2, 10 bytes, :mod:`gateway.bms.jk_nw`),
and a JK-PB its passcodes in the info block (:mod:`gateway.bms.jk_modbus`). Nothing that leaves the service may
carry them, so the drivers hand this ring only redacted bytes:

* **JK NW** (:func:`redact_nw_frame`): the frame as received, with the 10 bytes after tag 0xB2 replaced by
  :data:`MASK_BYTE` (``*``). Length and every other byte stay as they were, so the checksum no longer matches:
  the bundle says so. Fail closed: where the tags cannot be walked (an unknown tag, a truncated field), every
  byte from there to the end of the payload is masked, since the password could sit anywhere in it.
* **JK-PB** (:func:`pb_block_hex`): the block image the driver made of the FC03 replies or the trigger frame,
  at the block's offsets; its passcodes were already zeroed when the image was made
  (:func:`~gateway.bms.jk_modbus.image_from_registers`, :func:`~gateway.bms.jk_modbus.parse_frame`). Bytes not
  received show as ``--``.

Each entry also holds its decode (the password as ``<redacted>``). Bound: the last :data:`MAX_REPLIES` replies,
each at most :data:`~gateway.bms.jk_nw.MAX_FRAME_LEN` bytes (a JK-PB block image :data:`~gateway.bms.jk_modbus.
BLOCK_SIZE`), so at most 16 KiB of reply bytes; the hex and decode of one take a few kB more.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.bms import jk_nw
from gateway.secret import REDACTED, Secret

MAX_REPLIES: Final = 16
"""Replies kept (JK-PB: block images, up to three per pack and poll)."""
MASK_BYTE: Final = 0x2A
"""What a password byte becomes: ``*``."""
NW_NOTE: Final = (
    "JK NW read-all reply as received; the password's bytes (tag 0xB2) are replaced by 2A ('*'), "
    "so the frame's checksum no longer matches"
)
PB_NOTE: Final = (
    "JK-PB {block} block as the driver assembled it (block offsets from 0; FC03 replies or the trigger frame); "
    "passcodes zeroed, '--' not read"
)


@dataclass(frozen=True, slots=True)
class BmsReply:
    """One reply, redacted: when (wall clock, s), from which pack or port, its bytes as hex, its decode."""

    at_s: float
    source: str
    hex: str
    decode: Mapping[str, Any]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"at_s": round(self.at_s, 3), "source": self.source, "hex": self.hex, "decode": dict(self.decode),
                "note": self.note}  # fmt: skip


class ReplyRing:
    """The last :data:`MAX_REPLIES` BMS replies; thread-safe (the poller adds, the status server reads)."""

    def __init__(self, max_replies: int = MAX_REPLIES) -> None:
        self._replies: deque[BmsReply] = deque(maxlen=max_replies)
        self._lock = threading.Lock()

    @property
    def max_replies(self) -> int:
        return self._replies.maxlen or 0

    def add(self, reply: BmsReply) -> None:
        with self._lock:
            self._replies.append(reply)

    def since(self, at_s: float) -> list[BmsReply]:
        """The replies received at or after wall time ``at_s``, oldest first."""
        with self._lock:
            return [reply for reply in self._replies if reply.at_s >= at_s]


def redact_nw_frame(frame: bytes) -> bytes:
    """``frame`` with the password's bytes masked (see the module docs); the same length, nothing else changed."""
    out = bytearray(frame)
    end = len(frame) - jk_nw.TRAILER_LEN
    offset = jk_nw.HEADER_LEN
    while offset < end:
        tag = out[offset]
        if tag == jk_nw.CELLS_TAG and offset + 1 < end:
            offset += 2 + out[offset + 1]
            continue
        spec = jk_nw.TAGS.get(tag)
        if spec is None or offset + 1 + spec.length > end:
            break  # lost track of the fields: mask the rest below
        if tag == jk_nw.TAG_BY_NAME["password"]:
            out[offset + 1 : offset + 1 + spec.length] = bytes([MASK_BYTE]) * spec.length
        offset += 1 + spec.length
    else:
        return bytes(out)
    first = max(offset, min(jk_nw.HEADER_LEN, len(out)))
    out[first:end] = bytes([MASK_BYTE]) * max(0, end - first)
    return bytes(out)


def nw_reply(at_s: float, source: str, frame: bytes, fields: Mapping[str, object]) -> BmsReply:
    """The ring's entry for a JK NW reply ``frame`` and its decoded ``fields``."""
    return BmsReply(at_s, source, redact_nw_frame(frame).hex(" ").upper(), _plain(fields), NW_NOTE)


def pb_block_hex(data: bytes, known: bytes) -> str:
    """A JK-PB block image as hex, ``--`` for bytes not received."""
    return " ".join(f"{byte:02X}" if have else "--" for byte, have in zip(data, known, strict=True))


def pb_reply(at_s: float, source: str, block: str, data: bytes, known: bytes, values: Mapping[str, object]) -> BmsReply:
    """The ring's entry for a JK-PB block image (passcodes already zeroed) and its decoded ``values``."""
    return BmsReply(at_s, source, pb_block_hex(data, known), _plain(values), PB_NOTE.format(block=block))


def _plain(fields: Mapping[str, object]) -> dict[str, Any]:
    """JSON-able values; a :class:`~gateway.secret.Secret` becomes ``<redacted>`` (never its value)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, Secret):
            out[name] = REDACTED
        elif isinstance(value, tuple):
            out[name] = list(value)
        else:
            out[name] = value
    return out
