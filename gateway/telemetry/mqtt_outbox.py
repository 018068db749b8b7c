"""What stands between the MQTT publisher thread and paho-mqtt: a bounded outbox, and the pace of full resyncs.

paho queues without limit: QoS 0 packets wait in its output deque for as long as the socket does not take them,
and ``max_queued_messages_set`` bounds only QoS > 0. A slow broker, or a flood of work for the publisher, would
grow the gateway's memory (security audit M2: 41 → 205 MB, never released). So the publisher thread never
hands paho more than :data:`PAHO_WINDOW` unsent messages (:class:`Outbox`); the rest wait here:

* availability and discovery (few, retained, and Home Assistant needs every one of them): newest payload per
  topic, so their number is bounded by the number of topics; never dropped, and sent first;
* state messages: newest per topic, at most :data:`STATE_DEPTH`; when full the oldest is dropped and counted
  (a newer value of every topic follows with the next batch anyway).

:class:`ResyncSchedule` paces the full resyncs Home Assistant asks for by publishing ``online`` on
``<discovery_prefix>/status``: at most one per :data:`RESYNC_MIN_GAP_S`; a request within that time is kept and
served once when the time is up, never dropped (a Home Assistant that really restarted gets its discovery).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.clock import Clock

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessageInfo

PAHO_WINDOW: Final = 20
"""Messages handed to paho and not yet written (QoS 0) or acknowledged (QoS 1), at most; paho's own default
for QoS 1 messages in flight."""
STATE_DEPTH: Final = 64
"""State messages waiting for the window, at most (one batch is about ten)."""
RESYNC_MIN_GAP_S: Final = 30.0
"""Least time between two full resyncs asked for by Home Assistant, s."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: str
    qos: int = 0
    retain: bool = False


def _unsent(info: MQTTMessageInfo) -> bool:
    try:
        return not info.is_published()
    except (RuntimeError, ValueError):  # paho gave up on it (queue full, connection lost): not waiting any more
        return False


class Outbox:
    """The publisher thread's messages on their way to paho. Used by that thread only."""

    def __init__(self, *, state_depth: int = STATE_DEPTH, window: int = PAHO_WINDOW) -> None:
        self._first: dict[str, Outgoing] = {}
        """Availability and discovery, newest per topic, in the order they were first put."""
        self._states: deque[Outgoing] = deque()
        self._state_depth = state_depth
        self._window = window
        self._in_paho: list[MQTTMessageInfo] = []
        self.dropped_states = 0
        """State messages dropped because :data:`STATE_DEPTH` were waiting."""
        self.failed = 0
        """Messages paho refused (connection lost while handing over); a reconnect republishes everything."""

    def put_first(self, message: Outgoing) -> None:
        """Queue an availability or discovery message: never dropped; replaces a waiting one on its topic."""
        self._first.pop(message.topic, None)
        self._first[message.topic] = message

    def put_state(self, message: Outgoing) -> Outgoing | None:
        """Queue a state message (replacing a waiting one on its topic); returns the oldest one dropped to make
        room, if any, so that the caller knows the broker will not get it."""
        for index, waiting in enumerate(self._states):
            if waiting.topic == message.topic:
                del self._states[index]  # superseded: only the newest value of a topic matters
                break
        dropped = None
        if len(self._states) >= self._state_depth:
            dropped = self._states.popleft()
            self.dropped_states += 1
        self._states.append(message)
        return dropped

    @property
    def waiting(self) -> int:
        """Messages not yet handed to paho."""
        return len(self._first) + len(self._states)

    @property
    def states_waiting(self) -> int:
        return len(self._states)

    def in_paho(self) -> int:
        """Messages handed to paho that it has not written (QoS 0) or got acknowledged (QoS 1) yet."""
        self._in_paho = [info for info in self._in_paho if _unsent(info)]
        return len(self._in_paho)

    def drain(self, client: Client) -> int:
        """Hand waiting messages to paho, availability and discovery first, while fewer than the window are
        unsent there; returns how many were handed over."""
        handed = 0
        while self.waiting and self.in_paho() < self._window:
            message = self._take()
            info = client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            if info.rc != 0:
                self.failed += 1
                break
            self._in_paho.append(info)
            handed += 1
        return handed

    def reconnected(self) -> None:
        """A new connection: what paho held is resent or lost by paho itself; what waits here stays (the resync
        replaces most of it by topic)."""
        self._in_paho.clear()

    def _take(self) -> Outgoing:
        if self._first:
            topic = next(iter(self._first))
            return self._first.pop(topic)
        return self._states.popleft()


class ResyncSchedule:
    """At most one full resync per ``min_gap_s`` of ``clock`` for Home Assistant's requests; none is dropped.

    :meth:`request` may be called from any thread (paho's network thread); :meth:`due` and :meth:`done` from
    the publisher thread.
    """

    def __init__(self, clock: Clock, min_gap_s: float = RESYNC_MIN_GAP_S) -> None:
        self._clock = clock
        self._min_gap_s = min_gap_s
        self._requested = threading.Event()
        self._last_s = -math.inf
        self.requests = 0
        """Requests seen (``online`` messages from Home Assistant)."""
        self.resyncs = 0
        """Full resyncs done, whatever their cause."""

    def request(self) -> None:
        """Home Assistant asked for everything again."""
        self.requests += 1
        self._requested.set()

    def due(self) -> float | None:
        """None: nothing asked; 0: resync now; else the seconds until a resync may run."""
        if not self._requested.is_set():
            return None
        return max(0.0, self._last_s + self._min_gap_s - self._clock.monotonic())

    def done(self) -> None:
        """A full resync is starting (asked for, or after a reconnect): it serves every request so far."""
        self._requested.clear()
        self._last_s = self._clock.monotonic()
        self.resyncs += 1
