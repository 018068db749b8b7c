"""Readings for the limits-engine tests, built directly from the model's dataclasses.

The reference pack is the one of issue 4: 16S LiFePO4, OVP 3.65 / OVPR 3.40, UVP 2.80 / UVPR 3.00, charge window
0…45 °C (recoveries 5 / 40), discharge window −20…60 °C (recoveries −15 / 55), max charge 100 A, max discharge
150 A, MOS OTP 75 / OTPR 65 °C. The user caps are 200 A, so the ceilings are 0.9 × the BMS's max: 90 A / 135 A.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from gateway.limits import LimitsSettings
from gateway.model import Alarm, BatteryState, Chemistry, PackReading, ProtectionSettings

NOW_S = 1000.0
CELLS = 16
CHARGE_CEILING_A = 90.0  # 0.9 × 100 A (the user cap of 200 A is higher)
DISCHARGE_CEILING_A = 135.0  # 0.9 × 150 A

TUNING = LimitsSettings(max_charge_current_a=200.0, max_discharge_current_a=200.0)
"""User caps above the BMS's max: the ceilings are 0.9 × BMS max."""


def lifepo4_settings(**overrides: Any) -> ProtectionSettings:
    """The issue's 16S LiFePO4 protection settings."""
    base = ProtectionSettings(
        measured_at_s=NOW_S,
        cell_count=CELLS,
        capacity_ah=280.0,
        battery_type=Chemistry.LIFEPO4,
        cell_ovp_v=3.65,
        cell_ovpr_v=3.40,
        cell_uvp_v=2.80,
        cell_uvpr_v=3.00,
        max_charge_current_a=100.0,
        max_discharge_current_a=150.0,
        charge_utp_c=0.0,
        charge_utpr_c=5.0,
        charge_otp_c=45.0,
        charge_otpr_c=40.0,
        discharge_utp_c=-20.0,
        discharge_utpr_c=-15.0,
        discharge_otp_c=60.0,
        discharge_otpr_c=55.0,
        mos_otp_c=75.0,
        mos_otpr_c=65.0,
    )
    return replace(base, **overrides)


def li_ion_settings(**overrides: Any) -> ProtectionSettings:
    """14S Li-ion (NMC): OVP 4.20 / OVPR 4.10, UVP 3.00 / UVPR 3.20."""
    return lifepo4_settings(
        **{
            "cell_count": 14,
            "battery_type": Chemistry.LI_ION,
            "cell_ovp_v": 4.20,
            "cell_ovpr_v": 4.10,
            "cell_uvp_v": 3.00,
            "cell_uvpr_v": 3.20,
            **overrides,
        }
    )


def lto_settings(**overrides: Any) -> ProtectionSettings:
    """20S LTO: OVP 2.80 / OVPR 2.70, UVP 1.80 / UVPR 2.00."""
    return lifepo4_settings(
        **{
            "cell_count": 20,
            "battery_type": Chemistry.LTO,
            "cell_ovp_v": 2.80,
            "cell_ovpr_v": 2.70,
            "cell_uvp_v": 1.80,
            "cell_uvpr_v": 2.00,
            **overrides,
        }
    )


def cells_at(volts: float, n: int = CELLS, **specific: float) -> tuple[float, ...]:
    """``n`` cells at ``volts``; ``cell7=3.52`` sets cell 7 (1-based) apart."""
    cells = [volts] * n
    for key, value in specific.items():
        cells[int(key.removeprefix("cell")) - 1] = value
    return tuple(cells)


def reading(
    cells: Sequence[float] | float = 3.30,
    *,
    now_s: float = NOW_S,
    temperatures: Iterable[float | None] = (25.0, 25.0),
    mos_c: float | None = 30.0,
    current_a: float = 0.0,
    soc_pct: float = 50.0,
    alarms: Iterable[Alarm] = (),
    charge_mos_on: bool = True,
    discharge_mos_on: bool = True,
    settings: ProtectionSettings | None = None,
    age_s: float = 0.0,
) -> PackReading:
    """A pack reading measured ``age_s`` before ``now_s`` (default: just now)."""
    bms = settings if settings is not None else lifepo4_settings()
    if isinstance(cells, float | int):
        cells = cells_at(float(cells), bms.cell_count)
    cells = tuple(cells)
    measured = now_s - age_s
    state = BatteryState(
        measured_at_s=measured,
        cell_voltages_v=cells,
        pack_voltage_v=round(sum(cells), 3),
        current_a=current_a,
        soc_pct=soc_pct,
        mos_temperature_c=mos_c,
        battery_temperatures_c=tuple(temperatures),
        charge_mos_on=charge_mos_on,
        discharge_mos_on=discharge_mos_on,
        alarms=frozenset(alarms),
    )
    return PackReading("test:pack", state, replace(bms, measured_at_s=measured))
