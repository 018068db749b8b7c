"""The simulated BMS's protections, as a JK BMS acts on its settings: what the gateway exists to keep it from.

Pure: :func:`protect` takes the previous :class:`Protection` and what the BMS measures now, and returns the new
state and the trips that happened. Every protection latches until its recovery condition:

* cell OVP at once when the highest cell reaches OVP, until it is below OVPR; cell UVP the mirror (stricter
  than a real JK, which waits its OVP/UVP delay);
* charge and discharge over-current after the BMS's delay (``charge_ocp_delay_s``), for its recovery time;
* charge OTP/UTP and discharge OTP/UTP while the battery temperature is beyond the limit, until it is back past
  the recovery value (the setting, else 5 °C inside the limit);
* MOS OTP likewise, on the MOS temperature; it opens both MOS.

A **trip** is a protection that engages while current flows in the direction it stops (more than
:data:`TRIP_CURRENT_A`; over-current and cell OVP/UVP always are): the BMS had to cut what the inverter was
doing. A temperature protection that engages at rest (a cold morning before any charging) is a state, not a
trip; charging through such a window is measured apart (the charge-cycle summary's ``charge_outside_window_ah``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from gateway.chemistry import PRESETS
from gateway.model import Alarm, Chemistry, ProtectionSettings
from gateway.sim.scenarios import base_settings

TRIP_KINDS: Final = (
    "cell_ovp",
    "cell_uvp",
    "charge_ocp",
    "discharge_ocp",
    "charge_otp",
    "charge_utp",
    "discharge_otp",
    "discharge_utp",
    "mos_otp",
)
"""Every kind of trip, as the summary names them."""
TRIP_CURRENT_A: Final = 0.5
"""A temperature protection engaging with more current than this flowing in its direction is a trip, A."""
DEFAULT_RECOVERY_C: Final = 5.0
"""Recovery distance inside a temperature limit when the BMS states no recovery value, °C."""
DEFAULT_OCP_RECOVERY_S: Final = 60.0
"""Over-current recovery time when the BMS states none, s."""


_CELL_THRESHOLDS: Final = {
    # chemistry: (OVP, OVPR, UVP, UVPR, balance start), V per cell
    Chemistry.LIFEPO4: (3.65, 3.40, 2.80, 3.00, 3.40),
    # unverified: plausible JK settings for these chemistries (NMC 4.20 V full, LTO 2.85 V), not a vendor preset.
    Chemistry.LI_ION: (4.20, 4.05, 3.00, 3.20, 4.00),
    Chemistry.LTO: (2.85, 2.70, 1.80, 2.00, 2.50),
}


def simulated_bms_settings(
    chemistry: Chemistry = Chemistry.LIFEPO4, cells: int = 16, capacity_ah: float = 100.0
) -> ProtectionSettings:
    """The settings of the simulated JK BMS of one pack (the charge-cycle scenario's defaults).

    Every chemistry: max charge 100 A after a 30 s over-current delay, max discharge 150 A (300 s delay), 60 s
    over-current recovery, balancer at 2 A from 5 mV, MOS OTP 75 °C / OTPR 65 °C. Per chemistry: the cell
    thresholds of :data:`_CELL_THRESHOLDS` (LiFePO4 OVP 3.65 / OVPR 3.40, UVP 2.80 / UVPR 3.00, balancing from
    3.40 V) and the temperature windows of :data:`gateway.chemistry.PRESETS` (LiFePO4: charge 0–45 °C, recovery
    5 / 40 °C; discharge −20–60 °C, recovery −15 / 55 °C).
    """
    ovp, ovpr, uvp, uvpr, balance_start = _CELL_THRESHOLDS[chemistry]
    preset = PRESETS[chemistry]
    return replace(
        base_settings(),
        cell_count=cells,
        capacity_ah=capacity_ah,
        battery_type=chemistry,
        cell_ovp_v=ovp,
        cell_ovpr_v=ovpr,
        cell_uvp_v=uvp,
        cell_uvpr_v=uvpr,
        pack_ovp_v=round(cells * ovp, 2),
        pack_uvp_v=round(cells * uvp, 2),
        max_charge_current_a=100.0,
        max_discharge_current_a=150.0,
        charge_ocp_delay_s=30.0,
        discharge_ocp_delay_s=300.0,
        charge_ocp_recovery_s=60.0,
        discharge_ocp_recovery_s=60.0,
        balance_start_v=balance_start,
        balance_trigger_v=0.005,
        max_balance_current_a=2.0,
        charge_utp_c=preset.charge_window_c[0],
        charge_otp_c=preset.charge_window_c[1],
        charge_utpr_c=preset.charge_recovery_c[0],
        charge_otpr_c=preset.charge_recovery_c[1],
        discharge_utp_c=preset.discharge_window_c[0],
        discharge_otp_c=preset.discharge_window_c[1],
        discharge_utpr_c=preset.discharge_recovery_c[0],
        discharge_otpr_c=preset.discharge_recovery_c[1],
        mos_otp_c=75.0,
        mos_otpr_c=65.0,
    )


@dataclass(frozen=True, slots=True)
class BmsTrip:
    """The BMS opened a MOS while current flowed through it."""

    time_s: float
    """Simulated time, s."""
    kind: str
    """One of :data:`TRIP_KINDS`."""
    detail: str
    cell: int | None = None
    """The cell (1-based) for cell OVP/UVP; None otherwise."""


@dataclass(frozen=True, slots=True)
class Protection:
    """The simulated BMS's protection state."""

    ovp: bool = False
    """Cell OVP tripped: charge MOS open until the highest cell is below OVPR."""
    uvp: bool = False
    """Cell UVP tripped: discharge MOS open until the lowest cell is above UVPR."""
    charge_ocp_until_s: float = -math.inf
    discharge_ocp_until_s: float = -math.inf
    charge_over_since_s: float | None = None
    """Since when the charge current exceeds the BMS's max charge current, s."""
    discharge_over_since_s: float | None = None
    charge_temperature: str | None = None
    """``charge_otp`` or ``charge_utp`` while that protection holds the charge MOS open."""
    discharge_temperature: str | None = None
    """``discharge_otp`` or ``discharge_utp`` while that protection holds the discharge MOS open."""
    mos_hot: bool = False
    """MOS OTP holds both MOS open."""

    def charge_off(self, now_s: float) -> bool:
        return self.ovp or now_s < self.charge_ocp_until_s or self.charge_temperature is not None or self.mos_hot

    def discharge_off(self, now_s: float) -> bool:
        return self.uvp or now_s < self.discharge_ocp_until_s or self.discharge_temperature is not None or self.mos_hot

    def alarms(self, now_s: float) -> frozenset[Alarm]:
        """What the BMS reports (the JK wired alarm bits of each protection)."""
        temperatures = {self.charge_temperature, self.discharge_temperature}
        active = {
            Alarm.CELL_OVER_VOLTAGE: self.ovp,
            Alarm.CELL_UNDER_VOLTAGE: self.uvp,
            Alarm.CHARGE_OVER_CURRENT: now_s < self.charge_ocp_until_s,
            Alarm.DISCHARGE_OVER_CURRENT: now_s < self.discharge_ocp_until_s,
            Alarm.BATTERY_OVER_TEMPERATURE: bool(temperatures & {"charge_otp", "discharge_otp"}),
            # The JK wired protocol has one under-temperature bit (the charge side's): both sides report it.
            Alarm.BATTERY_UNDER_TEMPERATURE: bool(temperatures & {"charge_utp", "discharge_utp"}),
            Alarm.MOS_OVER_TEMPERATURE: self.mos_hot,
        }
        return frozenset(alarm for alarm, on in active.items() if on)


def _temperature_side(
    held: str | None,
    temperature_c: float | None,
    side: str,
    limits: tuple[float | None, float | None, float | None, float | None],
) -> str | None:
    """The temperature protection holding one side after measuring ``temperature_c``: ``<side>_otp``,
    ``<side>_utp`` or None. ``limits``: (OTP, OTPR, UTP, UTPR), °C, each None when the BMS has none."""
    otp, otpr, utp, utpr = limits
    if temperature_c is None:
        return held
    if held == f"{side}_otp":
        recovery = otpr if otpr is not None else (otp or 0.0) - DEFAULT_RECOVERY_C
        return held if temperature_c > recovery else None
    if held == f"{side}_utp":
        recovery = utpr if utpr is not None else (utp or 0.0) + DEFAULT_RECOVERY_C
        return held if temperature_c < recovery else None
    if otp is not None and temperature_c >= otp:
        return f"{side}_otp"
    if utp is not None and temperature_c <= utp:
        return f"{side}_utp"
    return None


def protect(
    previous: Protection,
    cells_v: Sequence[float],
    current_a: float,
    now_s: float,
    bms: ProtectionSettings,
    *,
    battery_temperature_c: float | None = None,
    mos_temperature_c: float | None = None,
) -> tuple[Protection, tuple[BmsTrip, ...]]:
    """The BMS's protection after measuring ``cells_v`` (V), ``current_a`` (A, + charging) and the temperatures
    (°C; None: not simulated) at ``now_s`` (s). See the module docstring for the rules."""
    trips: list[BmsTrip] = []
    highest, lowest = max(cells_v), min(cells_v)
    ovp, uvp = previous.ovp, previous.uvp
    if not ovp and highest >= bms.cell_ovp_v:
        ovp = True
        cell = cells_v.index(highest) + 1
        trips.append(BmsTrip(now_s, "cell_ovp", f"cell {cell} at {highest:.3f} V ≥ OVP {bms.cell_ovp_v:.3f} V", cell))
    elif ovp and highest < bms.cell_ovpr_v:
        ovp = False
    if not uvp and lowest <= bms.cell_uvp_v:
        uvp = True
        cell = cells_v.index(lowest) + 1
        trips.append(BmsTrip(now_s, "cell_uvp", f"cell {cell} at {lowest:.3f} V ≤ UVP {bms.cell_uvp_v:.3f} V", cell))
    elif uvp and lowest > bms.cell_uvpr_v:
        uvp = False

    def over_current(
        side: str, amps: float, limit_a: float, delay_s: float | None, recovery_s: float | None, since: float | None
    ) -> tuple[float | None, float | None]:
        """(over since, tripped until) for one side."""
        if amps <= limit_a:
            return None, None
        since = now_s if since is None else since
        if now_s - since >= (delay_s or 0.0):
            trips.append(BmsTrip(now_s, f"{side}_ocp", f"{amps:.1f} A > {limit_a:.0f} A for {now_s - since:.0f} s"))
            return None, now_s + (recovery_s or DEFAULT_OCP_RECOVERY_S)
        return since, None

    charge_since, charge_until = over_current(
        "charge",
        current_a,
        bms.max_charge_current_a,
        bms.charge_ocp_delay_s,
        bms.charge_ocp_recovery_s,
        previous.charge_over_since_s,
    )
    discharge_since, discharge_until = over_current(
        "discharge",
        -current_a,
        bms.max_discharge_current_a,
        bms.discharge_ocp_delay_s,
        bms.discharge_ocp_recovery_s,
        previous.discharge_over_since_s,
    )
    charge_temperature = _temperature_side(
        previous.charge_temperature,
        battery_temperature_c,
        "charge",
        (bms.charge_otp_c, bms.charge_otpr_c, bms.charge_utp_c, bms.charge_utpr_c),
    )
    discharge_temperature = _temperature_side(
        previous.discharge_temperature,
        battery_temperature_c,
        "discharge",
        (bms.discharge_otp_c, bms.discharge_otpr_c, bms.discharge_utp_c, bms.discharge_utpr_c),
    )
    mos = _temperature_side(
        "mos_otp" if previous.mos_hot else None,
        mos_temperature_c,
        "mos",
        (bms.mos_otp_c, bms.mos_otpr_c, None, None),
    )
    engaged = [
        (charge_temperature, previous.charge_temperature, current_a > TRIP_CURRENT_A),
        (discharge_temperature, previous.discharge_temperature, -current_a > TRIP_CURRENT_A),
        (mos, "mos_otp" if previous.mos_hot else None, abs(current_a) > TRIP_CURRENT_A),
    ]
    for now_held, before, flowing in engaged:
        if now_held is not None and now_held != before and flowing:
            measured = mos_temperature_c if now_held == "mos_otp" else battery_temperature_c
            trips.append(BmsTrip(now_s, now_held, f"{measured:.1f} °C at {current_a:+.1f} A"))
    state = replace(
        previous,
        ovp=ovp,
        uvp=uvp,
        charge_ocp_until_s=charge_until if charge_until is not None else previous.charge_ocp_until_s,
        discharge_ocp_until_s=discharge_until if discharge_until is not None else previous.discharge_ocp_until_s,
        charge_over_since_s=charge_since,
        discharge_over_since_s=discharge_since,
        charge_temperature=charge_temperature,
        discharge_temperature=discharge_temperature,
        mos_hot=mos is not None,
    )
    return state, tuple(trips)
