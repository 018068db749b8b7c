"""Records what the gateway puts on a null-modem towards a simulated JK (wired protocol), frame by frame."""

from __future__ import annotations

import threading

from gateway.bms import jk_nw
from gateway.sim.nullmodem import B_TO_A, NullModem


class Wire:
    """Records every byte the gateway puts on the cable (the direction towards the BMS)."""

    def __init__(self, modem: NullModem) -> None:
        self._lock = threading.Lock()
        self._bytes = bytearray()
        modem.set_transform(B_TO_A, self._record)

    def _record(self, chunk: bytes) -> bytes:
        with self._lock:
            self._bytes += chunk
        return chunk

    def frames(self) -> list[bytes]:
        """Each frame sent, whole; every byte must belong to a valid frame."""
        with self._lock:
            data = bytes(self._bytes)
        frames: list[bytes] = []
        while data:
            length = jk_nw.frame_length(data[:4])
            jk_nw.parse_envelope(data[:length])
            frames.append(data[:length])
            data = data[length:]
        return frames

    def commands(self) -> list[int]:
        """The command byte of each frame sent."""
        return [frame[8] for frame in self.frames()]
