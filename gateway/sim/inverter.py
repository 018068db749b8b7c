"""A simulated inverter on the CAN bus: hears the battery frames as an inverter would, and speaks like one.

It decodes every frame with the profile (into published value names where a field carries one value or one
flag) and records when each arrived. Every second (while ``send_heartbeat`` is true) it sends each of the
profile's inverter frames, its value fields filled from ``measurements`` (0 for any not given), and, for a
request-mode profile whose request id is not one of those frames, the request frame (8 zero bytes).
:meth:`InverterSimulator.send_request` sends one request on demand. Used by the demo and by tests; it shares no
state with the gateway but the bus.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
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
    """Listens on ``bus`` for the profile's frames; sends its own frames while ``send_heartbeat`` is true.

    :param measurements: inverter values (``INVERTER_VALUE_NAMES``) its frames carry, e.g. SMA's 0x305.
    """

    def __init__(
        self,
        profile: Profile,
        bus: can.BusABC,
        *,
        send_heartbeat: bool = True,
        measurements: Mapping[str, Value] | None = None,
    ) -> None:
        self.profile = profile
        self._bus = bus
        self._codecs = {codec.can_id: codec for codec in profile.frames}
        self.send_heartbeat = send_heartbeat
        self.measurements: dict[str, Value] = dict(measurements or {})
        self.requests_sent = 0
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

    def send_request(self) -> None:
        """Send the profile's request frame once (request mode; 8 zero bytes unless it is an inverter frame)."""
        request_id = self.profile.request_id
        if request_id is None:
            raise ValueError(f"profile {self.profile.name} is not a request-mode profile")
        codec = self.profile.inverter_frame(request_id)
        self._send(request_id, bytes(8) if codec is None else self._payload(codec))
        self.requests_sent += 1

    def _payload(self, codec: CanFrameCodec) -> bytes:
        return codec.encode({**dict.fromkeys(codec.value_names, 0), **self.measurements})

    def _send(self, can_id: int, data: bytes) -> None:
        message = can.Message(arbitration_id=can_id, data=data, is_extended_id=False)
        with contextlib.suppress(can.CanError):
            self._bus.send(message)

    def _heartbeat(self) -> None:
        request_id = self.profile.request_id
        while not self._stop.wait(HEARTBEAT_PERIOD_S):
            if not self.send_heartbeat:
                continue
            for codec in self.profile.inverter_frames:
                self._send(codec.can_id, self._payload(codec))
                if codec.can_id == request_id:
                    self.requests_sent += 1
            if request_id is not None and self.profile.inverter_frame(request_id) is None:
                self.send_request()
