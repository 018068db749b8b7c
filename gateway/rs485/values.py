"""The values RS485 profiles can put on the wire: :mod:`gateway.values` plus what ASCII and register maps need.

Pylontech ASCII and the Modbus maps carry more than the CAN frames: every cell voltage, every temperature, the
BMS's protection settings, per-cell states, text fields and the module structure of a stack. This module names
them (a profile referring to any other name is rejected at load) and derives them, purely, from pack readings
and :class:`~gateway.model.Limits`.

Two namespaces are built per answer:

* a **module** namespace per pack: that pack's measurements and settings, and its share of the limits (the
  battery's current limits divided by the number of packs, so an inverter that adds up the modules' limits
  gets the battery's limit, and one that reads only the first gets less, never more);
* the **system** namespace: the whole battery (voltage averaged, currents and capacities added, extremes over
  every pack) and the battery's limits.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from gateway.chemistry import MOS_OTP_C, PRESETS
from gateway.model import Limits, PackReading
from gateway.values import FLAG_VALUES, IDLE_CURRENT_A, NUMERIC_VALUES, Value, chemistry_of, published_values

ListValue = tuple[float, ...]
AnyValue = Value | ListValue
Namespace = Mapping[str, AnyValue]

MODULE_SELECTOR: Final = "module_selector"
"""Set by the Pylontech responder: the pack's address in a one-pack answer, the module count in an all-pack one."""


CELL_STATE_NORMAL: Final = 0x00
CELL_STATE_BELOW: Final = 0x01
CELL_STATE_ABOVE: Final = 0x02
CELL_STATE_OTHER: Final = 0xF0
"""Pylontech per-cell and per-sensor state codes (0x44): normal, below the lower limit, above the upper, other."""

CELL_ERROR_HIGH_V: Final = 4.2
CELL_ERROR_LOW_V: Final = 1.0
"""A cell reading above 4.2 V or below 1.0 V is a cell *error*, "supposed to be a failure" (Pylontech RS485 V3.3,
0x44 status 4/5, p.19: "cell voltage > 4.2 V (battery charge MOS off) or cell voltage < 1 V (battery shut down by
itself)"). Pylontech packs are LiFePO4; for the other chemistries these are failures too (NMC charges to 4.2 V at
most, LTO to 2.85 V; none is usable below 1 V)."""


class FailsafeCode(enum.IntEnum):
    """``failsafe_state_code``: the output's fail-safe state as a number, for register maps."""

    WAITING = 0
    NORMAL = 1
    STALE = 2
    SILENT = 3


RS485_NUMERIC: Final[Mapping[str, str]] = {
    **NUMERIC_VALUES,
    MODULE_SELECTOR: "pack address (one pack asked) or module count (all packs asked); Pylontech only",
    "pack_address": "the module's Pylontech address (configured address + pack index)",
    "module_number": "the module's number in the stack, 1-based",
    "bms_soc_pct": "state of charge as the BMS reports it, % (soc_pct may be capped for the inverter)",
    "reported_remaining_capacity_ah": "remaining capacity consistent with soc_pct, Ah (soc_pct × capacity)",
    "pack_capacity_ah": "capacity, Ah: the setting, else remaining / SOC, else 0",
    "mos_temperature_c": "MOS (BMS board) temperature, °C (mean over packs in the system namespace)",
    "max_mos_temperature_c": "highest MOS temperature over the packs, °C",
    "min_mos_temperature_c": "lowest MOS temperature over the packs, °C",
    "average_cell_v": "mean cell voltage, V",
    "cell_delta_v": "highest minus lowest cell voltage, V",
    "max_cell_index": "number (1-based) of the highest cell within its pack",
    "min_cell_index": "number (1-based) of the lowest cell within its pack",
    "max_cell_position": "module number × 256 + cell number of the highest cell",
    "min_cell_position": "module number × 256 + cell number of the lowest cell",
    "max_temperature_position": "module number × 256 + sensor number (1-based) of the hottest battery sensor",
    "min_temperature_position": "module number × 256 + sensor number of the coldest battery sensor",
    "max_mos_position": "module number × 256 + 1 of the hottest MOS sensor",
    "min_mos_position": "module number × 256 + 1 of the coldest MOS sensor",
    "power_w": "pack power, W, + charging",
    "average_cycle_count": "mean charge cycles over the packs",
    "max_cycle_count": "highest charge cycles over the packs",
    "average_soh_pct": "mean state of health over the packs, %",
    "min_soh_pct": "lowest state of health over the packs, %",
    "low_cells_mask": "bit n set: cell n + 1 at or below cell UVP",
    "failed_cells_mask": f"bit n set: cell n + 1 reads above {CELL_ERROR_HIGH_V} V or below {CELL_ERROR_LOW_V} V (a "
    "failed cell, Pylontech 0x44 status 4/5)",
    "high_cells_mask": "bit n set: cell n + 1 at or above cell OVP",
    "cell_ovp_v": "cell over-voltage protection, V",
    "cell_ovpr_v": "cell over-voltage recovery, V",
    "cell_uvp_v": "cell under-voltage protection, V",
    "cell_uvpr_v": "cell under-voltage recovery, V",
    "pack_ovp_v": "pack over-voltage protection, V (cells × cell OVP when not carried)",
    "pack_uvp_v": "pack under-voltage protection, V (cells × cell UVP when not carried)",
    "nominal_voltage_v": "rated (nominal) pack voltage, V: cells × the chemistry's nominal cell voltage",
    "charge_otp_c": "charge over-temperature protection, °C (chemistry default when not carried)",
    "charge_utp_c": "charge under-temperature protection, °C",
    "discharge_otp_c": "discharge over-temperature protection, °C",
    "discharge_utp_c": "discharge under-temperature protection, °C",
    "mos_otp_c": "MOS over-temperature protection, °C",
    "bms_max_charge_current_a": "the BMS's charge over-current setting, A",
    "bms_max_discharge_current_a": "the BMS's discharge over-current setting, A",
    "failsafe_state_code": "fail-safe state: 0 waiting, 1 normal, 2 stale, 3 silent",
    "charge_phase_code": "charge phase: 0 none (fail-safe), 1 bulk, 2 absorption, 3 float",
}
RS485_FLAGS: Final[Mapping[str, str]] = {
    **FLAG_VALUES,
    "charge_mos_on": "the charge MOSFET conducts",
    "discharge_mos_on": "the discharge MOSFET conducts",
    "balancer_on": "the balancer is balancing",
    "is_full": "SOC at 100 %",
    "always": "always set",
}
RS485_TEXTS: Final[Mapping[str, str]] = {
    "serial_number": "the BMS's serial number (empty when not carried)",
    "model": "the BMS's model (empty when not carried)",
    "software_version": "the BMS's software version text",
    "hardware_version": "the BMS's hardware version text",
}
RS485_LISTS: Final[Mapping[str, str]] = {
    "cell_voltages_v": "every cell's voltage, V",
    "temperatures_c": "the MOS (BMS board) sensor first, then every fitted battery sensor, °C",
    "battery_temperatures_c": "every fitted battery sensor, °C",
    "cell_states": "per cell: 0x02 at or above OVP, 0x01 at or below UVP, 0xF0 reading 0 V, else 0",
    "temperature_states": "per sensor of temperatures_c: 0x02 at or above its upper limit, 0x01 at or below "
    "its lower limit, else 0",
}
RS485_VALUE_NAMES: Final = frozenset(RS485_NUMERIC) | frozenset(RS485_FLAGS)
"""Names a number or a flag field may carry (``bool`` flags encode as 0/1 in numbers)."""

_PHASE_CODES: Final = {None: 0, "bulk": 1, "absorption": 2, "float": 3}


@dataclass(frozen=True, slots=True)
class BatteryView:
    """What one answer is built from: every module's namespace and the system's."""

    modules: tuple[Namespace, ...]
    system: Namespace

    @property
    def module_count(self) -> int:
        return len(self.modules)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _finite(value: float | None, default: float) -> float:
    return value if value is not None and math.isfinite(value) else default


def _temperature_windows(reading: PackReading) -> tuple[float, float, float, float, float]:
    """(charge UTP, charge OTP, discharge UTP, discharge OTP, MOS OTP), °C, with chemistry defaults."""
    bms = reading.settings
    preset = PRESETS[chemistry_of(bms)]
    return (
        _finite(bms.charge_utp_c, preset.charge_window_c[0]),
        _finite(bms.charge_otp_c, preset.charge_window_c[1]),
        _finite(bms.discharge_utp_c, preset.discharge_window_c[0]),
        _finite(bms.discharge_otp_c, preset.discharge_window_c[1]),
        _finite(bms.mos_otp_c, MOS_OTP_C),
    )


def _cell_state(volts: float, ovp_v: float, uvp_v: float) -> int:
    if not math.isfinite(volts) or volts <= 0.0:
        return CELL_STATE_OTHER  # a disconnected sense wire
    if volts >= ovp_v:
        return CELL_STATE_ABOVE
    if volts <= uvp_v:
        return CELL_STATE_BELOW
    return CELL_STATE_NORMAL


def _range_state(value: float, low: float, high: float) -> int:
    if value >= high:
        return CELL_STATE_ABOVE
    if value <= low:
        return CELL_STATE_BELOW
    return CELL_STATE_NORMAL


def share_limits(limits: Limits, module_count: int) -> Limits:
    """One module's share of the battery's limits: the current limits divided by ``module_count``."""
    if module_count <= 1:
        return limits
    return replace(
        limits,
        charge_current_limit_a=limits.charge_current_limit_a / module_count,
        discharge_current_limit_a=limits.discharge_current_limit_a / module_count,
    )


def module_values(
    reading: PackReading, limits: Limits, *, index: int, module_count: int, comm_alarm: bool, pack_address: int = 0
) -> dict[str, AnyValue]:
    """Every RS485 value of one pack (``index`` 0-based) with its share of ``limits``."""
    state, bms = reading.state, reading.settings
    share = share_limits(limits, module_count)
    # published_values clears an enable beside a share below the wire's resolution (MIN_ENABLED_LIMIT_A).
    out: dict[str, AnyValue] = dict(published_values(reading, share, comm_alarm=comm_alarm, module_count=module_count))
    cells = state.cell_voltages_v
    cell_count = len(cells)
    charge_utp, charge_otp, discharge_utp, discharge_otp, mos_otp = _temperature_windows(reading)
    fitted = tuple(t for t in state.battery_temperatures_c if t is not None)
    temperatures = ((state.mos_temperature_c,) if state.mos_temperature_c is not None else ()) + fitted
    # Each sensor against the window it matters for: the MOS against its OTP, a cell sensor against the
    # first limit it would cross (charge OTP is the lower upper limit, charge UTP the higher lower one).
    states = [_range_state(t, -math.inf, mos_otp) for t in temperatures[: len(temperatures) - len(fitted)]]
    states += [_range_state(t, max(charge_utp, discharge_utp), min(charge_otp, discharge_otp)) for t in fitted]
    soc = _number(out, "soc_pct")
    capacity = bms.capacity_ah or 0.0
    if capacity <= 0 and state.remaining_capacity_ah and state.soc_pct > 0:
        capacity = state.remaining_capacity_ah * 100 / state.soc_pct
    low_mask = sum(1 << n for n, v in enumerate(cells) if v <= bms.cell_uvp_v)
    # "not within" also catches a reading that is not a number: no voltage is a failed reading.
    failed_mask = sum(1 << n for n, v in enumerate(cells) if not CELL_ERROR_LOW_V <= v <= CELL_ERROR_HIGH_V)
    high_mask = sum(1 << n for n, v in enumerate(cells) if v >= bms.cell_ovp_v)
    max_index = cells.index(max(cells)) + 1 if cells else 0
    min_index = cells.index(min(cells)) + 1 if cells else 0
    module = index + 1
    out.update(
        {
            "pack_address": pack_address,
            "module_number": module,
            "cell_count": cell_count,  # the cells this module lists, so a count always matches its cell list
            "bms_soc_pct": state.soc_pct,
            "pack_capacity_ah": capacity,
            "reported_remaining_capacity_ah": capacity * soc / 100
            if capacity > 0
            else _number(out, "remaining_capacity_ah"),
            "mos_temperature_c": _finite(state.mos_temperature_c, 0.0),
            "max_mos_temperature_c": _finite(state.mos_temperature_c, 0.0),
            "min_mos_temperature_c": _finite(state.mos_temperature_c, 0.0),
            "average_cell_v": state.average_cell_v if cells else 0.0,
            "cell_delta_v": state.cell_delta_v if cells else 0.0,
            "max_cell_index": max_index,
            "min_cell_index": min_index,
            "max_cell_position": module * 256 + max_index,
            "min_cell_position": module * 256 + min_index,
            "max_temperature_position": module * 256 + (fitted.index(max(fitted)) + 1 if fitted else 0),
            "min_temperature_position": module * 256 + (fitted.index(min(fitted)) + 1 if fitted else 0),
            "max_mos_position": module * 256 + 1,
            "min_mos_position": module * 256 + 1,
            "power_w": state.power_w,
            "average_cycle_count": state.cycle_count or 0,
            "max_cycle_count": state.cycle_count or 0,
            "average_soh_pct": out["soh_pct"],
            "min_soh_pct": out["soh_pct"],
            "low_cells_mask": low_mask,
            "failed_cells_mask": failed_mask,
            "high_cells_mask": high_mask,
            "cell_ovp_v": bms.cell_ovp_v,
            "cell_ovpr_v": bms.cell_ovpr_v,
            "cell_uvp_v": bms.cell_uvp_v,
            "cell_uvpr_v": bms.cell_uvpr_v,
            "pack_ovp_v": _finite(bms.pack_ovp_v, cell_count * bms.cell_ovp_v),
            "pack_uvp_v": _finite(bms.pack_uvp_v, cell_count * bms.cell_uvp_v),
            # The series count the BMS is set to (else the cells it reports), as published_values counts it.
            "nominal_voltage_v": (bms.cell_count if bms.cell_count > 0 else cell_count)
            * PRESETS[chemistry_of(bms)].nominal_cell_v,
            "charge_otp_c": charge_otp,
            "charge_utp_c": charge_utp,
            "discharge_otp_c": discharge_otp,
            "discharge_utp_c": discharge_utp,
            "mos_otp_c": mos_otp,
            "bms_max_charge_current_a": bms.max_charge_current_a,
            "bms_max_discharge_current_a": bms.max_discharge_current_a,
            "failsafe_state_code": FailsafeCode.STALE if comm_alarm else FailsafeCode.NORMAL,
            "charge_phase_code": _PHASE_CODES.get(limits.charge_phase, 0),
            "charge_mos_on": state.charge_mos_on,
            "discharge_mos_on": state.discharge_mos_on,
            "balancer_on": state.balancer_on,
            "is_full": soc >= 100.0,
            "always": True,
            "serial_number": reading.device.serial_number or "",
            "model": reading.device.model or "",
            "software_version": reading.device.software_version or "",
            "hardware_version": reading.device.hardware_version or "",
            "cell_voltages_v": cells,
            "temperatures_c": temperatures,
            "battery_temperatures_c": fitted,
            "cell_states": tuple(float(_cell_state(v, bms.cell_ovp_v, bms.cell_uvp_v)) for v in cells),
            "temperature_states": tuple(float(s) for s in states),
        }
    )
    return out


def _number(values: Namespace, name: str) -> float:
    value = values.get(name, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _extreme(modules: Sequence[Namespace], value: str, position: str, *, highest: bool) -> tuple[float, int]:
    """The highest (or lowest) ``value`` over the modules and the ``position`` that goes with it."""
    ordered = sorted(modules, key=lambda m: _number(m, value))
    best = ordered[-1] if highest else ordered[0]
    return _number(best, value), int(_number(best, position))


def system_values(modules: Sequence[Namespace], readings: Sequence[PackReading], limits: Limits) -> dict[str, AnyValue]:
    """The whole battery's values from its module namespaces (built by :func:`module_values`)."""
    first = dict(modules[0])
    count = len(modules)
    full = published_values(readings[0], limits, comm_alarm=bool(first["comm_alarm"]), module_count=count)
    first.update(full)  # the battery's limits and flags, not a module's share
    if count == 1:
        return first

    def numbers(name: str) -> list[float]:
        return [_number(m, name) for m in modules]

    capacities = numbers("pack_capacity_ah")
    total_capacity = sum(capacities)
    bms_socs = numbers("bms_soc_pct")
    weights = capacities if total_capacity > 0 else [1.0] * count
    bms_soc = sum(s * w for s, w in zip(bms_socs, weights, strict=True)) / sum(weights)
    soc = bms_soc if limits.soc_pct is None else limits.soc_pct
    max_cell, max_cell_at = _extreme(modules, "max_cell_v", "max_cell_position", highest=True)
    min_cell, min_cell_at = _extreme(modules, "min_cell_v", "min_cell_position", highest=False)
    max_t, max_t_at = _extreme(modules, "max_temperature_c", "max_temperature_position", highest=True)
    min_t, min_t_at = _extreme(modules, "min_temperature_c", "min_temperature_position", highest=False)
    max_mos, max_mos_at = _extreme(modules, "mos_temperature_c", "max_mos_position", highest=True)
    min_mos, min_mos_at = _extreme(modules, "mos_temperature_c", "min_mos_position", highest=False)
    cycles = numbers("cycle_count")
    sohs = numbers("soh_pct")
    first.update(
        {
            "pack_voltage_v": _mean(numbers("pack_voltage_v")),
            "current_a": sum(numbers("current_a")),
            "power_w": sum(numbers("power_w")),
            "bms_soc_pct": bms_soc,
            "soc_pct": soc,
            "pack_capacity_ah": total_capacity,
            "capacity_ah": sum(numbers("capacity_ah")),
            "remaining_capacity_ah": sum(numbers("remaining_capacity_ah")),
            "reported_remaining_capacity_ah": total_capacity * soc / 100,
            "temperature_c": _mean(numbers("temperature_c")),
            "max_temperature_c": max_t,
            "max_temperature_position": max_t_at,
            "min_temperature_c": min_t,
            "min_temperature_position": min_t_at,
            "mos_temperature_c": _mean(numbers("mos_temperature_c")),
            "max_mos_temperature_c": max_mos,
            "max_mos_position": max_mos_at,
            "min_mos_temperature_c": min_mos,
            "min_mos_position": min_mos_at,
            "max_cell_v": max_cell,
            "max_cell_position": max_cell_at,
            "min_cell_v": min_cell,
            "min_cell_position": min_cell_at,
            "cell_delta_v": max_cell - min_cell,
            "cycle_count": max(cycles),
            "average_cycle_count": _mean(cycles),
            "max_cycle_count": max(cycles),
            "soh_pct": min(sohs),
            "average_soh_pct": _mean(sohs),
            "min_soh_pct": min(sohs),
            "is_charging": sum(numbers("current_a")) > IDLE_CURRENT_A,
            "is_discharging": sum(numbers("current_a")) < -IDLE_CURRENT_A,
            "is_idle": abs(sum(numbers("current_a"))) <= IDLE_CURRENT_A,
            "is_full": soc >= 100.0,
            "charge_mos_on": all(bool(m["charge_mos_on"]) for m in modules),
            "discharge_mos_on": all(bool(m["discharge_mos_on"]) for m in modules),
            "balancer_on": any(bool(m["balancer_on"]) for m in modules),
        }
    )
    for name in RS485_FLAGS:
        if name.startswith(("alarm_", "fault_")):
            first[name] = any(bool(m[name]) for m in modules)
    return first


def battery_view(
    readings: Sequence[PackReading], limits: Limits, *, comm_alarm: bool, base_address: int = 0
) -> BatteryView:
    """Module and system namespaces for ``readings`` (at least one) under ``limits``.

    :param base_address: the first pack's Pylontech address; pack ``i`` is ``base_address + i``.
    """
    count = len(readings)
    modules = tuple(
        module_values(
            reading, limits, index=i, module_count=count, comm_alarm=comm_alarm, pack_address=base_address + i
        )
        for i, reading in enumerate(readings)
    )
    return BatteryView(modules, system_values(modules, readings, limits))
