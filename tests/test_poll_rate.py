"""Adaptive polling (issue 21): fast near a threshold, slow away from every one.

The decision (:func:`gateway.poll_rate.decide_poll_rate`) is tested trigger by trigger, each with its release and
its hysteresis, on explicit times; the poller switching rate is tested with a real :class:`ControlLoop` and
:class:`Poller` on a fake clock, counting polls. The reference pack is limits_fixtures' 16S LiFePO4: charge knee
3.400 V, discharge knee 3.100 V, charge window 0…45 °C and discharge −20…60 °C with a 2 °C margin, MOS OTP 75 /
OTPR 65 °C.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import pytest
from limits_fixtures import CELLS, NOW_S, TUNING, cells_at, lifepo4_settings, reading

from gateway.cli.status import render
from gateway.clock import FakeClock, SystemClock
from gateway.errors import GatewayError
from gateway.limits import derive_thresholds
from gateway.model import LimitReason, Limits, PackReading
from gateway.poll_rate import (
    FAST_HOLD_S,
    TEMPERATURE_HYSTERESIS_C,
    VOLTAGE_HYSTERESIS_V,
    PackThresholds,
    PollRate,
    decide_poll_rate,
    initial_rate,
)
from gateway.profiles import load_profile
from gateway.runtime import ControlLoop, FailsafeState, LoopSettings, Poller
from gateway.telemetry.status_doc import status_document

SLOW_S = 1.0
FAST_S = 0.2
THRESHOLDS = derive_thresholds(lifepo4_settings(), CELLS, TUNING)
CHARGE_KNEE_V = THRESHOLDS.charge_knee_v
DISCHARGE_KNEE_V = THRESHOLDS.discharge_knee_v
SLOW = PollRate(SLOW_S, False, "slow: every value away from its thresholds")


def limits(**reasons: str) -> Limits:
    """Limits with 90 A / 135 A; ``reasons`` maps a current's name to its limiter (``ramp``, ``hold``, ...)."""
    return Limits(
        computed_at_s=NOW_S,
        charge_voltage_limit_v=55.2,
        charge_current_limit_a=90.0,
        discharge_current_limit_a=135.0,
        discharge_voltage_limit_v=46.4,
        charge_enable=True,
        discharge_enable=True,
        reasons={name: LimitReason(limiter, "test") for name, limiter in reasons.items()},
    )


def decide(
    pack: PackReading,
    previous: PollRate = SLOW,
    now_s: float = NOW_S,
    *,
    with_limits: Limits | None = None,
    failsafe: FailsafeState = FailsafeState.NORMAL,
) -> PollRate:
    return decide_poll_rate(
        [PackThresholds(pack, THRESHOLDS, TUNING.temperature_margin_c)],
        with_limits if with_limits is not None else limits(),
        failsafe is FailsafeState.NORMAL,
        failsafe.value,
        previous,
        now_s,
        slow_interval_s=SLOW_S,
        fast_interval_s=FAST_S,
    )


def released_after_hold(fast: PollRate, calm: PackReading) -> None:
    """A fast rate whose trigger is gone stays fast for FAST_HOLD_S, then turns slow."""
    held = decide(calm, fast, NOW_S + FAST_HOLD_S - 0.1)
    assert (held.interval_s, held.fast) == (FAST_S, True), "the slow rate must wait out the hold"
    slow = decide(calm, held, NOW_S + FAST_HOLD_S + 0.1)
    assert (slow.interval_s, slow.fast) == (SLOW_S, False)
    assert slow.why.startswith("slow: ")


def test_a_pack_away_from_every_threshold_polls_slowly() -> None:
    rate = decide(reading(3.30))
    assert (rate.interval_s, rate.fast) == (SLOW_S, False)
    assert rate.why == "slow: every value away from its thresholds"


def test_before_the_first_reading_and_while_the_failsafe_is_not_normal_it_polls_fast() -> None:
    assert initial_rate(FAST_S).interval_s == FAST_S
    for state in (FailsafeState.WAITING, FailsafeState.STALE, FailsafeState.SILENT):
        rate = decide(reading(3.30), failsafe=state)
        assert (rate.interval_s, rate.why) == (FAST_S, f"fast: fail-safe {state.value}")
    released_after_hold(decide(reading(3.30), failsafe=FailsafeState.STALE), reading(3.30))


def test_a_cell_past_the_charge_knee_polls_fast_with_hysteresis() -> None:
    past = reading(cells_at(3.30, cell7=CHARGE_KNEE_V + 0.005))
    fast = decide(past)
    assert (fast.interval_s, fast.fast) == (FAST_S, True)
    assert fast.why.startswith("fast: cell 7 past the charge knee 3.400 V")
    # Back just inside the knee, within the hysteresis: still a trigger, whatever the time.
    inside = reading(cells_at(3.30, cell7=CHARGE_KNEE_V - VOLTAGE_HYSTERESIS_V / 2))
    still = decide(inside, fast, NOW_S + 3 * FAST_HOLD_S)
    assert still.fast and "charge knee" in still.why and still.last_trigger_s == NOW_S + 3 * FAST_HOLD_S
    # From slow, the same voltage is no trigger: the hysteresis only keeps a fast rate.
    assert not decide(inside).fast
    released_after_hold(fast, reading(cells_at(3.30, cell7=CHARGE_KNEE_V - 2 * VOLTAGE_HYSTERESIS_V)))


def test_a_cell_past_the_discharge_knee_polls_fast_with_hysteresis() -> None:
    fast = decide(reading(cells_at(3.20, cell3=DISCHARGE_KNEE_V - 0.005)))
    assert fast.fast and fast.why.startswith("fast: cell 3 past the discharge knee 3.100 V")
    inside = reading(cells_at(3.20, cell3=DISCHARGE_KNEE_V + VOLTAGE_HYSTERESIS_V / 2))
    assert decide(inside, fast, NOW_S + 3 * FAST_HOLD_S).fast
    released_after_hold(fast, reading(cells_at(3.20, cell3=DISCHARGE_KNEE_V + 2 * VOLTAGE_HYSTERESIS_V)))


@pytest.mark.parametrize(
    ("temperatures", "calm", "words"),
    [
        ((16.5, 25.0), (18.0 + TEMPERATURE_HYSTERESIS_C, 25.0), "charge derating band near 0 °C"),  # 0 + 2 + 15
        ((25.0, 35.5), (25.0, 34.0 - TEMPERATURE_HYSTERESIS_C), "charge derating band near 45 °C"),  # 45 − 2 − 8
    ],
)
def test_a_temperature_within_a_derating_band_polls_fast(
    temperatures: tuple[float, float], calm: tuple[float, float], words: str
) -> None:
    fast = decide(reading(3.30, temperatures=temperatures))
    assert fast.fast and words in fast.why
    assert decide(reading(3.30, temperatures=calm)).fast is False
    released_after_hold(fast, reading(3.30, temperatures=calm))


def test_a_mos_temperature_within_its_derating_band_polls_fast() -> None:
    fast = decide(reading(3.30, mos_c=61.0))  # full current up to min(OTPR − 5, OTP − 8) = 60 °C
    assert fast.fast and "MOS at 61 °C" in fast.why
    assert decide(reading(3.30, mos_c=59.5), fast, NOW_S + 3 * FAST_HOLD_S).fast, "within the hysteresis"
    released_after_hold(fast, reading(3.30, mos_c=58.0))


@pytest.mark.parametrize(
    ("moving", "words"),
    [
        (limits(charge_current_limit_a="ramp"), "charge current limit ramping"),
        (limits(discharge_current_limit_a="hold"), "discharge current limit held"),
        (
            replace(limits(charge_current_limit_a="cell_voltage"), charge_current_limit_a=0.0),
            "charge current limit at 0 A",
        ),
    ],
)
def test_a_limit_ramping_held_or_at_zero_polls_fast(moving: Limits, words: str) -> None:
    fast = decide(reading(3.30), with_limits=moving)
    assert fast.fast and words in fast.why
    released_after_hold(fast, reading(3.30))


def test_fast_is_never_slower_than_the_slow_interval() -> None:
    rate = decide_poll_rate([], None, False, "waiting", SLOW, NOW_S, slow_interval_s=0.1, fast_interval_s=FAST_S)
    assert rate.interval_s == 0.1


# --- the poller switching rate, on a fake clock ---------------------------------------------------------


class KneeDriver:
    """A pack whose cell 7 the test sets; the reading is stamped at the clock's time."""

    name = "fake"

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.cell7_v = 3.30

    def read(self) -> tuple[PackReading, ...]:
        now = self._clock.monotonic()
        return (reading(cells_at(3.30, cell7=self.cell7_v), now_s=now),)

    def close(self) -> None:
        pass


class SinkNowhere:
    def send(self, can_id: int, data: bytes) -> bool:
        return True


def test_the_poller_switches_to_the_fast_rate_past_the_knee_and_back() -> None:
    clock = FakeClock(start_s=NOW_S)
    driver = KneeDriver(clock)
    # No hold and a steep ramp: the CCL tapered at the knee is back in one step (a held limit polls fast, above).
    tuning = replace(TUNING, current_hold_s=0.0, current_ramp_a_per_s=10_000.0)
    settings = LoopSettings(
        poll_interval_s=SLOW_S, fast_poll_interval_s=FAST_S, bms_timeout_s=5.0, silence_after_s=15.0, limits=tuning
    )
    loop = ControlLoop(load_profile("pylontech-can"), SinkNowhere(), clock, settings)
    poller = Poller(driver, loop, clock, SLOW_S, rate=loop)
    polls_at: list[float] = []
    next_poll_s = clock.monotonic()

    def run_until(t_s: float) -> None:
        """Poll and tick as run_loop and Poller.run would: a reading wakes the loop, whose tick decides the rate,
        and the poller's next poll is one interval (the one in force after that tick) after the last one."""
        nonlocal next_poll_s
        while clock.monotonic() < NOW_S + t_s - 1e-9:
            if clock.monotonic() >= next_poll_s - 1e-9:
                started_s = next_poll_s
                polls_at.append(clock.monotonic() - NOW_S)
                poller.poll_once()
                loop.tick()
                next_poll_s = poller.next_poll_s(started_s, clock.monotonic())
            next_due = loop.tick()
            clock.advance(max(min(next_due, next_poll_s, NOW_S + t_s) - clock.monotonic(), 1e-9))

    def polls_between(a_s: float, b_s: float) -> int:
        return sum(a_s - 1e-6 <= at < b_s - 1e-6 for at in polls_at)

    run_until(10.0)
    assert polls_between(0.0, 10.0) == 10, "away from every threshold: the slow rate"
    assert loop.snapshot().poll_rate == replace(SLOW, interval_s=SLOW_S)
    driver.cell7_v = CHARGE_KNEE_V + 0.02
    run_until(20.0)
    assert polls_between(10.0, 20.0) == 50, "past the knee: the poll at 10 s sees it, then every 0.2 s"
    status = loop.snapshot().poll_rate
    assert status is not None and status.why.startswith("fast: cell 7 past the charge knee")
    shown = render(status_document(loop.snapshot())).splitlines()
    assert "BMS polled every 0.2 s (fast: cell 7 past the charge knee 3.400 V (3.420 V))" in shown
    driver.cell7_v = 3.30
    run_until(20.0 + FAST_HOLD_S + 10.0)
    assert polls_between(20.0, 20.0 + FAST_HOLD_S) == 5 * FAST_HOLD_S, "fast for the hold after the trigger ends"
    assert polls_between(21.0 + FAST_HOLD_S, 30.0 + FAST_HOLD_S) == 9, "then slow again"
    assert poller.polls == len(polls_at)
    assert math.isclose(loop.poll_interval_s(), SLOW_S)


def test_a_loop_without_a_fast_interval_keeps_one_rate() -> None:
    clock = FakeClock(start_s=NOW_S)
    settings = LoopSettings(poll_interval_s=SLOW_S, bms_timeout_s=5.0, silence_after_s=15.0, limits=TUNING)
    loop = ControlLoop(load_profile("pylontech-can"), SinkNowhere(), clock, settings)
    assert loop.poll_interval_s() == SLOW_S and loop.snapshot().poll_rate is None


class SettableRate:
    """A rate source the test sets (as the control loop does after a tick)."""

    def __init__(self, interval_s: float) -> None:
        self.interval = interval_s
        self.poll_rate_wake = threading.Event()

    def poll_interval_s(self) -> float:
        return self.interval


class CountingSink:
    """Counts the readings the poller hands on; ``polled`` is set at each."""

    def __init__(self) -> None:
        self.readings = 0
        self.polled = threading.Event()

    def on_readings(self, readings: tuple[PackReading, ...]) -> None:
        self.readings += 1
        self.polled.set()

    def on_poll_failed(self, error: GatewayError) -> None:
        pass


def test_a_faster_rate_wakes_the_waiting_poller_and_stop_still_ends_it() -> None:
    """Poller.run on real threads, by events: waiting out an hour-long interval, it polls again as soon as the rate
    says 0.01 s and wakes it, not an hour later; a stop ends its wait at once."""
    clock = SystemClock()
    rate, sink = SettableRate(3600.0), CountingSink()
    poller = Poller(KneeDriver(FakeClock(start_s=NOW_S)), sink, clock, 3600.0, rate=rate)  # type: ignore[arg-type]
    stop = threading.Event()
    runner = threading.Thread(target=poller.run, args=(stop,))
    runner.start()
    try:
        assert sink.polled.wait(5.0), "the first poll comes at once"
        sink.polled.clear()
        assert sink.readings == 1
        rate.interval = 0.01
        rate.poll_rate_wake.set()
        assert sink.polled.wait(5.0), "a faster rate must end the hour-long wait"
        rate.interval = 3600.0
    finally:
        stop.set()
        runner.join(5.0)
    assert not runner.is_alive(), "stop must end the poller's wait"


def test_several_packs_name_the_pack_that_is_near_a_threshold() -> None:
    calm = replace(reading(3.30), pack_id="jk-modbus:1")
    near = replace(reading(cells_at(3.30, cell7=CHARGE_KNEE_V + 0.02)), pack_id="jk-modbus:2")
    rate = decide_poll_rate(
        [PackThresholds(calm, THRESHOLDS), PackThresholds(near, THRESHOLDS)],
        limits(),
        True,
        "normal",
        SLOW,
        NOW_S,
        slow_interval_s=SLOW_S,
        fast_interval_s=FAST_S,
    )
    assert rate.why.startswith("fast: jk-modbus:2 cell 7 past the charge knee")


def test_a_poll_longer_than_the_fast_interval_is_followed_by_the_next_at_once() -> None:
    """Several JK-PB packs on one bus: a cycle of 1.4 s at a fast interval of 0.2 s polls back to back."""
    rate = SettableRate(FAST_S)
    poller = Poller(KneeDriver(FakeClock()), CountingSink(), FakeClock(), SLOW_S, rate=rate)  # type: ignore[arg-type]
    assert poller.next_poll_s(started_s=100.0, now_s=101.4) == 101.4
    assert poller.next_poll_s(started_s=100.0, now_s=100.05) == pytest.approx(100.0 + FAST_S)
    rate.interval = SLOW_S
    assert poller.next_poll_s(started_s=100.0, now_s=100.05) == pytest.approx(100.0 + SLOW_S)
