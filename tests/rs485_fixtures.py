"""A pack reading, limits and sources for the RS485 tests (16S LiFePO4 of tests/limits_fixtures.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from limits_fixtures import NOW_S, lifepo4_settings

from gateway.clock import FakeClock
from gateway.model import BatteryState, DeviceInfo, Limits, PackReading
from gateway.rs485.server import Source, SourceState
from gateway.runtime import FailsafeState

CELLS_V = (
    3.301,
    3.302,
    3.303,
    3.304,
    3.305,
    3.306,
    3.307,
    3.308,
    3.309,
    3.310,
    3.311,
    3.312,
    3.313,
    3.314,
    3.315,
    3.290,
)
"""Cell 15 the highest (3.315 V), cell 16 the lowest (3.290 V); sum 52.900 V."""


def reading(**state: Any) -> PackReading:
    """The reference pack at NOW_S: 52.90 V, −12.3 A, SOC 55 %, 280 Ah, MOS 31.5 °C, sensors 24.0 / 25.5 °C."""
    base = BatteryState(
        measured_at_s=NOW_S,
        cell_voltages_v=CELLS_V,
        pack_voltage_v=52.90,
        current_a=-12.3,
        soc_pct=55.0,
        soh_pct=None,
        remaining_capacity_ah=154.0,
        cycle_count=42,
        mos_temperature_c=31.5,
        battery_temperatures_c=(24.0, 25.5),
        charge_mos_on=True,
        discharge_mos_on=True,
    )
    device = DeviceInfo(model="JK-PB2A16S20P", software_version="15.36", serial_number="JK0123456789ABCD")
    return PackReading("test:pack", replace(base, **state), lifepo4_settings(), device)


def limits(**overrides: Any) -> Limits:
    """CVL 55.20 V, CCL 90.0 A, DCL 135.0 A, DVL 49.60 V, both enabled, SOC as the BMS's."""
    base = Limits(
        computed_at_s=NOW_S,
        charge_voltage_limit_v=55.2,
        charge_current_limit_a=90.0,
        discharge_current_limit_a=135.0,
        discharge_voltage_limit_v=49.6,
        charge_enable=True,
        discharge_enable=True,
    )
    return replace(base, **overrides)


class FixedSource:
    """A source whose answer a test sets; the clock starts at the readings' time."""

    def __init__(self, *readings: PackReading, limits_: Limits | None = None) -> None:
        self.clock = FakeClock(NOW_S)
        self.readings: tuple[PackReading, ...] = readings or (reading(),)
        self.limits: Limits | None = limits_ or limits()
        self.state = FailsafeState.NORMAL

    def __call__(self) -> SourceState:
        return self.readings, self.limits, self.state

    @property
    def source(self) -> Source:
        return self
