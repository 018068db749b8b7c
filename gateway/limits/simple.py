"""Simple, safe limits (until the full limits engine lands).

* CCL = min(user cap, BMS max charge current); DCL likewise.
* CVL = cells × (cell OVP − 0.05 V); DVL = cells × (cell UVP + 0.05 V).
* A side gets 0 A and its enable flag cleared when its MOS is off or an alarm that blocks it is active.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.model import LimitReason, Limits, PackReading, Side, blocked_sides

CELL_MARGIN_V: Final = 0.05
"""Keep CVL this far below OVP per cell, and DVL this far above UVP, V."""


@dataclass(frozen=True, slots=True)
class LimitCaps:
    """The user's caps on top of the BMS's own settings."""

    max_charge_current_a: float
    """A."""
    max_discharge_current_a: float
    """A."""


def simple_limits(reading: PackReading, caps: LimitCaps) -> Limits:
    """Limits for one plausible, fresh reading."""
    state, settings = reading.state, reading.settings
    cells = settings.cell_count or state.cell_count
    blocked = blocked_sides(state.alarms)
    reasons: dict[str, LimitReason] = {}

    def side_limit(side: Side, mos_on: bool, bms_max_a: float, cap_a: float, key: str) -> float:
        if not mos_on:
            reasons[key] = LimitReason("mos", f"BMS {str(side.name).lower()} MOS is off")
            return 0.0
        if blocked & side:
            names = ", ".join(sorted(a.value for a in state.alarms if a.blocks & side))
            reasons[key] = LimitReason("alarm", f"BMS alarm: {names}")
            return 0.0
        if cap_a <= bms_max_a:
            reasons[key] = LimitReason("user_cap", f"user cap {cap_a:g} A (BMS allows {bms_max_a:g} A)")
            return cap_a
        reasons[key] = LimitReason("bms_max", f"BMS max {bms_max_a:g} A")
        return bms_max_a

    ccl = side_limit(
        Side.CHARGE,
        state.charge_mos_on,
        settings.max_charge_current_a,
        caps.max_charge_current_a,
        "charge_current_limit_a",
    )
    dcl = side_limit(
        Side.DISCHARGE,
        state.discharge_mos_on,
        settings.max_discharge_current_a,
        caps.max_discharge_current_a,
        "discharge_current_limit_a",
    )
    cvl = round(cells * (settings.cell_ovp_v - CELL_MARGIN_V), 2)
    dvl = round(cells * (settings.cell_uvp_v + CELL_MARGIN_V), 2)
    reasons["charge_voltage_limit_v"] = LimitReason(
        "cell_ovp", f"{cells} × (OVP {settings.cell_ovp_v:.3f} − {CELL_MARGIN_V} V)"
    )
    reasons["discharge_voltage_limit_v"] = LimitReason(
        "cell_uvp", f"{cells} × (UVP {settings.cell_uvp_v:.3f} + {CELL_MARGIN_V} V)"
    )
    return Limits(
        computed_at_s=state.measured_at_s,
        charge_voltage_limit_v=cvl,
        charge_current_limit_a=ccl,
        discharge_current_limit_a=dcl,
        discharge_voltage_limit_v=dvl,
        charge_enable=ccl > 0,
        discharge_enable=dcl > 0,
        reasons=reasons,
    )


def failsafe_limits(last: Limits | None, now_s: float, why: str) -> Limits:
    """Both currents 0 and both enables cleared; voltage limits kept from ``last`` (they derive from settings)."""
    reason = LimitReason("failsafe", why)
    return Limits(
        computed_at_s=now_s,
        charge_voltage_limit_v=last.charge_voltage_limit_v if last else 0.0,
        charge_current_limit_a=0.0,
        discharge_current_limit_a=0.0,
        discharge_voltage_limit_v=last.discharge_voltage_limit_v if last else 0.0,
        charge_enable=False,
        discharge_enable=False,
        reasons={"charge_current_limit_a": reason, "discharge_current_limit_a": reason},
    )
