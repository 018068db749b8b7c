"""Soak with time compressed: weeks of the real ControlLoop and LimitsEngine on a FakeClock, faults every few hours.

No I/O: readings come from the simulator's scenarios (normal charge, cell over-voltage, cold), rotating every
six hours; every ``fault_every_s`` one fault is played for a while: a silent BMS, a run of bad readings (the
errors a wrong checksum gives), an implausible reading, or a sink that refuses frames (a dead CAN bus). After each
fault the loop must be back in ``normal`` within its bound; stuck states and RSS growth are reported.

``make soak`` runs a month (``python -m bench.soak --days 30``); tests/test_soak.py runs a short one.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Final

from gateway.clock import FakeClock
from gateway.errors import FrameError, LinkTimeout
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.profiles import load_profile
from gateway.runtime import IDLE_TICK_S, ControlLoop, FailsafeState, LoopSettings, Poller
from gateway.sim.scenarios import SCENARIOS

POLL_S: Final = 1.0
BMS_TIMEOUT_S: Final = 5.0
SILENCE_AFTER_S: Final = 15.0
FRAME_PERIOD_S: Final = 1.0
RECOVERY_BOUND_S: Final = 2 * POLL_S + FRAME_PERIOD_S
"""After a fault ends, normal service within two polls (the compressed loop notices ages at polls) and a period."""
SCENARIO_ROTATION: Final = ("normal-charge", "cell-ovp", "cold")
SCENARIO_HOURS: Final = 6.0
FAULTS: Final = ("silent", "bad_frames", "implausible", "can_down")


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class SoakDriver:
    name = "soak"

    def __init__(self, clock: FakeClock, start_s: float) -> None:
        self.clock = clock
        self.start_s = start_s
        self.fault: str | None = None

    def read(self) -> tuple[PackReading, ...]:
        now = self.clock.monotonic()
        if self.fault == "silent":
            raise LinkTimeout("no reply from /dev/soak within 0.5 s")
        if self.fault == "bad_frames":
            raise FrameError("checksum 0x1234 does not match 0x1235")
        t = now - self.start_s
        scenario = SCENARIOS[SCENARIO_ROTATION[int(t // (SCENARIO_HOURS * 3600)) % len(SCENARIO_ROTATION)]]
        reading = scenario.step(t % 3600).reading
        state = replace(reading.state, measured_at_s=now)
        if self.fault == "implausible":
            state = replace(state, pack_voltage_v=0.0)
        return (replace(reading, state=state, settings=replace(reading.settings, measured_at_s=now)),)

    def close(self) -> None:
        pass


class SoakSink:
    """Keeps only counts and the last CCL: a month of frames must not be what grows."""

    def __init__(self) -> None:
        self.accepting = True
        self.sent = 0
        self.refused = 0
        self.last_ccl: float | None = None

    def send(self, can_id: int, data: bytes) -> bool:
        if not self.accepting:
            self.refused += 1
            return False
        self.sent += 1
        if can_id == 0x351:
            self.last_ccl = int.from_bytes(data[2:4], "little", signed=True) / 10
        return True


@dataclass
class SoakReport:
    simulated_days: float
    wall_s: float = 0.0
    polls: int = 0
    ticks: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    stuck: list[str] = field(default_factory=list)
    """Faults after which the loop was not back to normal within RECOVERY_BOUND_S."""
    unsafe: list[str] = field(default_factory=list)
    """Moments the inverter heard a CCL above 0 while the BMS data was stale."""
    worst_recovery_s: float = 0.0
    frames_sent: int = 0
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    rss_growth_kb: int = 0


def soak(days: float, *, fault_every_s: float = 3 * 3600.0, seed: int = 9) -> SoakReport:
    rng = random.Random(seed)
    clock = FakeClock()
    start = clock.monotonic()
    driver = SoakDriver(clock, start)
    sink = SoakSink()
    settings = LoopSettings(POLL_S, BMS_TIMEOUT_S, SILENCE_AFTER_S, LimitsSettings())
    loop = ControlLoop(load_profile("pylontech-can"), sink, clock, settings)
    poller = Poller(driver, loop, clock, POLL_S)
    report = SoakReport(simulated_days=days)
    end = start + days * 86400
    next_poll = start
    next_fault = start + fault_every_s
    fault_ends: float | None = None
    recovering_since: float | None = None
    fault_name = ""
    wall0 = time.perf_counter()
    warm = False
    while clock.monotonic() < end:
        now = clock.monotonic()
        if not warm and now - start >= 3600:
            report.rss_start_kb = rss_kb()  # after an hour: imports and caches are in
            warm = True
        if fault_ends is None and now >= next_fault:
            kind = FAULTS[report.ticks % len(FAULTS)] if rng.random() < 0.5 else rng.choice(FAULTS)
            fault_name = kind
            report.faults[kind] = report.faults.get(kind, 0) + 1
            if kind == "can_down":
                sink.accepting = False
            else:
                driver.fault = kind
            fault_ends = now + rng.uniform(10.0, 600.0)
            next_fault = now + fault_every_s * rng.uniform(0.5, 1.5)
        elif fault_ends is not None and now >= fault_ends:
            driver.fault = None
            sink.accepting = True
            fault_ends = None
            recovering_since = now
        if now >= next_poll:
            poller.poll_once()
            report.polls += 1
            next_poll += POLL_S
        due = loop.tick()
        report.ticks += 1
        state = loop.state
        if state is FailsafeState.STALE and sink.last_ccl not in (None, 0.0):
            report.unsafe.append(f"t={now - start:.0f} s: CCL {sink.last_ccl} A while stale")
        if recovering_since is not None:
            if state is FailsafeState.NORMAL:
                report.worst_recovery_s = max(report.worst_recovery_s, now - recovering_since)
                recovering_since = None
            elif now - recovering_since > RECOVERY_BOUND_S:
                report.stuck.append(f"t={now - start:.0f} s: still {state} after {fault_name}")
                recovering_since = None
        # Compressed: skip the loop's idle 0.1 s ticks, wake at the next poll, due frame or fault edge instead.
        if due >= clock.monotonic() + IDLE_TICK_S - 1e-9:
            due = next_poll  # only the idle tick is due: nothing changes before the next poll (ages: ≤ 1 poll late)
        wake = min(due, next_poll, fault_ends if fault_ends is not None else next_fault, end)
        clock.advance(max(wake - clock.monotonic(), 1e-6))
    report.wall_s = round(time.perf_counter() - wall0, 2)
    report.frames_sent = sink.sent
    report.rss_end_kb = rss_kb()
    report.rss_growth_kb = report.rss_end_kb - (report.rss_start_kb or report.rss_end_kb)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--days", type=float, default=30.0)
    args = parser.parse_args()
    report = soak(args.days)
    print(json.dumps(asdict(report), indent=2))
    ok = not report.stuck and not report.unsafe
    print(
        f"soak: {args.days:g} simulated days in {report.wall_s:.0f} s, {sum(report.faults.values())} faults, "
        f"{len(report.stuck)} stuck, {len(report.unsafe)} unsafe, RSS growth {report.rss_growth_kb} kB: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
