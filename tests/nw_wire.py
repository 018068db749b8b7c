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

    def commands(self) -> list[int]:
        """The command byte of each frame sent; every byte must belong to a valid frame."""
        with self._lock:
            data = bytes(self._bytes)
        commands: list[int] = []
        while data:
            length = jk_nw.frame_length(data[:4])
            commands.append(jk_nw.parse_envelope(data[:length]).command)
            data = data[length:]
        return commands
