"""What the user may tune in the limits engine, with its defaults: the one place that states them.

``None`` means "derive it from the BMS's settings and the chemistry" (see :mod:`gateway.limits.thresholds`).
The config file's ``limits:`` and ``charging:`` sections map one to one onto these fields.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.model import Chemistry


class CurrentSharing(enum.StrEnum):
    """How the current of several packs in parallel is assumed to divide (:mod:`gateway.limits.system`)."""

    EQUAL = "equal"
    """Every pack carries the same share: the battery may carry packs × the smallest pack limit."""
    CAPACITY = "capacity"
    """Each pack carries a share proportional to its capacity (same cells, impedance ∝ 1 / capacity)."""
    AUTO = "auto"
    """Capacity when the packs' capacities differ by more than :data:`AUTO_CAPACITY_SPREAD`, else equal."""


AUTO_CAPACITY_SPREAD = 0.10
"""``auto`` sharing shares by capacity once the largest pack's capacity exceeds the smallest's by this fraction."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSettings:
    """Tunables of the limits engine. Voltages per cell unless the name says ``pack``."""

    # --- ceilings ---------------------------------------------------------------------------------------
    max_charge_current_a: float = 100.0
    """The user's charge current cap, A."""
    max_discharge_current_a: float = 100.0
    """The user's discharge current cap, A."""
    bms_current_fraction: float = 0.9
    """Fraction of the BMS's max charge / discharge current the inverter may use (headroom before OCP)."""

    # --- chemistry and voltage thresholds (None: derived) -------------------------------------------------
    chemistry: Chemistry | None = None
    """Overrides the BMS's battery-type setting."""
    bulk_cell_v: float | None = None
    """Bulk/absorption voltage, V. Derived: min(chemistry bulk, OVP − 0.10 V)."""
    float_cell_v: float | None = None
    """Float voltage, V. Derived: min(chemistry float, bulk − 0.05 V)."""
    charge_knee_cell_v: float | None = None
    """Highest-cell voltage where the charge current starts to taper, V. Derived: bulk − 0.05 V."""
    charge_cutoff_cell_v: float | None = None
    """Highest-cell voltage where the charge current reaches 0, V. Derived: midway between bulk and OVP."""
    discharge_knee_cell_v: float | None = None
    """Lowest-cell voltage where the discharge current starts to taper, V. Derived from the chemistry."""
    discharge_cutoff_cell_v: float | None = None
    """Lowest-cell voltage where the discharge current reaches 0, V. Derived: UVP + a chemistry margin."""

    # --- deeply discharged cells (gateway.limits.limiters.deep_discharge) -----------------------------------
    recovery_current_c: float = 0.05
    """At or below the chemistry's recovery threshold (LiFePO4 2.5 V) charging is limited to this × the pack's
    capacity, A per Ah (0.05 C: 14 A for 280 Ah); 0 A without a capacity. At or below its no-charge threshold
    (2.0 V) 0 A."""

    # --- temperature ------------------------------------------------------------------------------------
    temperature_margin_c: float = 2.0
    """Current is 0 this far inside the BMS's temperature windows, °C, so the BMS never has to trip."""

    # --- charge voltage: bulk → absorption → float --------------------------------------------------------
    absorption_s: float = 900.0
    """Time the pack must spend at the bulk voltage with its cells balanced before float, s."""
    absorption_timeout_s: float = 7200.0
    """Longest absorption, balanced or not, before float, s."""
    absorption_max_delta_v: float = 0.015
    """Cell delta at or below which the absorption timer runs, V."""
    rebulk_soc_pct: float = 80.0
    """Back from float to bulk below this SOC, %."""
    rebulk_delta_v: float = 0.080
    """Back from float to bulk when the cell delta reaches this, V."""
    rebulk_cell_v: float | None = None
    """Back from float to bulk when the highest cell falls below this, V (YamBMS's re-bulk voltage, e.g. 3.30 V
    for LiFePO4); None: off. Ignored unless below the float voltage."""
    tail_current_c: float | None = None
    """Absorption also ends once the charge current stays at or below this × the pack's capacity (A per Ah: 0.02
    is 2 A for 100 Ah) for :attr:`tail_time_s`, at bulk with the cells balanced (Nordkyn, YamBMS); None: off.
    Off too without a capacity from the BMS."""
    tail_time_s: float = 60.0
    """How long the current must stay at or below the tail current, s."""
    float_ramp_v_per_s: float = 0.002
    """How fast the pack CVL falls from bulk to float, V/s (slowly: some inverters export hard on a drop)."""
    cvl_hold_s: float = 60.0
    """After the over-voltage controller lowered the CVL, wait this long before raising it again, s."""
    cvl_ramp_v_per_s: float = 0.001
    """Then raise the pack CVL at this rate, V/s. 1 mV/s as dbus-serialbattery (mr-manuel/venus-os_dbus-serialbattery
    battery.py, the CVL controller's recovery): 10 mV/s gave a saw-tooth in absorption (battery-safety audit P13)."""
    cvl_deadband_v: float = 0.05
    """Pack CVL decreases smaller than this are not passed on (the wire resolution is 0.1 V), V."""
    inverter_voltage_offset_v: float = 0.0
    """What the inverter's voltage reading is above the BMS's, V (signed, pack): CVL and DVL sent are raised by it
    so that the inverter stops at the voltages meant at the battery; never a CVL that means more than cells ×
    (OVP − :data:`~gateway.limits.thresholds.OVP_HEADROOM_V`) at the battery."""

    # --- state of charge -----------------------------------------------------------------------------------
    soc_ccl_taper: tuple[tuple[float, float], ...] | None = None
    """CCL near full by the BMS's SOC: (SOC %, fraction) steps, SOC ascending; from each SOC on, the charge current
    is at most that fraction of the charge ceiling (dbus-serialbattery's CCCM_SOC, in steps); None: off."""

    # --- current dynamics -------------------------------------------------------------------------------
    current_hold_s: float = 30.0
    """After a current limit fell, wait this long before raising it again, s."""
    current_ramp_a_per_s: float = 5.0
    """Then raise it at this rate, A/s."""
    current_deadband_a: float = 2.0
    """Changes smaller than this are not passed on, and a limit at 0 resumes only above it, A."""

    # --- what the inverter is told besides limits --------------------------------------------------------
    soc_cap_pct: float | None = 98.0
    """SOC reported to the inverter is at most this until float is reached, %; None: report as is."""
    force_charge_soc_pct: float | None = 5.0
    """Ask the inverter to charge at once at or below this SOC (released 5 % higher); None: never."""
    full_charge_interval_days: float | None = 30.0
    """Request a full charge when float was not reached for this long, and re-bulk once float has lasted this
    long; None: never."""

    # --- enforcement: inverters that take more than they are allowed -------------------------------------
    overshoot_margin_a: float = 5.0
    """Measured current may exceed the limit by this much, A."""
    overshoot_after_s: float = 20.0
    """An excess lasting this long is acted on, s; never longer than half the BMS's over-current delay."""
    inverter_response_s: float = 20.0
    """After a limit fell, the inverter gets this long to follow before an excess counts, s."""
    enforcement_disable_min_s: float = 60.0
    """A side disabled by enforcement stays disabled at least this long, s."""
    overshoot_forgive_s: float = 600.0
    """After this long of obedience the advertised limit returns to the true one, s."""

    # --- several packs in parallel (gateway.limits.system) ------------------------------------------------
    current_sharing: CurrentSharing = CurrentSharing.AUTO
    """How the battery's current is assumed to divide among its packs."""
    offline_current_fraction: float = 1.0
    """While a known pack is offline, the battery's current limits are multiplied by this (0 < f ≤ 1). 1: no
    reduction beyond losing the pack's share; the packs online already carry at most their own limits."""
