"""Scenarios for the simulated JK BMS: what the pack reports, and how the BMS behaves, at each moment.

A scenario is a pure function of the time since the simulator started (s), so the same scenario replays
identically under a real or a fake clock. Every scenario simulates a 16S LiFePO4 pack of 280 Ah with plausible
JK settings (:func:`base_settings`).
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from gateway.model import Alarm, BatteryState, Chemistry, DeviceInfo, PackReading, ProtectionSettings

CELL_COUNT: Final = 16
CAPACITY_AH: Final = 280.0


class Behaviour(enum.StrEnum):
    ANSWER = "answer"
    SILENT = "silent"
    BAD_CHECKSUM = "bad_checksum"
    TRUNCATED = "truncated"
    GARBAGE_FIRST = "garbage_first"
    """Noise bytes, then a good frame: the gateway must skip to the start marker."""


@dataclass(frozen=True, slots=True)
class Step:
    """What the simulated BMS does when asked at one moment."""

    reading: PackReading
    behaviour: Behaviour = Behaviour.ANSWER


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    step: Callable[[float], Step]
    """Time since start, s → what to answer."""


def base_settings() -> ProtectionSettings:
    """Plausible settings of a 16S 280 Ah LiFePO4 pack on a JK BMS."""
    return ProtectionSettings(
        measured_at_s=0.0,
        cell_count=CELL_COUNT,
        capacity_ah=CAPACITY_AH,
        battery_type=Chemistry.LIFEPO4,
        cell_ovp_v=3.65,
        cell_ovpr_v=3.55,
        cell_uvp_v=2.7,
        cell_uvpr_v=2.9,
        max_charge_current_a=150.0,
        max_discharge_current_a=200.0,
        pack_ovp_v=58.4,
        pack_uvp_v=43.2,
        cell_ovp_delay_s=5.0,
        cell_uvp_delay_s=5.0,
        cell_delta_protect_v=0.3,
        charge_ocp_delay_s=30.0,
        discharge_ocp_delay_s=300.0,
        balance_start_v=3.4,
        balance_trigger_v=0.005,
        balancer_enabled=True,
        charge_otp_c=55.0,
        discharge_otp_c=65.0,
        charge_utp_c=0.0,
        charge_utpr_c=5.0,
        discharge_utp_c=-20.0,
        discharge_utpr_c=-10.0,
        mos_otp_c=75.0,
        mos_otpr_c=65.0,
        box_otp_c=70.0,
        box_otpr_c=60.0,
        charge_mos_switch=True,
        discharge_mos_switch=True,
    )


_DEVICE: Final = DeviceInfo(model="bms-gateway JK simulator", software_version="SIM_S11.26", manufacture_date="2401")

# A fixed, small spread between cells so the pack looks real and the lowest/highest cells are stable.
_CELL_OFFSETS_V: Final = tuple(round(0.004 * math.sin(1.7 * i), 3) for i in range(CELL_COUNT))


# Rest voltage of a LiFePO4 cell against SOC (%, V): steep at both ends, flat in the middle.
_LFP_REST_CURVE: Final = (
    (0.0, 2.90), (5.0, 3.10), (10.0, 3.20), (20.0, 3.25), (40.0, 3.28),
    (60.0, 3.30), (80.0, 3.32), (90.0, 3.34), (95.0, 3.36), (100.0, 3.45),
)  # fmt: skip


def _lfp_rest_voltage(soc_pct: float) -> float:
    """Rest voltage of one cell at ``soc_pct``, V, interpolated on :data:`_LFP_REST_CURVE`."""
    soc = min(max(soc_pct, 0.0), 100.0)
    for (soc_lo, v_lo), (soc_hi, v_hi) in itertools.pairwise(_LFP_REST_CURVE):
        if soc <= soc_hi:
            return v_lo + (v_hi - v_lo) * (soc - soc_lo) / (soc_hi - soc_lo)
    return _LFP_REST_CURVE[-1][1]


def _pack(
    t_s: float,
    *,
    soc_pct: float,
    current_a: float,
    temperature_c: float = 23.0,
    cell_override: Mapping[int, float] | None = None,
    alarms: frozenset[Alarm] = frozenset(),
    charge_mos_on: bool = True,
    discharge_mos_on: bool = True,
) -> PackReading:
    internal_resistance_ohm = 0.0004
    base = _lfp_rest_voltage(soc_pct) + current_a * internal_resistance_ohm
    cells = [round(base + offset, 3) for offset in _CELL_OFFSETS_V]
    for index, volts in (cell_override or {}).items():
        cells[index] = round(volts, 3)
    settings = base_settings()
    balancing = max(cells) >= (settings.balance_start_v or 0) and max(cells) - min(cells) >= 0.005
    state = BatteryState(
        measured_at_s=0.0,
        cell_voltages_v=tuple(cells),
        pack_voltage_v=round(sum(cells), 2),
        current_a=round(current_a, 2),
        soc_pct=round(soc_pct),
        cycle_count=42,
        cycle_capacity_ah=11760.0,
        mos_temperature_c=round(temperature_c + 6 + 0.02 * abs(current_a)),
        battery_temperatures_c=(round(temperature_c), round(temperature_c - 1)),
        charge_mos_on=charge_mos_on,
        discharge_mos_on=discharge_mos_on,
        balancer_on=balancing,
        alarms=alarms,
        runtime_s=float(3_600_000 + int(t_s) // 60 * 60),
    )
    return PackReading(pack_id="sim", state=state, settings=settings, device=_DEVICE)


def _normal_charge(t_s: float) -> Step:
    current = 40.0 + 5.0 * math.sin(t_s / 7)
    soc = 40.0 + (t_s * 40.0 / 3600 * 100 / CAPACITY_AH) % 50  # 40 A into 280 Ah, wrapping 40 → 90 %
    return Step(_pack(t_s, soc_pct=soc, current_a=current))


_OVP_CELL: Final = 6  # cell 7
_OVP_PERIOD_S: Final = 90.0


def _cell_over_voltage(t_s: float) -> Step:
    # Cell 7 rises 3.40 → 3.75 V over 60 s, then falls back over 30 s; the BMS trips at OVP and stays
    # tripped until the cell is below OVPR, as a real JK does.
    settings = base_settings()
    phase = t_s % _OVP_PERIOD_S
    rising = phase < 60
    volts = 3.40 + 0.35 * phase / 60 if rising else 3.75 - 0.35 * (phase - 60) / 30
    tripped = volts >= settings.cell_ovp_v if rising else volts >= settings.cell_ovpr_v
    return Step(
        _pack(
            t_s,
            soc_pct=97.0,
            current_a=0.0 if tripped else 30.0,
            cell_override={_OVP_CELL: volts},
            alarms=frozenset({Alarm.CELL_OVER_VOLTAGE}) if tripped else frozenset(),
            charge_mos_on=not tripped,
        )
    )


_COLD_PERIOD_S: Final = 180.0


def _cold(t_s: float) -> Step:
    # The pack warms from −8 °C to +10 °C every 180 s; charging is blocked from below UTP until UTPR.
    settings = base_settings()
    temperature = -8.0 + 18.0 * (t_s % _COLD_PERIOD_S) / _COLD_PERIOD_S
    blocked = temperature < (settings.charge_utpr_c or 0.0)
    return Step(
        _pack(
            t_s,
            soc_pct=55.0,
            current_a=-12.0 if blocked else 25.0,
            temperature_c=temperature,
            alarms=frozenset({Alarm.BATTERY_UNDER_TEMPERATURE}) if blocked else frozenset(),
            charge_mos_on=not blocked,
        )
    )


SILENT_AFTER_S: Final = 20.0
SILENT_FOR_S: Final = 25.0


def _silent(t_s: float) -> Step:
    # Answers for 20 s, then says nothing for 25 s, then answers again; repeats.
    phase = t_s % (SILENT_AFTER_S + SILENT_FOR_S)
    step = _normal_charge(t_s)
    return replace(step, behaviour=Behaviour.SILENT) if phase >= SILENT_AFTER_S else step


_CORRUPTIONS: Final = (Behaviour.BAD_CHECKSUM, Behaviour.TRUNCATED, Behaviour.GARBAGE_FIRST, Behaviour.ANSWER)


def _corrupt(t_s: float) -> Step:
    # Each second brings the next fault in turn: bad checksum, truncated, noise before a good frame, good.
    step = _normal_charge(t_s)
    return replace(step, behaviour=_CORRUPTIONS[int(t_s) % len(_CORRUPTIONS)])


SCENARIOS: Final[Mapping[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario("normal-charge", "16S LiFePO4 charging at about 40 A, SOC rising", _normal_charge),
        Scenario(
            "cell-ovp",
            "cell 7 rises past OVP 3.65 V; the BMS opens its charge MOS until OVPR 3.55 V (90 s cycle)",
            _cell_over_voltage,
        ),
        Scenario(
            "cold",
            "battery warms from −8 °C to +10 °C; charging blocked below UTP 0 °C until UTPR 5 °C (180 s cycle)",
            _cold,
        ),
        Scenario("silent", "answers 20 s, then falls silent for 25 s, then returns (45 s cycle)", _silent),
        Scenario(
            "corrupt",
            "replies rotate through bad checksum, truncated, noise before the frame, and good",
            _corrupt,
        ),
    )
}
