"""The JK-PB's requests and frames on the wire: the FC03 read plan, the 300-byte trigger frames and their
acknowledgements, the Modbus CRC, and the one check of which requests the gateway may send at all.

An FC 0x10 write of the value 0 to one trigger register (:func:`trigger_request`) makes the BMS send a
300-byte frame ``55 AA EB 90 type 00 data… checksum``, then ``00``, the FC 0x10 acknowledgement and ``00``;
:func:`scan_trigger_reply` finds frame and acknowledgement in the bytes received. :func:`read_plan` says
which FC03 reads (at most :data:`MAX_READ_WORDS` words each) fetch given fields. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.bms.jk_modbus_image import BlockImage, Value, encode_image, scrub_passcodes
from gateway.bms.jk_modbus_tables import BLOCK_BY_FRAME_TYPE, TRIGGER_REGISTERS, Block, Kind
from gateway.errors import FrameError

MAX_READ_WORDS: Final = 64
"""Most words one FC03 read asks for: about 40 is known to work and 128 to fail; 64 is safe in practice."""
MAX_GAP_WORDS: Final = 24
"""Unwanted words a read may span to join two wanted ranges: at 115200 baud 24 words (4 ms) cost less than
the turnaround of a second request."""

READ_HOLDING_REGISTERS: Final = 0x03
WRITE_MULTIPLE_REGISTERS: Final = 0x10

FRAME_START: Final = b"\x55\xaa\xeb\x90"
FRAME_LEN: Final = 300
FRAME_DATA_AT: Final = 6
"""Frame byte of block offset 0 (after start marker, frame type and one more byte)."""
FRAME_DATA_LEN: Final = FRAME_LEN - FRAME_DATA_AT - 1
"""Block bytes a frame carries: everything up to the checksum byte (offsets 0x000–0x124)."""
TRIGGER_ACK_LEN: Final = 8


@dataclass(frozen=True, slots=True)
class Read:
    """One FC03 request."""

    address: int
    count: int
    """Words, at most :data:`MAX_READ_WORDS`."""


def read_plan(
    block: Block,
    names: Iterable[str],
    *,
    max_words: int = MAX_READ_WORDS,
    max_gap_words: int = MAX_GAP_WORDS,
) -> tuple[Read, ...]:
    """Reads of at most ``max_words`` each, at even byte offsets, that fetch the named fields.

    Neighbouring fields share a read when the words between them number at most ``max_gap_words``, unless
    a secret lies between them: passcodes are never asked for.

    :raises ValueError: an unknown or secret name, or a field longer than ``max_words``.
    """
    spans: list[tuple[int, int]] = []
    for name in names:
        spec = block.by_name.get(name)
        if spec is None or spec.kind is Kind.SECRET:
            raise ValueError(f"{block.name} block has no readable field {name}")
        start, end = spec.offset & ~1, (spec.end + 1) & ~1
        if end - start > 2 * max_words:
            raise ValueError(f"field {name} is longer than {max_words} words")
        spans.append((start, end))
    secrets = [(s.offset, s.end) for s in block.fields if s.kind is Kind.SECRET]
    chunks: list[list[int]] = []
    for start, end in sorted(spans):
        if chunks:
            chunk = chunks[-1]
            secret_between = any(s < start and e > chunk[1] for s, e in secrets)
            if end - chunk[0] <= 2 * max_words and start - chunk[1] <= 2 * max_gap_words and not secret_between:
                chunk[1] = max(chunk[1], end)
                continue
        chunks.append([start, end])
    return tuple(Read(block.base + start, (end - start) // 2) for start, end in chunks)


# --- trigger frames ----------------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (reflected polynomial 0xA001, initial 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def _check_unit(unit: int) -> None:
    if not 1 <= unit <= 247:
        raise ValueError(f"Modbus unit {unit} outside 1–247")


def trigger_request(unit: int, block: Block) -> bytes:
    """The 11-byte FC16 write of one word, 0, to ``block``'s trigger register."""
    _check_unit(unit)
    return with_crc(
        bytes((unit, WRITE_MULTIPLE_REGISTERS)) + block.trigger.to_bytes(2, "big") + b"\x00\x01\x02\x00\x00"
    )


def trigger_ack(unit: int, block: Block) -> bytes:
    """The 8-byte FC16 acknowledgement ``unit`` sends after ``block``'s frame."""
    _check_unit(unit)
    return with_crc(bytes((unit, WRITE_MULTIPLE_REGISTERS)) + block.trigger.to_bytes(2, "big") + b"\x00\x01")


def frame_checksum(frame: bytes) -> int:
    """Byte 299 of a trigger frame: the sum of bytes 0–298 mod 256."""
    return sum(frame[: FRAME_LEN - 1]) & 0xFF


def parse_frame(frame: bytes) -> BlockImage:
    """Verify a 300-byte trigger frame and return the (little-endian) image of the block it carries.

    :raises FrameError: bad length, bad start, bad checksum or an unknown frame type.
    """
    if len(frame) != FRAME_LEN:
        raise FrameError("bad length", f"{len(frame)} bytes, a trigger frame has {FRAME_LEN}")
    if frame[:4] != FRAME_START:
        raise FrameError("bad start", f"expected 55 AA EB 90, got {frame[:4].hex(' ').upper()}")
    computed = frame_checksum(frame)
    if frame[-1] != computed:
        raise FrameError("bad checksum", f"frame says 0x{frame[-1]:02X}, computed 0x{computed:02X}")
    block = BLOCK_BY_FRAME_TYPE.get(frame[4])
    if block is None:
        raise FrameError("unknown frame type", f"0x{frame[4]:02X}")
    data = bytearray(block.size)
    known = bytearray(block.size)
    data[:FRAME_DATA_LEN] = frame[FRAME_DATA_AT : FRAME_LEN - 1]
    known[:FRAME_DATA_LEN] = b"\x01" * FRAME_DATA_LEN
    passcode = scrub_passcodes(block, data, known)
    return BlockImage(block, bytes(data), bytes(known), "little", passcode)


def encode_frame(block: Block, values: Mapping[str, Value]) -> bytes:
    """The 300-byte frame a JK-PB sends for ``block`` holding ``values`` (the simulator's side)."""
    data = encode_image(block, values, "little")[:FRAME_DATA_LEN]
    body = FRAME_START + bytes((block.frame_type, 0)) + data
    return body + bytes((frame_checksum(body),))


def _ack_unit(data: bytes, block: Block) -> int | None:
    """The unit of the first valid FC16 acknowledgement for ``block``'s trigger register in ``data``."""
    tail = block.trigger.to_bytes(2, "big") + b"\x00\x01"
    at = data.find(bytes((WRITE_MULTIPLE_REGISTERS,)) + tail, 1)
    while at >= 1:
        candidate = data[at - 1 : at - 1 + TRIGGER_ACK_LEN]
        if len(candidate) == TRIGGER_ACK_LEN and with_crc(candidate[:6]) == candidate:
            return candidate[0]
        at = data.find(bytes((WRITE_MULTIPLE_REGISTERS,)) + tail, at + 1)
    return None


def scan_trigger_reply(buffer: bytes, unit: int, block: Block, *, final: bool = False) -> BlockImage | None:
    """Find ``block``'s frame and ``unit``'s acknowledgement in the bytes received since the trigger request.

    Bytes before a start marker (an adapter's echo of the request, noise) are skipped, and a marker that
    starts no valid frame is passed over. Returns None while the reply may still be incomplete; with
    ``final`` (no more bytes will come) it raises instead.

    :raises FrameError: the frame is bad (once its acknowledgement shows the reply is over), of the wrong
        type, acknowledged by another unit, or (``final``) missing, truncated or unacknowledged.
    """
    fault: FrameError | None = None
    search_from = 0
    while (start := buffer.find(FRAME_START, search_from)) >= 0:
        frame = buffer[start : start + FRAME_LEN]
        if len(frame) < FRAME_LEN:
            if final:
                raise fault or FrameError("truncated", f"{len(frame)} of {FRAME_LEN} frame bytes")
            return None
        try:
            image = parse_frame(frame)
            if image.block is not block:
                raise FrameError(
                    "wrong frame type", f"asked for {block.name} (0x{block.frame_type:02X}), got 0x{frame[4]:02X}"
                )
        except FrameError as exc:
            fault = fault or exc
            search_from = start + 1
            continue
        acked_by = _ack_unit(buffer[start + FRAME_LEN :], block)
        if acked_by is None:
            if final:
                raise FrameError("no acknowledgement", f"{block.name} frame without the FC16 reply naming its unit")
            return None
        if acked_by != unit:
            raise FrameError("wrong unit", f"{block.name} frame acknowledged by unit {acked_by}, asked unit {unit}")
        return image
    if fault is not None and (final or _ack_unit(buffer, block) is not None):
        raise fault
    if final:
        raise FrameError("no frame", f"{len(buffer)} bytes without a 55 AA EB 90 frame")
    return None


def is_permitted_request(frame: bytes) -> bool:
    """True for the only requests the gateway may send: an FC03 read, or the FC16 write of one word, 0, to a
    trigger register, each to one unit. Everything else (any other write above all) is refused before it
    reaches the wire, and so is any request to unit 0: that is the broadcast address, which every pack on the
    bus would obey without answering (Modbus over Serial Line V1.02 §2.2: 0 broadcast, 1–247 a unit,
    248–255 reserved)."""
    if len(frame) < 4 or with_crc(frame[:-2]) != frame:
        return False
    if not 1 <= frame[0] <= 247:
        return False
    if frame[1] == READ_HOLDING_REGISTERS:
        return len(frame) == 8
    if frame[1] == WRITE_MULTIPLE_REGISTERS:
        register = int.from_bytes(frame[2:4], "big")
        return len(frame) == 11 and register in TRIGGER_REGISTERS and frame[4:9] == b"\x00\x01\x02\x00\x00"
    return False
