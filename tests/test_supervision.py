"""Inverter supervision on a fake clock: heartbeat age → waiting / alive / lost, the profile's action when the
inverter goes quiet, retries that break a mutual wait, the stale: silence fail-safe, and (with real time on a
virtual CAN bus) request mode and inverter values through the CAN link.

The inverter is :class:`FakeInverter`: the test says when it sends heartbeats, and from when it answers every
frame it hears (an inverter that waits for the battery to speak first). The rig is test_runtime's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import can
import pytest
from test_runtime import (
    BMS_TIMEOUT_S,
    DATA,
    EPS_S,
    PROFILE,
    SMA_LIKE,
    START_S,
    RecordingSink,
    Rig,
    Sent,
    stamped,
)

from gateway.clock import FakeClock, SystemClock
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.profiles import load_profile
from gateway.runtime import DEADLINE_SLACK_S, ControlLoop, FailsafeState, InverterState, LoopSettings, Poller, run_loop
from gateway.sim.inverter import InverterSimulator
from gateway.sim.scenarios import SCENARIOS
from gateway.transport.can_link import CanLink, CanSettings

VARIANT = load_profile(str(DATA / "features-variant.yaml"))
"""features-base with on_lost keep_sending and failsafe stale: silence."""
REQUEST = load_profile(str(DATA / "request.yaml"))


class FakeInverter:
    """Heartbeats at the given times (s since the rig started), and at every frame heard from ``answers_from_s``."""

    def __init__(self, beats: list[float], answers_from_s: float = float("inf")) -> None:
        self.beats = beats
        self.answers_from_s = answers_from_s

    def source(self, clock: FakeClock, sink: RecordingSink) -> Callable[[], float | None]:
        def age_s() -> float | None:
            now = clock.monotonic() - START_S
            heard = [f.at_s for f in sink.frames if f.at_s >= self.answers_from_s]
            times = [t for t in [*self.beats, *heard] if t <= now + EPS_S]
            return None if not times else now - max(times)

        return age_s

    def wake_s(self, now_s: float, sent: list[Sent]) -> float:
        """When its next heartbeat arrives: at once if it answers a frame just sent, else the next scheduled beat."""
        if any(f.at_s >= self.answers_from_s for f in sent):
            return now_s
        return min((t for t in self.beats if t > now_s + EPS_S), default=float("inf"))

    def rig(self, **options: Any) -> Rig:
        """A rig supervised by this inverter, woken by its heartbeats."""
        return Rig(heartbeat_age_s=self.source, inverter_wake_s=self.wake_s, **options)


def every(start_s: float, end_s: float, step_s: float = 1.0) -> list[float]:
    """Heartbeat times from ``start_s`` to ``end_s`` inclusive."""
    count = round((end_s - start_s) / step_s)
    return [start_s + k * step_s for k in range(count + 1)]


def inverter_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "gateway.runtime" and r.getMessage().startswith("inverter:")
    ]


def changes(rig: Rig) -> list[tuple[float, InverterState]]:
    """(time, new state) of each inverter-state change, to the ms."""
    return [(round(t, 3), state) for t, state in rig.inverter_states]


def past(deadline_s: float) -> float:
    """When the loop acts on a deadline (a timeout running out): just past it, to the ms."""
    return round(deadline_s + DEADLINE_SLACK_S, 3)


def sets_after(rig: Rig, after_s: float) -> list[tuple[float, list[int]]]:
    """The frames sent after ``after_s``, grouped by send time: (time, ids)."""
    groups: dict[float, list[int]] = {}
    for f in rig.sink.frames:
        if f.at_s > after_s:
            groups.setdefault(round(f.at_s, 3), []).append(f.can_id)
    return sorted(groups.items())


# --- states and log lines ------------------------------------------------------------------------------------


def test_waiting_alive_lost_and_back_with_keep_sending(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    inverter = FakeInverter(beats=every(2.0, 20.0), answers_from_s=60.0)
    rig = inverter.rig()
    rig.run_until(1.5)
    assert rig.loop.snapshot().inverter_state is InverterState.WAITING
    rig.run_until(80.0)
    # Alive at the first heartbeat; lost as soon as the newest (20 s) is older than timeout_s (10 s); alive again
    # as soon as the inverter answers our frames of 60 s.
    assert changes(rig) == [(2.0, InverterState.ALIVE), (past(30.0), InverterState.LOST), (60.0, InverterState.ALIVE)]
    # keep_sending: the frames never stopped.
    assert len(rig.sink.of(0x351, after_s=30.0, before_s=60.0)) == 30
    assert inverter_lines(caplog) == [
        (logging.INFO, "inverter: heartbeat 0x305 received: inverter alive"),
        (logging.WARNING, "inverter: no heartbeat 0x305 for 10 s: inverter lost; frames keep going out"),
        (logging.INFO, "inverter: heartbeat 0x305 back after 30 s: inverter alive"),
    ]
    snapshot = rig.loop.snapshot()
    assert snapshot.inverter_state is InverterState.ALIVE
    # The inverter answers every frame, and a frame goes out every period (1 s): never older than that.
    assert snapshot.heartbeat_age_s is not None and snapshot.heartbeat_age_s <= 1.0 + EPS_S
    assert snapshot.next_retry_in_s is None


def test_a_late_heartbeat_is_not_a_loss(caplog: pytest.LogCaptureFixture) -> None:
    """Deye answers late now and then (every ~2 h): a 9 s gap within the 10 s timeout changes nothing."""
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    inverter = FakeInverter(beats=[*every(0.0, 20.0), *every(29.0, 60.0)])
    rig = inverter.rig()
    rig.run_until(60.0)
    assert changes(rig) == [(0.0, InverterState.ALIVE)]
    assert inverter_lines(caplog) == [(logging.INFO, "inverter: heartbeat 0x305 received: inverter alive")]
    assert len(rig.sink.of(0x351)) == 60


def test_an_inverter_that_never_answers_is_lost_timeout_after_the_first_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    rig = FakeInverter(beats=[]).rig()
    rig.driver.mode = "silent"
    rig.run_until(30.0)
    assert rig.loop.inverter_state is InverterState.WAITING, "not lost while we have not spoken yet"
    rig.driver.mode = "answer"
    rig.run_until(60.0)
    assert changes(rig) == [(past(30.0 + 10.0), InverterState.LOST)]  # first frame at 30 s, timeout 10 s
    assert inverter_lines(caplog) == [
        (
            logging.WARNING,
            "inverter: no heartbeat 0x305 within 10 s of the first frame: inverter lost; frames keep going out",
        )
    ]


def test_no_supervision_without_a_heartbeat_source() -> None:
    rig = Rig()
    rig.run_until(30.0)
    assert rig.loop.snapshot().inverter_state is InverterState.UNSUPERVISED
    assert rig.inverter_states == []


# --- on_lost: stop, and the retry schedule -------------------------------------------------------------------


def test_stop_sends_nothing_while_lost_but_one_whole_set_every_retry_after_s(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    rig = FakeInverter(beats=every(0.0, 10.0)).rig(profile=SMA_LIKE)
    rig.run_until(14.0)
    assert len(rig.sink.of(0x351, after_s=10.0)) == 8, "sending normally while alive (every 0.5 s)"
    rig.run_until(130.0)
    # Lost as soon as the newest heartbeat (10 s) is older than timeout_s (5 s).
    assert changes(rig) == [(0.0, InverterState.ALIVE), (past(15.0), InverterState.LOST)]
    lost_at = rig.inverter_states[1][0]
    # After the loss: nothing but one whole set (each id exactly once) every retry_after_s (30 s).
    retries = sets_after(rig, lost_at)
    assert [t for t, _ in retries] == pytest.approx([lost_at + 30, lost_at + 60, lost_at + 90], abs=1e-3)
    assert all(sorted(ids) == [0x351, 0x355, 0x35A, 0x35E] for _, ids in retries)
    assert inverter_lines(caplog)[1] == (
        logging.WARNING,
        "inverter: no heartbeat 0x305 for 5 s: inverter lost; sending stops, one whole set every 30 s to retry",
    )
    snapshot = rig.loop.snapshot()
    assert snapshot.inverter_state is InverterState.LOST
    assert snapshot.next_retry_in_s == pytest.approx(lost_at + 120 - rig.now, abs=1e-3)


def test_a_retry_wakes_an_inverter_that_waits_for_the_battery(caplog: pytest.LogCaptureFixture) -> None:
    """The inverter restarts at 50 s and then speaks only once it hears a battery: neither side waits forever."""
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    inverter = FakeInverter(beats=every(0.0, 10.0), answers_from_s=50.0)
    rig = inverter.rig(profile=SMA_LIKE)
    rig.run_until(100.0)
    lost_at = rig.inverter_states[1][0]
    first_retry = lost_at + 30  # at 45 s: nobody listening yet
    second_retry = lost_at + 60  # at 75 s: the inverter hears it and answers
    assert changes(rig) == [
        (0.0, InverterState.ALIVE),
        (past(15.0), InverterState.LOST),
        (round(second_retry, 3), InverterState.ALIVE),  # woken by the answer
    ]
    assert [t for t, _ in sets_after(rig, lost_at)][:2] == pytest.approx([first_retry, second_retry], abs=1e-3)
    # Back to normal service at once: the retry at 75 s, the resumed set as soon as min_gap_s allows (75.2),
    # then 0x351 every 0.5 s up to 99.7: 1 + 50 frames.
    resumed = [f.at_s for f in rig.sink.of(0x351, after_s=second_retry - EPS_S)]
    assert resumed[:3] == pytest.approx([second_retry, second_retry + 0.2, second_retry + 0.7], abs=1e-3)
    assert len(resumed) == 1 + 50
    assert inverter_lines(caplog)[-1] == (
        logging.INFO,
        "inverter: heartbeat 0x305 back after 60 s: inverter alive; sending again",
    )


def test_after_a_bms_silence_the_first_retry_goes_out_at_once() -> None:
    inverter = FakeInverter(beats=every(0.0, 10.0), answers_from_s=90.0)
    rig = inverter.rig(profile=SMA_LIKE)
    rig.run_until(20.5)
    rig.driver.mode = "silent"  # last good reading at 20 s; silent from 35 s, through the retry due at 45 s
    rig.run_until(100.0)
    assert rig.loop.state is FailsafeState.SILENT
    assert sets_after(rig, 15.2) == [], "stopped, and then silent: nothing, not even the retry"
    rig.driver.mode = "answer"
    rig.run_until(101.0)
    # The BMS is back at 100 s: the overdue retry goes out at once, the inverter answers, sending resumes as
    # soon as min_gap_s allows (100.2) and then every 0.5 s.
    assert sets_after(rig, 99.0)[0] == (100.0, [0x351, 0x355, 0x35A, 0x35E])
    assert rig.loop.inverter_state is InverterState.ALIVE
    assert [round(f.at_s, 3) for f in rig.sink.of(0x351, after_s=99.0)] == [100.0, 100.2, 100.7]


# --- stale: silence ------------------------------------------------------------------------------------------


def test_stale_silence_stops_at_once_instead_of_sending_zeros() -> None:
    rig = Rig(profile=VARIANT)
    rig.run_until(10.5)
    rig.driver.mode = "silent"  # last good reading at 10 s
    rig.run_until(40.0)
    last = max(f.at_s for f in rig.sink.frames)
    assert 10.0 + BMS_TIMEOUT_S - 0.5 <= last <= 10.0 + BMS_TIMEOUT_S + 1.0
    assert all(f.values["ccl"] != 0 for f in rig.sink.of(0x351)), "no zero set: silence instead"
    assert rig.loop.state is FailsafeState.SILENT


# --- through the CAN link, in real time ----------------------------------------------------------------------


class StaticDriver:
    """A BMS that always answers with the normal-charge scenario's first reading, stamped now."""

    name = "static"

    def __init__(self) -> None:
        self._clock = SystemClock()
        self._reading: PackReading = SCENARIOS["normal-charge"].step(0.0).reading

    def read(self) -> tuple[PackReading, ...]:
        return (stamped(self._reading, self._clock.monotonic()),)

    def close(self) -> None:
        pass


def wait_until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def channel() -> str:
    return f"test-supervision-{uuid.uuid4().hex}"


def start_gateway(channel: str, profile_name: str) -> Iterator[tuple[ControlLoop, CanLink]]:
    profile = load_profile(profile_name)
    clock = SystemClock()
    loop: ControlLoop | None = None

    def on_receive(can_id: int) -> None:
        assert loop is not None
        loop.on_frame(can_id)

    link = CanLink(
        CanSettings("virtual", channel, None),
        clock,
        listen_ids=profile.listen_ids,
        decoders={f.can_id: f.decode_values for f in profile.inverter_frames if f.spec.fields},
        on_receive=on_receive,
    )
    settings = LoopSettings(poll_interval_s=0.2, bms_timeout_s=5.0, silence_after_s=15.0, limits=LimitsSettings())
    heartbeat = profile.heartbeat
    loop = ControlLoop(
        profile,
        link,
        clock,
        settings,
        heartbeat_age_s=None if heartbeat is None else (lambda: link.heartbeat_age_s(heartbeat.can_id)),
        inverter_values=link.received_values,
    )
    poller = Poller(StaticDriver(), loop, clock, 0.2)
    stop = threading.Event()
    link.open()
    runner = threading.Thread(target=run_loop, args=(loop, poller, clock, stop), daemon=True)
    runner.start()
    try:
        yield loop, link
    finally:
        stop.set()
        runner.join(timeout=5)
        link.close()
    assert not runner.is_alive()


@pytest.fixture
def request_gateway(channel: str) -> Iterator[tuple[ControlLoop, CanLink]]:
    yield from start_gateway(channel, str(DATA / "request.yaml"))


@pytest.fixture
def sma_gateway(channel: str) -> Iterator[tuple[ControlLoop, CanLink]]:
    yield from start_gateway(channel, str(DATA / "features-base.yaml"))


def test_request_frames_on_the_bus_are_answered(channel: str, request_gateway: tuple[ControlLoop, CanLink]) -> None:
    loop, _ = request_gateway
    bus = can.Bus(interface="virtual", channel=channel, ignore_config=True)
    inverter = InverterSimulator(REQUEST, bus, send_heartbeat=False)
    inverter.start()
    try:
        assert wait_until(lambda: loop.state is FailsafeState.NORMAL)
        time.sleep(0.5)
        assert inverter.arrivals == {}, "nothing before the first request"
        for count in (1, 2, 3):
            inverter.send_request()
            assert wait_until(lambda n=count: len(inverter.arrivals.get(0x313, [])) == n), f"request {count}"
            time.sleep(0.2)
            assert {can_id: len(times) for can_id, times in inverter.arrivals.items()} == {0x311: count, 0x313: count}
        assert inverter.values()["charge_voltage_limit_v"] == pytest.approx(55.2)
        assert loop.snapshot().requests_received == 3
        assert loop.snapshot().inverter_state is InverterState.ALIVE  # 0x301 is its heartbeat too
    finally:
        inverter.stop()
        bus.shutdown()


def test_inverter_values_reach_the_snapshot(channel: str, sma_gateway: tuple[ControlLoop, CanLink]) -> None:
    loop, link = sma_gateway
    bus = can.Bus(interface="virtual", channel=channel, ignore_config=True)
    measurements = {"inverter_voltage_v": 53.1, "inverter_current_a": -12.5, "inverter_soc_pct": 76}
    inverter = InverterSimulator(SMA_LIKE, bus, measurements=measurements)
    inverter.start()
    try:
        assert wait_until(lambda: "inverter_voltage_v" in loop.snapshot().inverter_values)
        snapshot = loop.snapshot()
        values = {name: item.value for name, item in snapshot.inverter_values.items()}
        assert values == {**measurements, "inverter_temperature_c": 0}
        assert all(0 <= item.age_s < 2.0 for item in snapshot.inverter_values.values())
        # The link records a value as it arrives; the loop declares the inverter alive on the tick that the
        # frame's wake starts, a moment later (checking at once raced it under load).
        assert wait_until(lambda: loop.snapshot().inverter_state is InverterState.ALIVE)
        assert link.decode_errors == 0
        # The inverter heard the SMA-style frames, pairs decoded by flag name: every pair cleared.
        assert wait_until(lambda: 0x35A in inverter.heard)
        assert inverter.values()["fault_over_voltage"] is False
    finally:
        inverter.stop()
        bus.shutdown()


def test_rig_profile_has_a_heartbeat() -> None:
    """test_runtime's default profile is the one the keep_sending tests above rely on."""
    assert PROFILE.heartbeat is not None
    assert (PROFILE.heartbeat.can_id, PROFILE.heartbeat.timeout_s) == (0x305, 10)
