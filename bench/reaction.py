"""(a) Reaction latency: a cell jumps over OVP on the serial line → the first 0x351 with CCL = 0 on the CAN bus.

The measured path is the real one: :class:`~gateway.sim.jk_uart.JkUartSimulator` on one end of a
:class:`~gateway.sim.nullmodem.NullModem` paced at 115200 bit/s, :class:`~gateway.bms.jk_uart.JkUartDriver`,
:class:`~gateway.runtime.Poller`, :class:`~gateway.runtime.ControlLoop` and :func:`~gateway.runtime.run_loop` on
the system clock, :class:`~gateway.transport.can_link.CanLink` on python-can's ``virtual`` bus, and a listener on
that bus. An event starts when the simulated BMS's state flips (its next reply carries the tripped cell) at a
random phase of the poll cycle, so the latency includes the wait for the next poll, as it would on a real pack.

Time is not compressed (the latency *is* the time); to reach 200+ events within a couple of minutes, several
independent chains run side by side in their own processes. Only the recovery between events is shortened
(``current_hold_s`` 0, a steep ramp): the fall to 0 A that is measured does not depend on either.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import can

from gateway.app import can_bus
from gateway.bms import jk_nw
from gateway.bms.jk_uart import JkUartDriver
from gateway.clock import SystemClock
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.poll_rate import FAST_HOLD_S
from gateway.profiles import load_profile
from gateway.runtime import ControlLoop, LoopSettings, Poller, run_loop
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import BITS_PER_BYTE, NullModem
from gateway.sim.scenarios import SCENARIOS, Scenario, Step
from gateway.transport.can_link import CanLink, CanSettings

SERIAL_BAUD: Final = 115200
CAN_BITRATE: Final = 500_000
LIMITS_ID: Final = 0x351
CAN_FRAME_BITS: Final = 44 + 64 + 3 + 24
"""One standard 8-byte data frame: 44 bits of framing, 64 data bits, 3 of interframe space, and up to 24 stuff
bits (worst case)."""
EVENT_TIMEOUT_S: Final = 10.0

_NORMAL = SCENARIOS["cell-ovp"].step(0.0).reading  # cell 7 at 3.40 V, charging
_TRIPPED = SCENARIOS["cell-ovp"].step(55.0).reading  # cell 7 at 3.72 V > OVP 3.65 V, alarm, charge MOS open
_AWAY_CELLS_V = tuple(round(v - 0.11, 3) for v in _NORMAL.state.cell_voltages_v)
_AWAY = replace(  # every cell 0.11 V lower (3.29-3.30 V): away from every threshold, so the slow rate
    _NORMAL, state=replace(_NORMAL.state, cell_voltages_v=_AWAY_CELLS_V, pack_voltage_v=round(sum(_AWAY_CELLS_V), 3))
)
DEFAULT_POLL_S: Final = 1.0
DEFAULT_FAST_POLL_S: Final = 0.2
ADAPTIVE_TARGET_P99_MS: Final = 300.0
"""Issue 21: react like 5 Hz at the default config."""


@dataclass(frozen=True, slots=True)
class ChainResult:
    latencies_s: list[float]
    serial_wire_s: float
    """Time on the wire of one read-all request plus its reply at 115200 bit/s 8N1, s."""
    failed_events: int
    knee_to_fast_s: list[float] = field(default_factory=list)
    """Adaptive chains: from a cell crossing the knee to the fast rate in force, s, per event."""


class _Listener:
    """The inverter's side: records the CCL of every 0x351 with its arrival time (time.monotonic())."""

    def __init__(self, channel: str) -> None:
        self._bus = can.Bus(interface="virtual", channel=channel, ignore_config=True)
        self._cond = threading.Condition()
        self._heard: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._bus.recv(timeout=0.05)
            if message is None or message.arbitration_id != LIMITS_ID:
                continue
            at = time.monotonic()
            ccl = int.from_bytes(bytes(message.data[2:4]), "little", signed=True) / 10  # 0x351 bytes 2-3, 0.1 A
            with self._cond:
                self._heard.append((at, ccl))
                self._cond.notify_all()

    def wait_for(self, zero: bool, after_s: float, timeout_s: float) -> float | None:
        """Arrival time of the first 0x351 after ``after_s`` whose CCL is 0 (``zero``) or above 0; None: timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for at, ccl in self._heard:
                    if at >= after_s and (ccl == 0.0) == zero:
                        return at
                self._heard = [h for h in self._heard if h[0] >= after_s]
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self._bus.shutdown()


@contextlib.contextmanager
def _chain(
    reading_now: Callable[[], PackReading], poll_s: float, fast_poll_s: float | None, seed: int
) -> Iterator[tuple[_Listener, ControlLoop]]:
    """The whole chain in this process, the simulated BMS answering ``reading_now()``; with ``fast_poll_s`` the
    poller runs adaptive (:mod:`gateway.poll_rate`) as ``bms-gateway run`` does."""
    clock = SystemClock()
    scenario = Scenario("bench-ovp", "cell 7 over OVP while set", lambda _t: Step(reading_now()))
    profile = load_profile("pylontech-can")
    channel = f"bench-reaction-{os.getpid()}-{seed}"
    with tempfile.TemporaryDirectory(prefix="bms-bench-") as tmp, NullModem(Path(tmp), baudrate=SERIAL_BAUD) as cable:
        simulator = JkUartSimulator(scenario, clock, port=str(cable.a_path), baudrate=SERIAL_BAUD)
        simulator.start()
        listener = _Listener(channel)
        link = CanLink(CanSettings("virtual", channel, CAN_BITRATE), clock, bus_factory=can_bus)
        settings = LoopSettings(
            poll_interval_s=poll_s,
            fast_poll_interval_s=fast_poll_s,
            bms_timeout_s=5.0,
            silence_after_s=15.0,
            limits=LimitsSettings(current_hold_s=0.0, current_ramp_a_per_s=10_000.0),
        )
        loop = ControlLoop(profile, link, clock, settings)
        driver = JkUartDriver(port=str(cable.b_path), baudrate=SERIAL_BAUD, timeout_s=0.5, retries=1, clock=clock)
        stop = threading.Event()
        link.open()
        poller = Poller(driver, loop, clock, poll_s, rate=loop if fast_poll_s is not None else None)
        runner = threading.Thread(target=run_loop, args=(loop, poller, clock, stop))
        runner.start()
        try:
            yield listener, loop
        finally:
            stop.set()
            runner.join(timeout=10)
            driver.close()
            link.close()
            listener.close()
            simulator.stop()


def _serial_wire_s() -> float:
    reply_len = len(jk_nw.encode_reply(jk_nw.from_reading(_NORMAL, jk_nw.SIMULATOR_EXTRAS)))
    return (len(jk_nw.read_all_request()) + reply_len) * BITS_PER_BYTE / SERIAL_BAUD


def run_chain(poll_s: float, events: int, seed: int) -> ChainResult:
    """One whole chain in this process; ``events`` OVP events, each at a random phase of the poll cycle."""
    rng = random.Random(seed)
    tripped = threading.Event()
    latencies: list[float] = []
    failed = 0
    with _chain(lambda: _TRIPPED if tripped.is_set() else _NORMAL, poll_s, None, seed) as (listener, _loop):
        for _ in range(events):
            if listener.wait_for(zero=False, after_s=time.monotonic() - 0.5, timeout_s=EVENT_TIMEOUT_S) is None:
                failed += 1
                continue
            time.sleep(rng.uniform(0.0, poll_s))  # a random phase against the poll cycle
            t0 = time.monotonic()
            tripped.set()
            at = listener.wait_for(zero=True, after_s=t0, timeout_s=EVENT_TIMEOUT_S)
            tripped.clear()
            if at is None:
                failed += 1
            else:
                latencies.append(at - t0)
            # Recovery must be seen after this point, not a frame sent before the flip back.
            time.sleep(0.01)
    return ChainResult(latencies, _serial_wire_s(), failed)


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 10 ms (the bench's side, not the gateway's) until true; False after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_adaptive_chain(events: int, seed: int) -> ChainResult:
    """One chain at the default config (``poll_interval_s`` 1.0, ``fast_poll_interval_s`` 0.2), each event an
    approach from inside the knee: the pack away from every threshold (cells 3.29-3.30 V), then cell 7 and its
    neighbours past the charge knee (3.400-3.412 V, knee 3.400 V) at a random phase of the slow poll, the gateway
    switching to the fast rate by itself, then at a random phase of that a cell over OVP; the latency counts from
    the OVP flip to CCL 0 on the bus. ``knee_to_fast_s`` in the result: knee to the fast rate in force. Each event
    waits for the slow rate first (some 10 s: the fast rate's hold after the last event's CCL 0)."""
    rng = random.Random(seed)
    phase = ["away"]
    readings = {"away": _AWAY, "knee": _NORMAL, "ovp": _TRIPPED}
    latencies: list[float] = []
    knee_to_fast: list[float] = []
    failed = 0
    with _chain(lambda: readings[phase[0]], 1.0, 0.2, seed) as (listener, loop):
        for _ in range(events):
            phase[0] = "away"
            if listener.wait_for(zero=False, after_s=time.monotonic() - 0.5, timeout_s=EVENT_TIMEOUT_S) is None:
                failed += 1
                continue
            # Back at the slow rate first (the CCL 0 of the last event held it fast), so the knee is met slowly.
            if not _wait(lambda: loop.poll_interval_s() >= DEFAULT_POLL_S, FAST_HOLD_S + EVENT_TIMEOUT_S):
                failed += 1
                continue
            time.sleep(rng.uniform(0.0, 1.0))  # a random phase against the slow poll
            knee_at = time.monotonic()
            phase[0] = "knee"
            if not _wait(lambda: loop.poll_interval_s() < 1.0, EVENT_TIMEOUT_S):
                failed += 1
                continue
            knee_to_fast.append(time.monotonic() - knee_at)
            time.sleep(rng.uniform(0.0, 1.0))  # somewhere inside the knee, at any phase of the fast poll
            t0 = time.monotonic()
            phase[0] = "ovp"
            at = listener.wait_for(zero=True, after_s=t0, timeout_s=EVENT_TIMEOUT_S)
            if at is None:
                failed += 1
            else:
                latencies.append(at - t0)
            time.sleep(0.01)
        phase[0] = "away"
    return ChainResult(latencies, _serial_wire_s(), failed, knee_to_fast)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 events is the 198th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return ordered[int(rank) - 1]


def measure(poll_s: float, chains: int, events_per_chain: int) -> dict[str, float | int]:
    """Run ``chains`` chains in parallel processes; latencies pooled."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(max_workers=chains, mp_context=context) as pool:
        futures = [pool.submit(run_chain, poll_s, events_per_chain, 1000 * chains + i) for i in range(chains)]
        results = [f.result() for f in futures]
    latencies = [x for r in results for x in r.latencies_s]
    if not latencies:
        raise RuntimeError(f"poll {poll_s} s: no event reached CCL = 0")
    return {
        "poll_interval_s": poll_s,
        "events": len(latencies),
        "failed_events": sum(r.failed_events for r in results),
        "chains": chains,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "serial_wire_ms": results[0].serial_wire_s * 1000,
        "can_wire_ms": CAN_FRAME_BITS / CAN_BITRATE * 1000,
        "target_p99_ms": poll_s * 1000 + 100,
    }


def measure_adaptive(chains: int, events_per_chain: int) -> dict[str, float | int]:
    """Reaction at the default config (adaptive polling) to an OVP approached from inside the knee; pooled."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=chains, mp_context=context) as pool:
        futures = [pool.submit(run_adaptive_chain, events_per_chain, 2000 * chains + i) for i in range(chains)]
        results = [f.result() for f in futures]
    latencies = [x for r in results for x in r.latencies_s]
    knee = [x for r in results for x in r.knee_to_fast_s]
    if not latencies:
        raise RuntimeError("adaptive polling: no event reached CCL = 0")
    return {
        "poll_interval_s": DEFAULT_POLL_S,
        "fast_poll_interval_s": DEFAULT_FAST_POLL_S,
        "events": len(latencies),
        "failed_events": sum(r.failed_events for r in results),
        "chains": chains,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "knee_to_fast_p99_ms": percentile(knee, 99) * 1000,
        "target_p99_ms": ADAPTIVE_TARGET_P99_MS,
    }
