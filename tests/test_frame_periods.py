"""Frame timing with the real clock: a slow BMS must never delay the frames (a requirement, not a benchmark).

The gateway, as :func:`~gateway.app.build_gateway` assembles it, polls a simulated JK BMS through a null-modem
every 1 s. The BMS answers the first poll at once, which puts the frame schedule just after the poll times, and
takes 0.8 s to answer every later poll, so each slow poll is still waiting for its reply when the next frames
are due. (With every reply 0.8 s late, frames would fall due exactly as each reply lands, and a gateway that
polls and sends on one thread would pass too.) The CAN side is python-can's ``virtual`` bus on a channel of this
test's own. A listener on a second bus of that channel notes when each 0x351 went onto the bus (the virtual bus
stamps a frame when it is sent, which on a real bus is when the inverter receives it; the stamp does not include
how late this test's listener thread gets to run). The gaps must stay within 10 % of the profile's 1.0 s period.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import pytest

from gateway.app import Gateway, build_gateway
from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.runtime import FailsafeState
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS

PERIOD_S = 1.0
TOLERANCE = 0.10
REPLY_DELAY_S = 0.8
WATCH_S = 5.0


class Listener:
    """Records the bus timestamp (s) of every 0x351 on ``bus``, on its own thread."""

    def __init__(self, bus: can.BusABC) -> None:
        self._bus = bus
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inverter-listener", daemon=True)
        self._lock = threading.Lock()
        self._stamps: list[float] = []

    @property
    def stamps(self) -> list[float]:
        with self._lock:
            return list(self._stamps)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._bus.recv(timeout=0.1)
            if message is not None and message.arbitration_id == 0x351:
                with self._lock:
                    self._stamps.append(message.timestamp)


class SlowJk(JkUartSimulator):
    """A JK BMS that answers its first request at once and every later one :data:`REPLY_DELAY_S` late."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slow_replies: list[tuple[float, float]] = []
        """(time.time() of the request, of the reply) for every delayed reply."""

    def respond(self, request: bytes) -> bytes | None:
        answer = super().respond(request)
        self.reply_delay_s = 0.0 if self.replies_sent == 0 else REPLY_DELAY_S
        if answer is not None and self.reply_delay_s > 0:
            now = time.time()
            self.slow_replies.append((now, now + self.reply_delay_s))
        return answer


@dataclass
class SlowChain:
    gateway: Gateway
    simulator: SlowJk
    listener: Listener


@pytest.fixture
def slow_chain(tmp_path: Path) -> Iterator[SlowChain]:
    channel = f"bms-gateway-test-{uuid.uuid4().hex}"
    clock = SystemClock()
    with NullModem(tmp_path, names=("bms", "gateway")) as cable:
        config = parse_config(
            {
                "bms": {
                    "driver": "jk-uart",
                    "port": str(cable.b_path),
                    "poll_interval_s": PERIOD_S,
                    # Longer than the slow BMS takes, so every poll succeeds, late.
                    "timeout_s": 2.0,
                },
                "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": channel}},
            }
        )
        simulator = SlowJk(SCENARIOS["normal-charge"], clock, port=str(cable.a_path))
        gateway = build_gateway(config, clock)
        inverter_bus = can.Bus(interface="virtual", channel=channel, ignore_config=True)
        listener = Listener(inverter_bus)
        stop = threading.Event()
        runner = threading.Thread(target=gateway.run, args=(stop,), name="gateway-under-test", daemon=True)
        simulator.start()
        listener.start()
        runner.start()
        try:
            yield SlowChain(gateway, simulator, listener)
        finally:
            stop.set()
            runner.join(timeout=10)
            listener.stop()
            inverter_bus.shutdown()
            simulator.stop()
        assert not runner.is_alive(), "the gateway did not stop within 10 s"


def test_0x351_period_holds_with_a_slow_bms(slow_chain: SlowChain) -> None:
    deadline = time.monotonic() + 20.0
    while not slow_chain.listener.stamps:
        error = slow_chain.gateway.loop.snapshot().last_error
        assert time.monotonic() < deadline, f"no 0x351 within 20 s (BMS error: {error})"
        time.sleep(0.05)
    time.sleep(WATCH_S + 0.5)
    stamps = slow_chain.listener.stamps
    snapshot = slow_chain.gateway.loop.snapshot()

    # The BMS really was slow, and every poll still got its (late) answer.
    slow = list(slow_chain.simulator.slow_replies)
    assert len(slow) >= WATCH_S - 1
    assert snapshot.state is FailsafeState.NORMAL
    assert snapshot.last_error is None

    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert len(gaps) >= WATCH_S - 1, f"too few 0x351 frames: {stamps}"
    low, high = PERIOD_S * (1 - TOLERANCE), PERIOD_S * (1 + TOLERANCE)
    outside = [round(gap, 3) for gap in gaps if not low <= gap <= high]
    assert not outside, f"0x351 gaps outside {low:.2f}-{high:.2f} s: {outside} (all: {[round(g, 3) for g in gaps]})"
    # And the schedule did put frames inside the slow polls, the case this test is about.
    overlapping = [t for t in stamps if any(asked < t < answered for asked, answered in slow)]
    assert len(overlapping) >= WATCH_S - 2, "no frame fell due while a slow poll was waiting"
