"""The one alarm table: every bit of both JK protocols is named, blocks a side and reaches the inverter."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.alarms import (
    ALARM_TABLE,
    FAULT_GROUPS,
    PB_ALARM_BITS,
    WIRED_WARNING_BITS,
    Alarm,
    FaultGroup,
    Side,
    blocked_sides,
)
from gateway.model import Limits
from gateway.sim.scenarios import SCENARIOS
from gateway.values import published_values


def test_every_documented_bit_is_mapped() -> None:
    # Wired 0x8B: bits 0-13 documented, 14-15 reserved. JK-PB 0xA0: bits 0-23 documented.
    assert sorted(WIRED_WARNING_BITS) == list(range(14))
    assert sorted(PB_ALARM_BITS) == list(range(24))
    assert set(ALARM_TABLE) == set(Alarm)


@pytest.mark.parametrize(
    ("alarm", "side"),
    [
        (Alarm.CELL_OVER_VOLTAGE, Side.CHARGE),
        (Alarm.PACK_OVER_VOLTAGE, Side.CHARGE),
        (Alarm.BATTERY_UNDER_TEMPERATURE, Side.CHARGE),
        (Alarm.CHARGE_OVER_TEMPERATURE, Side.CHARGE),
        (Alarm.CELL_UNDER_VOLTAGE, Side.DISCHARGE),
        (Alarm.DISCHARGE_SHORT_CIRCUIT, Side.DISCHARGE),
        (Alarm.MOS_OVER_TEMPERATURE, Side.BOTH),
        (Alarm.CURRENT_SENSOR_FAULT, Side.BOTH),
        (Alarm.CHARGE_MOS_FAULT, Side.BOTH),
        (Alarm.PROTECTION_309_A, Side.BOTH),
        (Alarm.LOW_CAPACITY, Side.NONE),
        (Alarm.GPS_DISCONNECTED, Side.NONE),
    ],
)
def test_blocks(alarm: Alarm, side: Side) -> None:
    assert alarm.blocks == side


def test_internal_faults_block_both_and_are_system_faults() -> None:
    for alarm, spec in ALARM_TABLE.items():
        if spec.fault_group is FaultGroup.SYSTEM:
            assert spec.blocks in (Side.BOTH, Side.DISCHARGE), alarm


def test_blocked_sides_is_the_union() -> None:
    assert blocked_sides([]) == Side.NONE
    assert blocked_sides([Alarm.CELL_OVER_VOLTAGE, Alarm.CELL_UNDER_VOLTAGE]) == Side.BOTH


@pytest.mark.parametrize("alarm", list(Alarm))
def test_each_alarm_raises_its_own_flag_and_only_its_fault_group(alarm: Alarm) -> None:
    reading = SCENARIOS["normal-charge"].step(0.0).reading
    limits = Limits(0.0, 55.2, 50.0, 50.0, 46.4, True, True)
    quiet = replace(reading, state=replace(reading.state, alarms=frozenset()))
    loud = replace(reading, state=replace(reading.state, alarms=frozenset({alarm})))
    before = published_values(quiet, limits)
    after = published_values(loud, limits)
    changed = {name for name in after if after[name] != before[name] and isinstance(after[name], bool)}
    expected = {f"alarm_{alarm.value}"}
    if alarm.fault_group is not FaultGroup.NONE:
        expected.add(f"fault_{alarm.fault_group.value}")
    assert changed == expected
    assert len(FAULT_GROUPS) == len(FaultGroup) - 1
