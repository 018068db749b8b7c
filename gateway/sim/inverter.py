"""A simulated inverter on the CAN bus: hears the battery frames as an inverter would, and sends its heartbeat.

It decodes every frame with the profile (into published value names where a field carries one value or one
flag), records when each arrived, and sends the profile's heartbeat frame every second. Used by the demo and
by tests; it shares no state with the gateway but the bus.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import can

from gateway.errors import FrameError
from gateway.profiles import CanFrameCodec, Profile
from gateway.values import Value

HEARTBEAT_PERIOD_S = 1.0


def named_values(codec: CanFrameCodec, data: bytes) -> dict[str, Value]:
    """Decode ``data`` keyed by the published value each field carries (field name when it carries several)."""
    decoded = codec.decode(data)
    out: dict[str, Value] = {}
    for spec in codec.spec.fields:
        if spec.name not in decoded:
            continue
        if spec.value is not None:
            key = spec.value
        elif len(spec.flags) == 1:
            key = spec.flags[0]
        else:
            key = spec.name
        out[key] = decoded[spec.name]
    return out


@dataclass
class HeardFrame:
    at_s: float
    """time.monotonic() of arrival, s."""
    data: bytes
    values: dict[str, Value] = field(default_factory=dict)


class InverterSimulator:
    """Listens on ``bus`` for the profile's frames; sends the heartbeat while ``send_heartbeat`` is true."""

    def __init__(self, profile: Profile, bus: can.BusABC, *, send_heartbeat: bool = True) -> None:
        self.profile = profile
        self._bus = bus
        self._codecs = {codec.can_id: codec for codec in profile.frames}
        self.send_heartbeat = send_heartbeat
        self.heard: dict[int, HeardFrame] = {}
        self.arrivals: dict[int, list[float]] = {}
        self.decode_errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, name in ((self._listen, "inverter-rx"), (self._heartbeat, "inverter-hb")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads.clear()

    def values(self) -> dict[str, Value]:
        """Every value heard, merged over all frames (newest wins)."""
        with self._lock:
            merged: dict[str, Value] = {}
            for frame in self.heard.values():
                merged.update(frame.values)
            return merged

    def last_heard_age_s(self) -> float | None:
        with self._lock:
            if not self.heard:
                return None
            return time.monotonic() - max(frame.at_s for frame in self.heard.values())

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._bus.recv(timeout=0.1)
            except can.CanError:
                continue
            if message is None:
                continue
            codec = self._codecs.get(message.arbitration_id)
            if codec is None:
                continue
            now = time.monotonic()
            data = bytes(message.data)
            try:
                values = named_values(codec, data)
            except FrameError:
                self.decode_errors += 1
                continue
            with self._lock:
                self.heard[message.arbitration_id] = HeardFrame(now, data, values)
                self.arrivals.setdefault(message.arbitration_id, []).append(now)

    def _heartbeat(self) -> None:
        heartbeat = self.profile.heartbeat
        if heartbeat is None:
            return
        message = can.Message(arbitration_id=heartbeat.can_id, data=bytes(8), is_extended_id=False)
        while not self._stop.wait(HEARTBEAT_PERIOD_S):
            if self.send_heartbeat:
                with contextlib.suppress(can.CanError):
                    self._bus.send(message)
