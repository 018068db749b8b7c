"""The CAN frames the service sent and received, in a fixed ring, for the support bundle (``bms-gateway report``).

:class:`~gateway.transport.can_link.CanLink` adds every frame the adapter accepted (``tx``) and every standard
data frame it read from the bus (``rx``), stamped with the wall clock; the status endpoint hands the last minutes
over (``GET /support``) and ``report`` writes them as a candump log. The ring is one preallocated buffer of
:data:`MAX_FRAMES` records of :data:`RECORD_BYTES` bytes (time, id, direction, length, 8 data bytes): 30 000
frames, 600 000 bytes, whatever the traffic: the 10 minutes ``report`` asks for by default at up to 50 frames
a second, both directions together. On a busier bus the oldest frames go first.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any, Final

MAX_FRAMES: Final = 30_000
"""Frames kept; the oldest is overwritten first."""
_RECORD: Final = struct.Struct("<dHBB8s")
RECORD_BYTES: Final = _RECORD.size
"""Bytes one frame takes in the ring: wall time (8), id (2), direction (1), length (1), data (8)."""
TX: Final = "tx"
RX: Final = "rx"


@dataclass(frozen=True, slots=True)
class CanRecord:
    """One frame: wall time in s, direction (:data:`TX` sent, :data:`RX` received), 11-bit id, data."""

    at_s: float
    direction: str
    can_id: int
    data: bytes

    def to_json(self) -> list[Any]:
        return [round(self.at_s, 6), self.direction, self.can_id, self.data.hex()]

    @classmethod
    def from_json(cls, item: list[Any]) -> CanRecord:
        """The inverse of :meth:`to_json`. :raises ValueError: / :raises TypeError: not such a record."""
        at_s, direction, can_id, data = item
        if direction not in (TX, RX) or not 0 <= int(can_id) <= 0x7FF:
            raise ValueError(f"not a CAN record: {item!r}")
        return cls(float(at_s), str(direction), int(can_id), bytes.fromhex(data))


class FrameRing:
    """A fixed-size ring of CAN frames; thread-safe (the loop sends, the reader thread receives, HTTP reads)."""

    def __init__(self, max_frames: int = MAX_FRAMES) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {max_frames}")
        self._buffer = bytearray(max_frames * RECORD_BYTES)
        self._max = max_frames
        self._next = 0
        """Slot the next frame goes into."""
        self._count = 0
        self._lock = threading.Lock()

    @property
    def capacity_bytes(self) -> int:
        """The ring's whole memory for frames (fixed at construction)."""
        return len(self._buffer)

    @property
    def max_frames(self) -> int:
        return self._max

    def add(self, at_s: float, direction: str, can_id: int, data: bytes | bytearray) -> None:
        """Keep one frame (at most 8 data bytes), overwriting the oldest when full."""
        record = _RECORD.pack(at_s, can_id, direction == TX, len(data), bytes(data[:8]))
        with self._lock:
            start = self._next * RECORD_BYTES
            self._buffer[start : start + RECORD_BYTES] = record
            self._next = (self._next + 1) % self._max
            self._count = min(self._count + 1, self._max)

    def since(self, at_s: float) -> list[CanRecord]:
        """The frames stamped at or after wall time ``at_s``, oldest first."""
        with self._lock:
            first = (self._next - self._count) % self._max
            slots = [(first + i) % self._max for i in range(self._count)]
            raw = [bytes(self._buffer[s * RECORD_BYTES : (s + 1) * RECORD_BYTES]) for s in slots]
        records = []
        for item in raw:
            stamp, can_id, sent, length, data = _RECORD.unpack(item)
            if stamp >= at_s:
                records.append(CanRecord(stamp, TX if sent else RX, can_id, data[:length]))
        return records
