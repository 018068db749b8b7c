"""The demo's DC side (gateway.sim.demo_plant) and its screen: the simulated pack carries the current the simulated
inverter lets flow, and values the fail-safe no longer trusts are marked stale. In process, on a fake clock."""

from __future__ import annotations

import dataclasses
from typing import Final

from gateway.cli.demo import render
from gateway.clock import FakeClock
from gateway.model import Alarm
from gateway.runtime import FailsafeState, Snapshot
from gateway.sim.demo_plant import INVERTERS, TICK_S, DemoPlant, InverterBehaviour
from gateway.sim.inverter_model import Heard
from gateway.sim.scenarios import SCENARIOS, base_settings

CELL_7: Final = 6
OPEN: Final = Heard(cvl_v=55.2, ccl_a=100.0, dcl_a=100.0, dvl_v=44.8, charge_enable=True, discharge_enable=True)
"""What the gateway says while nothing limits the charge."""
STOPPED: Final = dataclasses.replace(OPEN, ccl_a=0.0, charge_enable=False)
"""What it says at the charge cut-off: CCL 0 A, charge enable cleared."""


def _plant(behaviour: InverterBehaviour, scenario: str = "cell-ovp") -> tuple[DemoPlant, FakeClock]:
    clock = FakeClock()
    return DemoPlant(SCENARIOS[scenario], INVERTERS[behaviour], clock), clock


def _run(plant: DemoPlant, clock: FakeClock, heard: Heard, seconds: float) -> None:
    for _ in range(round(seconds / TICK_S)):
        clock.advance(TICK_S)
        plant.tick(heard)


def _reported(plant: DemoPlant, clock: FakeClock) -> tuple[float, float, bool, frozenset[Alarm]]:
    """What the simulated BMS reports now: current, cell 7, charge MOS, alarms."""
    state = plant.scenario.step(clock.monotonic() - 1000.0).reading.state
    return state.current_a, state.cell_voltages_v[CELL_7], state.charge_mos_on, state.alarms


def test_an_obeying_inverter_stops_charging_at_ccl_0_and_the_cell_stops_short_of_ovp() -> None:
    plant, clock = _plant(InverterBehaviour.OBEYS)
    _run(plant, clock, OPEN, 10.0)
    current_a, cell_v, _, _ = _reported(plant, clock)
    assert 25.0 < current_a <= 30.0  # the scenario's charger, let through
    assert cell_v > 3.45

    _run(plant, clock, STOPPED, 20.0)
    current_a, cell_v, charge_mos_on, alarms = _reported(plant, clock)
    assert current_a < 0.1, "the old demo kept charging at +30 A after CCL 0"
    assert cell_v < base_settings().cell_ovp_v
    assert charge_mos_on and Alarm.CELL_OVER_VOLTAGE not in alarms  # the BMS never had to trip


def test_an_obeying_inverter_takes_the_scripts_charge_current_from_a_standstill() -> None:
    # The plant starts with no current flowing; the inverter's wish is the script's (about 40 A in normal-charge),
    # not the current flowing now, or the demo would stand at 0 A for ever (as it did: +0.0 A on every screen).
    plant, clock = _plant(InverterBehaviour.OBEYS, "normal-charge")
    _run(plant, clock, OPEN, 10.0)
    current_a, _, _, _ = _reported(plant, clock)
    assert 30.0 < current_a <= 46.0


def test_a_disobeying_inverter_keeps_charging_until_the_bms_trips_at_ovp_and_releases_below_ovpr() -> None:
    settings = base_settings()
    plant, clock = _plant(InverterBehaviour.DISOBEYS)
    _run(plant, clock, STOPPED, 20.0)
    current_a, _, _, _ = _reported(plant, clock)
    assert current_a > 25.0  # it heard CCL 0 and a cleared enable, and charges on

    tripped_at_s = None
    for tick in range(round(120 / TICK_S)):
        _run(plant, clock, STOPPED, TICK_S)
        current_a, cell_v, charge_mos_on, alarms = _reported(plant, clock)
        if not charge_mos_on:
            tripped_at_s = tick * TICK_S
            assert Alarm.CELL_OVER_VOLTAGE in alarms
            assert cell_v >= settings.cell_ovp_v - 0.01
            break
    assert tripped_at_s is not None, "the BMS never tripped"

    _run(plant, clock, STOPPED, 10.0)
    current_a, _, charge_mos_on, _ = _reported(plant, clock)
    assert not charge_mos_on
    assert current_a < 0.5  # the open charge MOS: nothing flows in
    for _ in range(round(120 / TICK_S)):
        _run(plant, clock, STOPPED, TICK_S)
        _, cell_v, charge_mos_on, alarms = _reported(plant, clock)
        if charge_mos_on:
            assert cell_v < settings.cell_ovpr_v  # released only below OVPR, as a real JK does
            assert Alarm.CELL_OVER_VOLTAGE not in alarms
            return
    raise AssertionError("the BMS never released its charge MOS")


def _snapshot(state: FailsafeState, age_s: float) -> Snapshot:
    reading = SCENARIOS["normal-charge"].step(0.0).reading
    return Snapshot(
        at_s=0.0,
        state=state,
        reading=reading,
        limits=None,
        reading_age_s=age_s,
        last_error=None,
        heartbeat_age_s=None,
        frames_sent=0,
        send_failures=0,
    )


def test_the_demo_marks_the_bms_values_stale_with_their_age_while_the_failsafe_distrusts_them() -> None:
    for state in (FailsafeState.STALE, FailsafeState.SILENT):
        screen = render(_snapshot(state, 12.34), {}, None, "silent")
        cells_line = next(line for line in screen.splitlines() if "cells (16)" in line)
        pack_line = next(line for line in screen.splitlines() if " SOC " in line and " V " in line)
        assert "[STALE, 12.3 s old]" in cells_line, screen
        assert "[STALE, 12.3 s old]" in pack_line, screen

    fresh = render(_snapshot(FailsafeState.NORMAL, 0.4), {}, None, "silent")
    assert "STALE" not in fresh
