"""The limiters: each one a small pure function giving the current it allows and why.

A limiter returns a :class:`Candidate` (amperes, its name, one human line); the engine takes the lowest.
Limiters with hysteresis take their latch in and give it back (``latch``), so that state stays explicit.
Missing or non-finite inputs make a limiter give 0 (fail closed), never "unlimited".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.chemistry import PRESETS
from gateway.limits.thresholds import TemperatureWindow, Thresholds
from gateway.model import BatteryState, Side

CHARGE_LOW_BAND: tuple[tuple[float, float], ...] = ((0.0, 0.05), (5.0, 0.2), (10.0, 0.5), (15.0, 1.0))
"""Charge current fraction by °C above the cold edge of the window: LiFePO4 takes little charge when cold."""
DISCHARGE_LOW_BAND: tuple[tuple[float, float], ...] = ((0.0, 0.25), (5.0, 0.5), (10.0, 1.0))
"""Discharge current fraction by °C above the cold edge."""
HIGH_BAND: tuple[tuple[float, float], ...] = ((0.0, 0.25), (8.0, 1.0))
"""Current fraction by °C below the hot edge of a window (both sides)."""
RECOVERY_GAP_C = 2.0
"""A temperature latch releases at least this far inside the blocking edge, °C."""
MOS_ZERO_BELOW_OTP_C = 3.0
"""MOS temperature: 0 A this far below MOS OTP, °C."""
MOS_FULL_BELOW_OTPR_C = 5.0
"""MOS temperature: full current up to this far below MOS OTPR, °C."""
DEEP_DISCHARGE_RELEASE_GAP_V = 0.10
"""A deep-discharge latch releases only once the lowest cell is this far above the threshold that set it, V: a cell
hovering at 2.5 V (noise, the I × R of the recovery current) must not switch the full current on and off."""
DEEP_DISCHARGE = "deep_discharge"
"""The deep-discharge limiter's name, and its latch key in the engine's memory."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """What one limiter allows."""

    current_a: float
    """Allowed current, A, ≥ 0."""
    limiter: str
    reason: str
    latch: str | None = None
    """For limiters with hysteresis: which latch holds after this evaluation (``"cut"``, ``"cold"``,
    ``"hot"``), or None."""


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear through ``points`` (ascending x), clamped to the end values."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def ceiling(side: Side, ceiling_a: float, origin: str) -> Candidate:
    return Candidate(ceiling_a, "ceiling", f"{origin}: {ceiling_a:.1f} A")


def cell_voltage(side: Side, state: BatteryState, t: Thresholds, ceiling_a: float, latch: str | None) -> Candidate:
    """Charge: taper as the highest cell rises from the knee to the cut-off; 0 from the cut-off until the
    highest cell is below the release (OVPR). Discharge mirrors this with the lowest cell."""
    cells = state.cell_voltages_v
    if not cells or not all(math.isfinite(v) for v in cells):
        return Candidate(0.0, "cell_voltage", "no valid cell voltages", latch)
    if side is Side.CHARGE:
        volts = max(cells)
        number = cells.index(volts) + 1
        if volts >= t.charge_cutoff_v or (latch and volts >= t.charge_release_v):
            return Candidate(
                0.0,
                "cell_voltage",
                f"cell {number} at {volts:.3f} V: charging stopped at {t.charge_cutoff_v:.3f} V, "
                f"resumes below {t.charge_release_v:.3f} V",
                "cut",
            )
        if volts <= t.charge_knee_v:
            return Candidate(ceiling_a, "cell_voltage", f"highest cell {number} at {volts:.3f} V")
        fraction = (t.charge_cutoff_v - volts) / (t.charge_cutoff_v - t.charge_knee_v)
        return Candidate(
            ceiling_a * fraction,
            "cell_voltage",
            f"cell {number} at {volts:.3f} V, taper to 0 A at {t.charge_cutoff_v:.3f} V",
        )
    volts = min(cells)
    number = cells.index(volts) + 1
    if volts <= t.discharge_cutoff_v or (latch and volts <= t.discharge_release_v):
        return Candidate(
            0.0,
            "cell_voltage",
            f"cell {number} at {volts:.3f} V: discharging stopped at {t.discharge_cutoff_v:.3f} V, "
            f"resumes above {t.discharge_release_v:.3f} V",
            "cut",
        )
    if volts >= t.discharge_knee_v:
        return Candidate(ceiling_a, "cell_voltage", f"lowest cell {number} at {volts:.3f} V")
    fraction = (volts - t.discharge_cutoff_v) / (t.discharge_knee_v - t.discharge_cutoff_v)
    return Candidate(
        ceiling_a * fraction,
        "cell_voltage",
        f"cell {number} at {volts:.3f} V, taper to 0 A at {t.discharge_cutoff_v:.3f} V",
    )


def battery_temperature(
    side: Side, state: BatteryState, t: Thresholds, ceiling_a: float, margin_c: float, latch: str | None
) -> Candidate:
    """0 outside the BMS's window (``margin_c`` inside it), derated in bands near both edges; once at 0 it
    stays there until the temperature is back past the BMS's recovery value (latch ``"cold"``/``"hot"``)."""
    window: TemperatureWindow = t.charge_window if side is Side.CHARGE else t.discharge_window
    word = "charge" if side is Side.CHARGE else "discharge"
    temperatures = _finite(state.battery_temperatures_c)
    if not temperatures:
        # Without a cell temperature the window cannot be enforced: LiFePO4 charged below 0 °C is damaged.
        return Candidate(0.0, "temperature", "no battery temperature sensor reports", latch)
    coldest, hottest = min(temperatures), max(temperatures)
    low_edge, high_edge = window.low_c + margin_c, window.high_c - margin_c
    if high_edge - low_edge < 2 * RECOVERY_GAP_C:
        return Candidate(0.0, "temperature", f"{word} window {window.low_c:g}…{window.high_c:g} °C too narrow")
    middle = (low_edge + high_edge) / 2
    low_release = min(max(window.low_recovery_c, low_edge + RECOVERY_GAP_C), middle)
    high_release = max(min(window.high_recovery_c, high_edge - RECOVERY_GAP_C), middle)
    if coldest <= low_edge or (latch == "cold" and coldest < low_release):
        return Candidate(
            0.0,
            "temperature",
            f"battery at {coldest:g} °C: no {word} at or below {low_edge:g} °C, resumes at {low_release:g} °C",
            "cold",
        )
    if hottest >= high_edge or (latch == "hot" and hottest > high_release):
        return Candidate(
            0.0,
            "temperature",
            f"battery at {hottest:g} °C: no {word} at or above {high_edge:g} °C, resumes at {high_release:g} °C",
            "hot",
        )
    low_band = CHARGE_LOW_BAND if side is Side.CHARGE else DISCHARGE_LOW_BAND
    low_fraction = interpolate(low_band, coldest - low_edge)
    high_fraction = interpolate(HIGH_BAND, high_edge - hottest)
    if min(low_fraction, high_fraction) >= 1.0:
        return Candidate(ceiling_a, "temperature", f"battery {coldest:g}…{hottest:g} °C")
    if low_fraction <= high_fraction:
        reason = f"battery at {coldest:g} °C, {word} derated to {low_fraction:.0%} near {window.low_c:g} °C"
    else:
        reason = f"battery at {hottest:g} °C, {word} derated to {high_fraction:.0%} near {window.high_c:g} °C"
    return Candidate(ceiling_a * min(low_fraction, high_fraction), "temperature", reason)


def mos_temperature(state: BatteryState, t: Thresholds, ceiling_a: float, latch: str | None) -> Candidate:
    """Both sides: full current up to MOS OTPR − 5 °C, linear to 0 at MOS OTP − 3 °C; after that 0 until the
    MOS has cooled to OTPR."""
    mos = state.mos_temperature_c
    if mos is None:
        return Candidate(ceiling_a, "mos_temperature", "MOS temperature not carried by this BMS")
    if not math.isfinite(mos):
        return Candidate(0.0, "mos_temperature", "MOS temperature reading invalid", latch)
    zero_at = t.mos_otp_c - MOS_ZERO_BELOW_OTP_C
    full_at = min(t.mos_otpr_c - MOS_FULL_BELOW_OTPR_C, zero_at - 5.0)
    release = min(t.mos_otpr_c, zero_at - RECOVERY_GAP_C)
    if mos >= zero_at or (latch and mos > release):
        return Candidate(
            0.0, "mos_temperature", f"MOS at {mos:g} °C: 0 A from {zero_at:g} °C until {release:g} °C", "hot"
        )
    if mos <= full_at:
        return Candidate(ceiling_a, "mos_temperature", f"MOS at {mos:g} °C")
    fraction = (zero_at - mos) / (zero_at - full_at)
    return Candidate(ceiling_a * fraction, "mos_temperature", f"MOS at {mos:g} °C, derated to 0 A at {zero_at:g} °C")


def bms_blocks(side: Side, state: BatteryState) -> Candidate | None:
    """0 when the BMS's MOS of this side is off or an alarm blocking this side is active; else None."""
    word = "charge" if side is Side.CHARGE else "discharge"
    mos_on = state.charge_mos_on if side is Side.CHARGE else state.discharge_mos_on
    blocking = sorted(a.value for a in state.alarms if a.blocks & side)
    if blocking:
        return Candidate(0.0, "alarm", f"BMS alarm: {', '.join(blocking)}")
    if not mos_on:
        return Candidate(0.0, "mos", f"BMS {word} MOS is off")
    return None


def deep_discharge(
    side: Side,
    state: BatteryState,
    t: Thresholds,
    ceiling_a: float,
    recovery_current_c: float,
    capacity_ah: float | None,
    latch: str | None,
) -> Candidate:
    """A deeply discharged cell (audit M4): at or below the chemistry's recovery threshold (LiFePO4 2.5 V) charge at
    most ``recovery_current_c`` × ``capacity_ah`` (0 A without a capacity), at or below its no-charge threshold
    (2.0 V) 0 A; each holds (latch ``"recovery"``, ``"no_charge"``) until the lowest cell is
    :data:`DEEP_DISCHARGE_RELEASE_GAP_V` above it. Discharge is 0 A while either holds (the cell-voltage cut-off,
    at least UVP + 0.01 V above the chemistry's absolute minimum, gives that already; this does not depend on it).
    """
    cells = state.cell_voltages_v
    if not cells or not all(math.isfinite(v) for v in cells):
        return Candidate(0.0, DEEP_DISCHARGE, "no valid cell voltages", latch)
    preset = PRESETS[t.chemistry]
    no_charge_v, recovery_v = preset.no_charge_below_cell_v, preset.recovery_charge_below_cell_v
    volts = min(cells)
    number = cells.index(volts) + 1
    if volts <= no_charge_v or (latch == "no_charge" and volts < no_charge_v + DEEP_DISCHARGE_RELEASE_GAP_V):
        held, threshold_v = "no_charge", no_charge_v
    elif volts <= recovery_v or (latch is not None and volts < recovery_v + DEEP_DISCHARGE_RELEASE_GAP_V):
        held, threshold_v = "recovery", recovery_v
    else:
        return Candidate(ceiling_a, DEEP_DISCHARGE, f"lowest cell {number} at {volts:.3f} V")
    until = f"until it reaches {threshold_v + DEEP_DISCHARGE_RELEASE_GAP_V:.3f} V"
    cell = f"cell {number} at {volts:.3f} V, deeply discharged ({t.chemistry.value}: at or below {threshold_v:.3f} V)"
    if side is Side.DISCHARGE:
        return Candidate(0.0, DEEP_DISCHARGE, f"{cell}: no discharging {until}", held)
    if held == "no_charge":
        return Candidate(0.0, DEEP_DISCHARGE, f"{cell}: no charging {until}, check the cell", held)
    if capacity_ah is None or not math.isfinite(capacity_ah) or capacity_ah <= 0:
        return Candidate(0.0, DEEP_DISCHARGE, f"{cell}: no recovery current without the pack's capacity", held)
    recovery_a = min(ceiling_a, recovery_current_c * capacity_ah)
    return Candidate(
        recovery_a,
        DEEP_DISCHARGE,
        f"{cell}: recovery charge {recovery_a:.1f} A ({recovery_current_c:g} C of {capacity_ah:g} Ah) {until}",
        held,
    )


SOC_TAPER = "soc_taper"


def soc_taper(state: BatteryState, ceiling_a: float, steps: Sequence[tuple[float, float]] | None) -> Candidate:
    """Charge current near full by the BMS's SOC (``limits.soc_ccl_taper``): from each step's SOC on, at most its
    fraction of the ceiling (the highest step reached counts). Steps, not a line: "from 95 % half, from 98 % a
    fifth" is what a user reads in the table, and the current ramp smooths the step up when the SOC falls back."""
    soc = state.soc_pct
    reached = [(soc_pct, fraction) for soc_pct, fraction in steps or () if soc >= soc_pct]
    if not reached:
        return Candidate(ceiling_a, SOC_TAPER, f"SOC {soc:g} %")
    soc_pct, fraction = reached[-1]
    return Candidate(
        ceiling_a * fraction, SOC_TAPER, f"SOC {soc:g} % from {soc_pct:g} %: {fraction:g} × {ceiling_a:.1f} A"
    )
