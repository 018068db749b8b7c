"""The domain model shared by every part of the gateway.

Frozen dataclasses with units in their field names. Every reading carries ``measured_at_s``, the monotonic
time (see :mod:`gateway.clock`) at which the BMS answered, so nothing stale can pass for fresh.

A field that a BMS protocol does not carry is ``None`` (``null`` in JSON); consumers then use the documented
chemistry default (:mod:`gateway.chemistry`). ``None`` means "not carried", never "failed": a failed or
implausible reading is not turned into a state at all.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.alarms import Alarm, Side, blocked_sides

__all__ = [
    "Alarm",
    "Battery",
    "BatteryState",
    "Chemistry",
    "DeviceInfo",
    "LimitReason",
    "Limits",
    "PackReading",
    "ProtectionSettings",
    "Side",
    "blocked_sides",
]


class Chemistry(enum.StrEnum):
    """Cell chemistry, as the BMS's battery-type setting states it."""

    LIFEPO4 = "lifepo4"
    LI_ION = "li_ion"
    LTO = "lto"


@dataclass(frozen=True, slots=True)
class BatteryState:
    """Live values of one pack, as measured at ``measured_at_s``.

    Current is positive while charging and negative while discharging.
    """

    measured_at_s: float
    """Monotonic time of the BMS reply, s."""
    cell_voltages_v: tuple[float, ...]
    """Each cell's voltage, V, in cell order (a disconnected sense wire reads 0.0)."""
    pack_voltage_v: float
    """Pack voltage, V."""
    current_a: float
    """Pack current, A: + charging, − discharging."""
    soc_pct: float
    """State of charge, %."""
    soh_pct: float | None = None
    """State of health, % (None: not carried)."""
    remaining_capacity_ah: float | None = None
    """Remaining capacity, Ah (None: not carried)."""
    cycle_count: int | None = None
    """Full charge cycles counted by the BMS."""
    cycle_capacity_ah: float | None = None
    """Total capacity ever cycled, Ah."""
    mos_temperature_c: float | None = None
    """MOSFET temperature, °C."""
    battery_temperatures_c: tuple[float | None, ...] = ()
    """Battery sensors T1, T2, ..., °C; None for a sensor that is not fitted."""
    charge_mos_on: bool = False
    """The charge MOSFET conducts."""
    discharge_mos_on: bool = False
    """The discharge MOSFET conducts."""
    balancer_on: bool = False
    """The balancer is balancing now (or, for protocols without that bit, enabled)."""
    balance_current_a: float | None = None
    """Balancer current, A (None: not carried)."""
    alarms: frozenset[Alarm] = frozenset()
    """Active alarms and protections."""
    runtime_s: float | None = None
    """BMS run time since manufacture, s."""

    @property
    def cell_count(self) -> int:
        return len(self.cell_voltages_v)

    @property
    def min_cell_v(self) -> float:
        """Lowest cell voltage, V."""
        return min(self.cell_voltages_v) if self.cell_voltages_v else math.nan

    @property
    def max_cell_v(self) -> float:
        """Highest cell voltage, V."""
        return max(self.cell_voltages_v) if self.cell_voltages_v else math.nan

    @property
    def average_cell_v(self) -> float:
        """Mean cell voltage, V."""
        cells = self.cell_voltages_v
        return round(sum(cells) / len(cells), 4) if cells else math.nan

    @property
    def cell_delta_v(self) -> float:
        """Highest minus lowest cell voltage, V."""
        return round(self.max_cell_v - self.min_cell_v, 4)

    @property
    def power_w(self) -> float:
        """Pack power, W: + charging, − discharging."""
        return round(self.pack_voltage_v * self.current_a, 2)

    def to_json(self) -> dict[str, Any]:
        out = _plain(self)
        out.pop("measured_at_s")
        out["alarms"] = sorted(a.value for a in self.alarms)
        derived = {
            "cell_count": self.cell_count,
            "min_cell_v": self.min_cell_v,
            "max_cell_v": self.max_cell_v,
            "average_cell_v": self.average_cell_v,
            "cell_delta_v": self.cell_delta_v,
            "power_w": self.power_w,
        }
        return {"cell_voltages_v": out.pop("cell_voltages_v"), **derived, **out}


@dataclass(frozen=True, slots=True)
class ProtectionSettings:
    """A pack's protection settings as the BMS reports them, read at ``measured_at_s``.

    Voltages are per cell unless the name says ``pack``. ``None``: this BMS protocol does not carry it.
    """

    measured_at_s: float
    """Monotonic time of the BMS reply, s."""
    cell_count: int
    """Cell-count setting."""
    capacity_ah: float | None
    """Nominal capacity setting, Ah."""
    battery_type: Chemistry | None
    """Chemistry setting."""
    cell_ovp_v: float
    """Cell over-voltage protection, V."""
    cell_ovpr_v: float
    """Cell over-voltage recovery, V."""
    cell_uvp_v: float
    """Cell under-voltage protection, V."""
    cell_uvpr_v: float
    """Cell under-voltage recovery, V."""
    max_charge_current_a: float
    """Charge over-current protection (max continuous charge current), A."""
    max_discharge_current_a: float
    """Discharge over-current protection (max continuous discharge current), A."""
    pack_ovp_v: float | None = None
    """Pack over-voltage protection, V."""
    pack_uvp_v: float | None = None
    """Pack under-voltage protection, V."""
    power_off_v: float | None = None
    """Cell voltage at which the BMS powers itself off, V."""
    cell_ovp_delay_s: float | None = None
    """Cell OVP delay, s."""
    cell_uvp_delay_s: float | None = None
    """Cell UVP delay, s."""
    cell_delta_protect_v: float | None = None
    """Cell voltage difference protection, V."""
    charge_ocp_delay_s: float | None = None
    """Charge over-current delay, s."""
    charge_ocp_recovery_s: float | None = None
    """Charge over-current recovery time, s."""
    discharge_ocp_delay_s: float | None = None
    """Discharge over-current delay, s."""
    discharge_ocp_recovery_s: float | None = None
    """Discharge over-current recovery time, s."""
    scp_recovery_s: float | None = None
    """Short-circuit protection recovery time, s."""
    balance_start_v: float | None = None
    """Cell voltage above which the balancer may run, V."""
    balance_trigger_v: float | None = None
    """Cell delta that starts balancing, V."""
    max_balance_current_a: float | None = None
    """Maximum balance current, A."""
    balancer_enabled: bool | None = None
    """The balancer switch."""
    charge_otp_c: float | None = None
    """Charge over-temperature protection, °C."""
    charge_otpr_c: float | None = None
    """Charge over-temperature recovery, °C."""
    discharge_otp_c: float | None = None
    """Discharge over-temperature protection, °C."""
    discharge_otpr_c: float | None = None
    """Discharge over-temperature recovery, °C."""
    charge_utp_c: float | None = None
    """Charge under-temperature protection, °C."""
    charge_utpr_c: float | None = None
    """Charge under-temperature recovery, °C."""
    discharge_utp_c: float | None = None
    """Discharge under-temperature protection, °C."""
    discharge_utpr_c: float | None = None
    """Discharge under-temperature recovery, °C."""
    mos_otp_c: float | None = None
    """MOSFET over-temperature protection, °C."""
    mos_otpr_c: float | None = None
    """MOSFET over-temperature recovery, °C."""
    box_otp_c: float | None = None
    """Battery-box over-temperature protection, °C."""
    box_otpr_c: float | None = None
    """Battery-box over-temperature recovery, °C."""
    charge_mos_switch: bool | None = None
    """The charge switch setting (what the user allows; not the MOS state)."""
    discharge_mos_switch: bool | None = None
    """The discharge switch setting."""

    def to_json(self) -> dict[str, Any]:
        out = _plain(self)
        out.pop("measured_at_s")
        return out


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a BMS says about itself. Never holds the settings password."""

    model: str | None = None
    software_version: str | None = None
    hardware_version: str | None = None
    serial_number: str | None = None
    manufacture_date: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class PackReading:
    """One good answer of one pack: its live state, its settings and what it is."""

    pack_id: str
    """Stable name of the pack, e.g. ``"jk-uart:/dev/ttyUSB0"``."""
    state: BatteryState
    settings: ProtectionSettings
    device: DeviceInfo = field(default_factory=DeviceInfo)

    @property
    def measured_at_s(self) -> float:
        return self.state.measured_at_s

    def to_json(self) -> dict[str, Any]:
        return {
            "pack_id": self.pack_id,
            "device": self.device.to_json(),
            "state": self.state.to_json(),
            "settings": self.settings.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Battery:
    """The battery the inverter sees: one or more packs in parallel."""

    packs: tuple[PackReading, ...]

    @property
    def oldest_measurement_s(self) -> float:
        """Monotonic time of the oldest pack reading, s: the battery is only as fresh as that."""
        return min(p.measured_at_s for p in self.packs)


def _plain(obj: Any) -> dict[str, Any]:
    """Shallow dict of a dataclass, with enums as their values and tuples as lists."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


@dataclass(frozen=True, slots=True)
class LimitReason:
    """Why a limit has its value: the limiter that set it and one human line."""

    limiter: str
    """Short name of the limiter, e.g. ``"cell_voltage"``, ``"user_cap"``, ``"failsafe"``."""
    reason: str
    """One line for humans, e.g. ``"cell 7 at 3.52 V, taper to 0 A at 3.55 V"``."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What the inverter must obey, derived from BMS state and settings at ``computed_at_s``."""

    computed_at_s: float
    """Monotonic time of the BMS data these limits derive from, s."""
    charge_voltage_limit_v: float
    """Charge voltage limit (CVL), V."""
    charge_current_limit_a: float
    """Charge current limit (CCL), A, ≥ 0."""
    discharge_current_limit_a: float
    """Discharge current limit (DCL), A, ≥ 0."""
    discharge_voltage_limit_v: float
    """Discharge voltage limit (DVL), V."""
    charge_enable: bool
    """The inverter may charge."""
    discharge_enable: bool
    """The inverter may discharge."""
    force_charge: bool = False
    """Ask the inverter to charge the battery now (SOC critically low)."""
    full_charge_request: bool = False
    """Ask the inverter for a full charge (SOC recalibration)."""
    reasons: Mapping[str, LimitReason] = field(default_factory=dict)
    """For each limit field name, why it has its value."""
    soc_pct: float | None = None
    """SOC to report to the inverter, % (may be capped below the BMS's until float); None: the BMS's."""
    charge_phase: str | None = None
    """``bulk``, ``absorption`` or ``float``; None when no charge logic ran (fail-safe)."""
    cell_deeply_discharged: bool = False
    """A cell is at or below its chemistry's recovery threshold: charging is limited to the recovery current (0 A
    below the no-charge threshold) and discharging stopped; the gateway's alarm ``cell_deeply_discharged``."""

    def to_json(self) -> dict[str, Any]:
        out = _plain(self)
        out["reasons"] = {k: {"limiter": r.limiter, "reason": r.reason} for k, r in self.reasons.items()}
        return out
