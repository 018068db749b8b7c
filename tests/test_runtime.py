"""The control loop on a fake clock: what the inverter hears, when, and what happens when the BMS goes quiet.

Each test drives a :class:`~gateway.runtime.ControlLoop` and a :class:`~gateway.runtime.Poller` the way
:func:`~gateway.runtime.run_loop` does (poll every ``poll_interval_s``, tick whenever the loop asks or a poll
delivered something), but on a :class:`~gateway.clock.FakeClock`, so minutes pass in milliseconds. Frames go to
a recording sink and are decoded with the profile's codec; the expected values are the physical inputs (the
simulated BMS's readings and the limit rules of the issue), never bytes from our encoder.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from jk_frames import REPLY_BY_ID

from gateway.bms import jk_nw
from gateway.clock import FakeClock, SystemClock
from gateway.errors import LinkError, LinkTimeout
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.profiles import Profile, load_profile
from gateway.runtime import (
    DEADLINE_SLACK_S,
    IDLE_TICK_S,
    ControlLoop,
    FailsafeState,
    InverterState,
    LoopSettings,
    Poller,
    run_loop,
)
from gateway.sim.scenarios import SCENARIOS

PROFILE = load_profile("pylontech-can")
DATA = Path(__file__).resolve().parent / "data" / "profiles"
SMA_LIKE = load_profile(str(DATA / "features-base.yaml"))
"""Periods 0.5 s (0x35A: 1 s), min_gap_s 0.2 s, heartbeat 0x305 with on_lost stop."""
REQUEST = load_profile(str(DATA / "request.yaml"))
"""Request mode: each 0x301 is answered with 0x311 and 0x313."""
FRAME_IDS = (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E)
PERIOD_S = 1.0
POLL_S = 1.0
BMS_TIMEOUT_S = 5.0
SILENCE_AFTER_S = 15.0
START_S = 1000.0
# The simulated pack allows 150 A charge and 200 A discharge: the user's cap wins on the charge side and
# 0.9 × the BMS's own maximum on the discharge side, so both branches of the ceiling are exercised.
CAPS = LimitsSettings(max_charge_current_a=100.0, max_discharge_current_a=250.0)
EXPECTED_CCL_A = 100.0
EXPECTED_DCL_A = 180.0  # 0.9 × the BMS's 200 A, below the 250 A cap
EXPECTED_CVL_V = 55.2  # LiFePO4 bulk: 16 × min(3.45, OVP 3.65 − 0.10)
EXPECTED_DVL_V = 44.8  # discharge cut-off: 16 × (UVP 2.70 + 0.10)
EPS_S = 1e-6


def stamped(reading: PackReading, at_s: float) -> PackReading:
    """``reading`` as if the BMS had answered at monotonic time ``at_s``."""
    return replace(
        reading,
        state=replace(reading.state, measured_at_s=at_s),
        settings=replace(reading.settings, measured_at_s=at_s),
    )


def frame_d_reading(at_s: float) -> PackReading:
    """Real reply D (cells 1 and 2 read 0.000 V: a loose sense wire), decoded as the jk-uart driver does."""
    return jk_nw.to_reading(jk_nw.decode_reply(REPLY_BY_ID["D"].frame), at_s, "jk-uart:fake")


class FakeDriver:
    """A BMS driver whose answer the test chooses: the normal-charge scenario, silence, or real frame D."""

    name = "fake"

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.mode = "answer"
        self.charge_mos_on = True
        self.served: list[PackReading] = []
        """Every good-looking reading returned, in order."""

    def read(self) -> tuple[PackReading, ...]:
        now = self._clock.monotonic()
        if self.mode == "silent":
            raise LinkTimeout("no reply from /dev/fake within 0.5 s")
        if self.mode == "frame_d":
            return (frame_d_reading(now),)
        reading = stamped(SCENARIOS["normal-charge"].step(now - START_S).reading, now)
        reading = replace(reading, state=replace(reading.state, charge_mos_on=self.charge_mos_on))
        self.served.append(reading)
        return (reading,)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Sent:
    at_s: float
    """Seconds since the rig started."""
    can_id: int
    data: bytes
    profile: Profile = field(default=PROFILE, compare=False, repr=False)

    @property
    def values(self) -> dict[str, object]:
        return dict(self.profile.frame(self.can_id).decode(self.data))


class RecordingSink:
    """Records every frame with the fake clock's time; always accepts."""

    def __init__(self, clock: FakeClock, profile: Profile = PROFILE) -> None:
        self._clock = clock
        self._profile = profile
        self.frames: list[Sent] = []

    def send(self, can_id: int, data: bytes) -> bool:
        self.frames.append(Sent(self._clock.monotonic() - START_S, can_id, bytes(data), self._profile))
        return True

    def of(self, can_id: int, after_s: float = -math.inf, before_s: float = math.inf) -> list[Sent]:
        return [f for f in self.frames if f.can_id == can_id and after_s <= f.at_s < before_s]


class Rig:
    """Loop, poller, fake driver and recording sink on one fake clock; ``run_until`` plays run_loop's part."""

    def __init__(
        self,
        caps: LimitsSettings = CAPS,
        *,
        profile: Profile = PROFILE,
        poll_s: float = POLL_S,
        heartbeat_age_s: Callable[[FakeClock, RecordingSink], Callable[[], float | None]] | None = None,
        inverter_wake_s: Callable[[float, list[Sent]], float] | None = None,
    ) -> None:
        """:param heartbeat_age_s: builds the loop's heartbeat source from the clock and the sink (the inverter
            side of a supervision test); None: the inverter is not supervised.
        :param inverter_wake_s: when the inverter next sends a heartbeat, s since the start, given the time now
            and the frames the last tick sent. The CAN link's reader wakes the loop for it
            (:meth:`ControlLoop.on_frame`); the rig ticks then, as run_loop would.
        """
        self.clock = FakeClock(start_s=START_S)
        self.sink = RecordingSink(self.clock, profile)
        self.driver = FakeDriver(self.clock)
        self.poll_s = poll_s
        settings = LoopSettings(
            poll_interval_s=poll_s, bms_timeout_s=BMS_TIMEOUT_S, silence_after_s=SILENCE_AFTER_S, limits=caps
        )
        source = None if heartbeat_age_s is None else heartbeat_age_s(self.clock, self.sink)
        self.loop = ControlLoop(profile, self.sink, self.clock, settings, heartbeat_age_s=source)
        self._inverter_wake_s = inverter_wake_s
        self.poller = Poller(self.driver, self.loop, self.clock, poll_s)
        self.next_poll_s = START_S
        self.inverter_states: list[tuple[float, InverterState]] = []
        """(time, new state) at every tick that changed the inverter state."""
        self.caplog: pytest.LogCaptureFixture | None = None
        """Set it to have every tick's log records collected in :attr:`ticks`."""
        self.ticks: list[tuple[float, list[logging.LogRecord], bool]] = []
        """Per tick while :attr:`caplog` is set: (time, records the tick logged, whether it changed the state)."""

    @property
    def now(self) -> float:
        """Seconds since the rig started."""
        return self.clock.monotonic() - START_S

    def tick(self) -> float:
        before_state = self.loop.state
        before_inverter = self.loop.inverter_state
        before = len(self.caplog.records) if self.caplog is not None else 0
        next_due = self.loop.tick()
        if self.loop.inverter_state is not before_inverter:
            self.inverter_states.append((self.now, self.loop.inverter_state))
        if self.caplog is not None:
            self.ticks.append((self.now, self.caplog.records[before:], self.loop.state is not before_state))
        return next_due

    def run_until(self, t_s: float, *, polling: bool = True) -> None:
        """Poll and tick as run_loop would, until ``t_s`` seconds after the start (exclusive)."""
        end = START_S + t_s
        while self.clock.monotonic() < end - EPS_S:
            if polling and self.clock.monotonic() >= self.next_poll_s - EPS_S:
                self.poller.poll_once()
                self.next_poll_s += self.poll_s
            sent_before = len(self.sink.frames)
            next_due = self.tick()
            target = min(next_due, end, self.next_poll_s if polling else math.inf)
            if self._inverter_wake_s is not None:
                target = min(target, START_S + self._inverter_wake_s(self.now, self.sink.frames[sent_before:]))
            self.clock.advance(max(target - self.clock.monotonic(), EPS_S))


@pytest.fixture
def rig() -> Rig:
    return Rig()


def assert_normal_set(sent: list[Sent], reading: PackReading) -> None:
    """One frame of each id, carrying ``reading`` and the limits the issue prescribes for it."""
    by_id = {f.can_id: f.values for f in sent}
    assert sorted(by_id) == list(FRAME_IDS)
    assert len(sent) == len(FRAME_IDS)
    assert by_id[0x351] == pytest.approx(
        {
            "charge_voltage_limit": EXPECTED_CVL_V,
            "charge_current_limit": EXPECTED_CCL_A,
            "discharge_current_limit": EXPECTED_DCL_A,
            "discharge_voltage_limit": EXPECTED_DVL_V,
        }
    )
    state = reading.state
    assert by_id[0x355] == {"soc": round(state.soc_pct), "soh": 100}  # JK carries no SOH: 100 %
    assert by_id[0x356]["voltage"] == pytest.approx(state.pack_voltage_v, abs=0.005 + 1e-9)
    assert by_id[0x356]["current"] == pytest.approx(state.current_a, abs=0.05 + 1e-9)
    # Mean of the two fitted battery sensors.
    temperatures = [t for t in state.battery_temperatures_c if t is not None]
    assert by_id[0x356]["temperature"] == pytest.approx(sum(temperatures) / len(temperatures), abs=0.05 + 1e-9)
    protection = by_id[0x359]
    assert (protection.pop("module_count"), protection.pop("pn")) == (1, "PN")
    assert not any(protection.values()), "no alarm is active, no protection bit may be set"
    assert by_id[0x35C] == {
        "charge_enable": True,
        "discharge_enable": True,
        "force_charge_1": False,
        "force_charge_2": False,
        "full_charge_request": False,
    }
    assert by_id[0x35E] == {"manufacturer": "PYLON"}


def assert_failsafe_set(sent: list[Sent]) -> None:
    """Every frame id once; currents 0, both enables cleared and the communication alarm raised."""
    by_id = {f.can_id: f.values for f in sent}
    assert sorted(by_id) == list(FRAME_IDS)
    assert by_id[0x351]["charge_current_limit"] == 0
    assert by_id[0x351]["discharge_current_limit"] == 0
    assert by_id[0x35C]["charge_enable"] is False
    assert by_id[0x35C]["discharge_enable"] is False
    assert by_id[0x359]["alarm_internal_communication"] is True  # 0x359 byte 3 bit 3
    sets = [f for f in sent if f.can_id == 0x359]
    assert sets[0].data[3] & 0x08, "comm alarm is byte 3 bit 3 of 0x359"


def set_at(rig: Rig, t_s: float) -> list[Sent]:
    """The frames sent at exactly ``t_s`` (one tick)."""
    return [f for f in rig.sink.frames if abs(f.at_s - t_s) < EPS_S * 10]


def latest_served_before(rig: Rig, t_s: float) -> PackReading:
    return [r for r in rig.driver.served if r.measured_at_s - START_S <= t_s + EPS_S][-1]


# --- before the first reading -----------------------------------------------------------------------------


def test_nothing_is_sent_before_the_first_good_reading(rig: Rig) -> None:
    for _ in range(50):  # no poll at all yet
        rig.loop.tick()
        rig.clock.advance(0.1)
    rig.driver.mode = "silent"
    rig.next_poll_s = rig.clock.monotonic()
    rig.run_until(20.0)  # polls that all fail
    assert rig.sink.frames == []
    assert rig.loop.state is FailsafeState.WAITING
    assert rig.poller.polls >= 15

    rig.driver.mode = "answer"
    rig.run_until(21.0)
    first = rig.sink.frames[0].at_s
    assert 20.0 - EPS_S <= first <= 20.0 + EPS_S, "the first good reading goes out at once"
    assert_normal_set(set_at(rig, first), rig.driver.served[0])


def test_an_implausible_first_reading_sends_nothing(rig: Rig) -> None:
    rig.driver.mode = "frame_d"
    rig.run_until(10.0)
    assert rig.sink.frames == []
    assert rig.loop.state is FailsafeState.WAITING


# --- normal service ---------------------------------------------------------------------------------------


def test_normal_every_frame_once_per_period_with_the_right_values(rig: Rig) -> None:
    rig.run_until(10.0)
    assert rig.loop.state is FailsafeState.NORMAL
    for can_id in FRAME_IDS:
        times = [f.at_s for f in rig.sink.of(can_id)]
        assert len(times) == 10, f"{can_id:#x}: {times}"
        assert times == pytest.approx([float(k) for k in range(10)], abs=1e-6), f"{can_id:#x}"
    # Each set carries the newest reading at its time, decoded to the physical inputs.
    for k in range(10):
        assert_normal_set(set_at(rig, float(k)), latest_served_before(rig, float(k)))
    # The BMS answered every poll; values varied (the scenario's current is a sine), so this is not one set.
    currents = {f.values["current"] for f in rig.sink.of(0x356)}
    assert len(currents) > 1


def test_ticking_more_often_sends_no_extra_frames(rig: Rig) -> None:
    rig.run_until(0.5)
    for _ in range(100):  # a tick storm (wake-ups from the poller, say) within the same period
        rig.loop.tick()
        rig.clock.advance(0.004)
    assert len(rig.sink.frames) == len(FRAME_IDS)


# --- BMS silent: stale, then silence, then back ------------------------------------------------------------


def test_silent_bms_zeroes_limits_then_goes_quiet_then_recovers(rig: Rig) -> None:
    rig.run_until(10.5)
    last_good = rig.driver.served[-1].measured_at_s - START_S
    assert last_good == pytest.approx(10.0)
    rig.driver.mode = "silent"

    # Missing polls alone do not drop the limits while the data is younger than bms_timeout_s.
    rig.run_until(last_good + BMS_TIMEOUT_S)
    for f in rig.sink.of(0x351, after_s=last_good):
        assert f.values["charge_current_limit"] == EXPECTED_CCL_A
    assert rig.loop.state is FailsafeState.NORMAL

    # Within bms_timeout_s plus one poll interval: zero currents, enables cleared, comm alarm.
    rig.run_until(last_good + SILENCE_AFTER_S + 0.5)
    zero = [f for f in rig.sink.of(0x351, after_s=last_good) if f.values["charge_current_limit"] == 0]
    assert zero, "the fail-safe never engaged"
    engaged = zero[0].at_s
    assert last_good + BMS_TIMEOUT_S < engaged <= last_good + BMS_TIMEOUT_S + POLL_S
    assert_failsafe_set(set_at(rig, engaged))
    # While stale, the zero set keeps going out every period (the inverter must keep hearing it).
    stale = rig.sink.of(0x351, after_s=engaged, before_s=last_good + SILENCE_AFTER_S)
    assert len(stale) == pytest.approx(SILENCE_AFTER_S - BMS_TIMEOUT_S, abs=1)
    for f in stale:
        assert (f.values["charge_current_limit"], f.values["discharge_current_limit"]) == (0, 0)
    for f in rig.sink.of(0x35C, after_s=engaged):
        assert (f.values["charge_enable"], f.values["discharge_enable"]) == (False, False)
    for f in rig.sink.of(0x359, after_s=engaged):
        assert f.values["alarm_internal_communication"] is True
    assert rig.loop.snapshot().state is FailsafeState.SILENT

    # After silence_after_s: nothing at all, for a long stretch.
    silent_from = last_good + SILENCE_AFTER_S
    assert [f for f in rig.sink.frames if f.at_s > silent_from] == []
    count = len(rig.sink.frames)
    rig.run_until(300.0)
    assert len(rig.sink.frames) == count, "frames were sent while the output should be silent"
    snapshot = rig.loop.snapshot()
    assert snapshot.state is FailsafeState.SILENT
    assert snapshot.reading_age_s == pytest.approx(300.0 - last_good, abs=0.5)
    assert snapshot.last_error is not None and "no reply" in snapshot.last_error

    # A fresh reading: normal frames resume by themselves, at once.
    rig.driver.mode = "answer"
    rig.run_until(305.0)
    resumed = rig.sink.frames[count:]
    assert resumed, "normal frames did not resume"
    first = resumed[0].at_s
    assert first == pytest.approx(300.0, abs=1e-6)
    assert_normal_set(set_at(rig, first), latest_served_before(rig, first))
    for f in resumed:
        if f.can_id == 0x359:
            assert f.values["alarm_internal_communication"] is False
    assert len([f for f in resumed if f.can_id == 0x351]) == 5
    assert rig.loop.state is FailsafeState.NORMAL


# --- a falling limit goes out at once ------------------------------------------------------------------------


def test_charge_mos_off_mid_period_sends_ccl_zero_at_that_tick(rig: Rig) -> None:
    rig.run_until(3.5)  # sets at 0, 1, 2, 3; the next would be due at 4
    assert len(rig.sink.of(0x351)) == 4
    rig.driver.charge_mos_on = False
    rig.poller.poll_once()  # a poll that happens to complete mid-period
    rig.tick()
    now = rig.now
    assert now == pytest.approx(3.5)
    limits = [f for f in rig.sink.of(0x351) if f.at_s == pytest.approx(now)]
    assert len(limits) == 1, "the falling limit must not wait for the next period"
    assert limits[0].values["charge_current_limit"] == 0
    assert limits[0].values["discharge_current_limit"] == EXPECTED_DCL_A  # the discharge side is unaffected
    requests = [f for f in rig.sink.of(0x35C) if f.at_s == pytest.approx(now)]
    assert len(requests) == 1
    assert (requests[0].values["charge_enable"], requests[0].values["discharge_enable"]) == (False, True)


def test_user_cap_and_bms_max_pick_the_lower_one() -> None:
    """CCL = min(user cap, 0.9 × BMS max): here 0.9 × the BMS's 150 A charge max = 135 A is below the user's
    300 A cap."""
    rig = Rig(LimitsSettings(max_charge_current_a=300.0, max_discharge_current_a=20.0))
    rig.run_until(0.5)
    limits = rig.sink.of(0x351)[0].values
    assert (limits["charge_current_limit"], limits["discharge_current_limit"]) == (135.0, 20.0)


# --- an implausible reading is a failed poll -----------------------------------------------------------------


def test_implausible_reading_counts_as_failed_poll(rig: Rig) -> None:
    rig.run_until(3.5)
    last_good_reading = rig.driver.served[-1]
    last_good = last_good_reading.measured_at_s - START_S
    rig.driver.mode = "frame_d"
    d_voltage = frame_d_reading(0.0).state.pack_voltage_v

    rig.run_until(last_good + BMS_TIMEOUT_S + POLL_S + 0.5)
    # Until the fail-safe, the inverter keeps hearing the last good reading, never frame D's values.
    for f in rig.sink.of(0x356, after_s=last_good):
        assert f.values["voltage"] == pytest.approx(last_good_reading.state.pack_voltage_v, abs=0.006)
        assert f.values["voltage"] != pytest.approx(d_voltage, abs=0.5)
    snapshot = rig.loop.snapshot()
    assert snapshot.reading is last_good_reading, "the implausible reading must not replace the good one"
    assert snapshot.last_error is not None
    assert "implausible" in snapshot.last_error and "0.000 V" in snapshot.last_error
    # The previous reading kept aging, so the fail-safe engaged on time.
    zero = [f for f in rig.sink.of(0x351, after_s=last_good) if f.values["charge_current_limit"] == 0]
    assert zero
    assert last_good + BMS_TIMEOUT_S < zero[0].at_s <= last_good + BMS_TIMEOUT_S + POLL_S
    assert_failsafe_set(set_at(rig, zero[0].at_s))
    assert rig.loop.state is FailsafeState.STALE


# --- shutdown --------------------------------------------------------------------------------------------


def test_shutdown_sends_one_zero_set_then_nothing(rig: Rig) -> None:
    rig.run_until(3.5)
    count = len(rig.sink.frames)
    rig.loop.shutdown()
    last = rig.sink.frames[count:]
    assert [f.can_id for f in last] == list(FRAME_IDS), "exactly one last set"
    by_id = {f.can_id: f.values for f in last}
    assert (by_id[0x351]["charge_current_limit"], by_id[0x351]["discharge_current_limit"]) == (0, 0)
    assert (by_id[0x35C]["charge_enable"], by_id[0x35C]["discharge_enable"]) == (False, False)
    assert rig.loop.state is FailsafeState.STOPPED

    rig.run_until(30.0)  # the BMS keeps answering, ticks keep coming
    assert len(rig.sink.frames) == count + len(FRAME_IDS), "nothing may be sent after shutdown"
    rig.loop.shutdown()  # a second call changes nothing
    assert len(rig.sink.frames) == count + len(FRAME_IDS)


def test_stop_ends_the_loops_sleep_at_once() -> None:
    """The loop sleeps until its next deadline (up to IDLE_TICK_S); stop must not wait for it."""
    clock = SystemClock()
    driver = FakeDriver(FakeClock(start_s=START_S))
    driver.mode = "silent"  # waiting: nothing is due, so the loop sleeps its longest
    settings = LoopSettings(
        poll_interval_s=3600.0, bms_timeout_s=BMS_TIMEOUT_S, silence_after_s=SILENCE_AFTER_S, limits=CAPS
    )
    loop = ControlLoop(PROFILE, RecordingSink(FakeClock(start_s=START_S)), clock, settings)
    poller = Poller(driver, loop, clock, settings.poll_interval_s)
    stop, ticked = threading.Event(), threading.Event()
    runner = threading.Thread(
        target=run_loop, args=(loop, poller, clock, stop), kwargs={"after_tick": lambda _: ticked.set()}
    )
    runner.start()
    assert ticked.wait(5.0)
    stop.set()
    runner.join(IDLE_TICK_S / 2)
    assert not runner.is_alive(), f"still sleeping {IDLE_TICK_S / 2} s after stop"
    assert loop.state is FailsafeState.STOPPED


def test_shutdown_before_any_reading_sends_nothing(rig: Rig) -> None:
    rig.loop.tick()
    rig.loop.shutdown()
    assert rig.sink.frames == []


# --- logging ---------------------------------------------------------------------------------------------


def test_one_log_line_per_state_change(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    rig.caplog = caplog
    rig.run_until(5.5)  # waiting → normal
    rig.driver.mode = "silent"
    rig.run_until(40.0)  # normal → stale (t > 10) → silent (t > 20)
    rig.driver.mode = "answer"
    rig.run_until(45.0)  # silent → normal

    changes = [(t, records) for t, records, changed in rig.ticks if changed]
    # The last good reading is at 5 s: stale just past 5 + 5 s, silent just past 5 + 15 s, normal at the 40 s poll.
    assert [round(t, 3) for t, _ in changes] == [0.0, *(round(t + DEADLINE_SLACK_S, 3) for t in (10.0, 20.0)), 40.0]
    assert [len(records) for _, records in changes] == [1, 1, 1, 1], "each state change logs exactly one line"
    assert [records[0].levelno for _, records in changes] == [
        logging.INFO,  # normal
        logging.WARNING,  # stale
        logging.WARNING,  # silent
        logging.INFO,  # normal again
    ]
    quiet = [records for _, records, changed in rig.ticks if not changed]
    # Each of the 45 polls (one a second) is followed by a tick; only four ticks changed the state.
    assert len(quiet) >= 45 - len(changes)
    assert all(records == [] for records in quiet), "a tick without a state change logs nothing"

    # The poller's side: one line when the BMS stopped answering (not one per failed poll), one when it is back.
    by_ticks = {id(r) for _, records, _ in rig.ticks for r in records}
    polls = [r for r in caplog.records if r.name == "gateway.runtime" and id(r) not in by_ticks]
    assert len(polls) == 2, [r.getMessage() for r in polls]
    assert polls[0].levelno == logging.WARNING and "no reply" in polls[0].getMessage()
    assert polls[1].levelno == logging.INFO


# --- min_gap_s: no id repeats faster, even when a limit falls ---------------------------------------------


def test_a_falling_limit_waits_only_for_the_min_gap() -> None:
    rig = Rig(profile=SMA_LIKE)
    rig.run_until(1.05)  # sets at 0 and 0.5 (0x35A: 1 s), and 1.0
    rig.driver.charge_mos_on = False
    rig.poller.poll_once()  # a poll at 1.05 that drops the charge current limit
    rig.tick()
    rig.run_until(1.2)
    assert [f for f in rig.sink.frames if f.at_s > 1.0 + EPS_S] == [], "a frame went out within 0.2 s of the last"
    rig.run_until(2.0)
    times = [round(f.at_s, 4) for f in rig.sink.of(0x351)]
    # The fall goes out as soon as the gap allows (1.0 + 0.2), and the schedule restarts from there.
    assert times == [0.0, 0.5, 1.0, 1.2, 1.7]
    assert rig.sink.of(0x351, after_s=1.1)[0].values["ccl"] == 0
    # The change of state sends every frame at once, each after its own gap: all four at 1.2.
    assert sorted(f.can_id for f in rig.sink.frames if abs(f.at_s - 1.2) < 1e-4) == [0x351, 0x355, 0x35A, 0x35E]


def test_no_id_repeats_faster_than_min_gap_even_when_limits_keep_falling(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worst case for the scheduler: every tick sees a falling limit (so every frame wants out at once),
    # and a poll every 10 ms wakes the loop a hundred times a second.
    monkeypatch.setattr(ControlLoop, "_falls", lambda self, limits: True)
    rig = Rig(profile=SMA_LIKE, poll_s=0.01)
    rig.run_until(10.0)
    assert rig.loop.state is FailsafeState.NORMAL
    for frame in SMA_LIKE.frames:
        times = [f.at_s for f in rig.sink.of(frame.can_id)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= frame.min_gap_s - 1e-9, f"{frame.can_id:#x} repeated after {min(gaps):.4f} s"
        # Each fall went out as soon as the gap allowed: every 0.2 s, not every period (0.5 s or 1 s).
        assert len(times) == pytest.approx(10.0 / frame.min_gap_s, abs=1), f"{frame.can_id:#x}"


# --- request mode -----------------------------------------------------------------------------------------


def request(rig: Rig, at_s: float, count: int = 1) -> list[Sent]:
    """Run to ``at_s``, let ``count`` request frames arrive there, tick once: the frames that tick sent."""
    rig.run_until(at_s)
    before = len(rig.sink.frames)
    for _ in range(count):
        rig.loop.on_frame(0x301)
    assert rig.loop.wake.is_set(), "a request wakes the loop"
    rig.loop.wake.clear()
    rig.tick()
    return rig.sink.frames[before:]


def test_request_mode_answers_each_request_with_the_whole_set_once() -> None:
    rig = Rig(profile=REQUEST)
    rig.run_until(5.0)
    assert rig.loop.state is FailsafeState.NORMAL
    assert rig.sink.frames == [], "nothing goes out before the first request"

    answer = request(rig, 5.0)
    assert [(f.can_id, round(f.at_s, 6)) for f in answer] == [(0x311, 5.0), (0x313, 5.0)]
    assert answer[0].values == pytest.approx({"cvl": EXPECTED_CVL_V, "ccl": EXPECTED_CCL_A, "dcl": EXPECTED_DCL_A})
    rig.run_until(7.0)
    assert len(rig.sink.frames) == 2, "no periodic sending in request mode"

    for at_s in (7.3, 8.0, 9.55):
        assert [f.can_id for f in request(rig, at_s)] == [0x311, 0x313]
    rig.run_until(12.0)
    assert [round(f.at_s, 6) for f in rig.sink.of(0x311)] == [5.0, 7.3, 8.0, 9.55]
    assert [round(f.at_s, 6) for f in rig.sink.of(0x313)] == [5.0, 7.3, 8.0, 9.55]

    rig.loop.on_frame(0x305)  # not the request id
    rig.run_until(13.0)
    assert len(rig.sink.frames) == 8
    # Two requests before the loop got to them share one answer: it went out after both arrived.
    assert [f.can_id for f in request(rig, 13.0, count=2)] == [0x311, 0x313]
    rig.run_until(14.0)
    assert len(rig.sink.frames) == 10
    assert rig.loop.snapshot().requests_received == 6


def test_request_mode_keeps_the_failsafe_states() -> None:
    rig = Rig(profile=REQUEST)
    rig.driver.mode = "silent"
    assert request(rig, 2.0) == [], "no answer without BMS data"
    rig.driver.mode = "answer"
    rig.run_until(4.0)
    assert rig.sink.frames == [], "a request dropped while waiting is not answered later"
    assert [f.can_id for f in request(rig, 4.0)] == [0x311, 0x313]

    rig.driver.mode = "silent"  # last good reading at 4.0
    stale = request(rig, 4.0 + BMS_TIMEOUT_S + POLL_S + 0.5)
    assert rig.loop.state is FailsafeState.STALE
    assert [f.can_id for f in stale] == [0x311, 0x313]
    assert (stale[0].values["ccl"], stale[0].values["dcl"]) == (0, 0), "stale: answered with the zero set"

    assert request(rig, 4.0 + SILENCE_AFTER_S + 1.0) == [], "silent: requests go unanswered"
    assert rig.loop.state is FailsafeState.SILENT
    rig.loop.shutdown()
    assert len(rig.sink.frames) == 4, "no unasked last set in request mode"


def test_a_serial_error_is_logged_once_per_cause_with_its_hint(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """In ``run`` a failing port is retried every poll; the log says each cause once, with its fix (issue 18)."""
    caplog.set_level(logging.WARNING, logger="gateway.runtime")
    silent = LinkTimeout("no reply from /dev/ttyUSB0 within 0.5 s", hint="check bms.driver")
    forbidden = LinkError("cannot open serial port /dev/ttyUSB0: Permission denied", hint="the dialout group")
    for error in (silent, silent, silent, forbidden, forbidden):
        rig.loop.on_poll_failed(error)
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.runtime"] == [
        "BMS: no reply from /dev/ttyUSB0 within 0.5 s; hint: check bms.driver",
        "BMS: cannot open serial port /dev/ttyUSB0: Permission denied; hint: the dialout group",
    ]
