"""Real JK-PB data for tests, loaded from ``data/jk_pb_frames.json``.

The JSON is a copy of entries 7-16 of the research file ``shared/testdata/jk_frames.json``; every entry keeps its
``source`` and ``origin``. Entries 0-2 are the three 300-byte trigger frames (status, settings, about) that
a JK_PB2A16S20P at address 3 sent; entries 3-9 are an FC03 register dump of another one at address 1.

The helpers here do their own arithmetic (CRC, checksum) on purpose, so tests check the codec against something
that does not share its code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, NamedTuple

DATA_FILE: Final = Path(__file__).parent / "data" / "jk_pb_frames.json"


class TriggerFrame(NamedTuple):
    frame: bytes
    frame_type: int
    ack: bytes
    """The FC16 acknowledgement that followed the frame on the wire."""
    expected: dict[str, Any]


class DumpRead(NamedTuple):
    name: str
    """The dump's block label: RT_A, RT_B, RT_C, SETTINGS_1, SETTINGS_2, PACKED_BIT, INFO."""
    address: int
    words: list[int]
    expected: dict[str, Any]


def _load() -> tuple[list[TriggerFrame], list[DumpRead]]:
    entries: list[dict[str, Any]] = json.loads(DATA_FILE.read_text(encoding="utf-8"))["frames"]
    frames: list[TriggerFrame] = []
    reads: list[DumpRead] = []
    for entry in entries:
        if "0x55AA" in entry["family"]:
            ack_hex = entry["family"].rsplit("ACK ", 1)[-1]  # "...; ACK 03 10 16 1E 00 01 64 65"
            frame = bytes.fromhex(entry["hex"])
            frames.append(TriggerFrame(frame, frame[4], bytes.fromhex(ack_hex), entry["expected"]))
        else:
            words = [int(word, 16) for word in entry["hex"].split()]
            reads.append(
                DumpRead(entry["block"], int(entry["request"]["start_register"], 16), words, entry["expected"])
            )
    return frames, reads


_frames, _reads = _load()
TRIGGER_FRAMES: Final[list[TriggerFrame]] = _frames
"""Status (type 2), settings (type 1), about (type 3), in that order; all from address 3."""
FRAME_BY_TYPE: Final[dict[int, TriggerFrame]] = {f.frame_type: f for f in TRIGGER_FRAMES}
DUMP: Final[list[DumpRead]] = _reads
DUMP_BY_NAME: Final[dict[str, DumpRead]] = {r.name: r for r in DUMP}
FRAMES_UNIT: Final = 3
DUMP_UNIT: Final = 1
PASSCODES: Final = ("136913", "LZet3NuV4MXr", "1234")
"""Passcode texts the captures carry (setup passcode of the frames, of the dump, device passcode of both)."""


def modbus_crc(data: bytes) -> bytes:
    """CRC-16/MODBUS, low byte first: written table-driven here, bitwise in the codec."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return bytes((crc & 0xFF, crc >> 8))


def frame_sum(frame: bytes) -> int:
    """Byte 299 of a trigger frame: the sum of bytes 0-298, mod 256."""
    return sum(frame[:299]) % 256


def with_frame_sum(frame: bytes | bytearray) -> bytes:
    """``frame`` (300 bytes) with its checksum byte redone."""
    return bytes(frame[:299]) + bytes((frame_sum(bytes(frame)),))


def split_requests(wire: bytes) -> list[bytes]:
    """Modbus RTU requests (FC03 or FC16) out of the bytes a master sent; fails on anything else."""
    requests: list[bytes] = []
    at = 0
    while at < len(wire):
        function = wire[at + 1]
        if function == 0x03:
            length = 8
        elif function == 0x10:
            length = 9 + wire[at + 6]
        else:
            raise AssertionError(f"function 0x{function:02X} on the wire at byte {at}: {wire[at : at + 12].hex(' ')}")
        request = wire[at : at + length]
        assert len(request) == length, f"truncated request at byte {at}"
        assert modbus_crc(request[:-2]) == request[-2:], f"bad CRC at byte {at}: {request.hex(' ')}"
        requests.append(request)
        at += length
    return requests
