"""The flat namespace of values a profile can put on the wire.

Profiles are data: a field names the value it carries (``charge_current_limit_a``) or the flags it ORs
(``[alarm_cell_over_voltage, alarm_charge_over_voltage]``). This module is the one place that defines those
names, their units, and how they derive from a :class:`~gateway.model.PackReading` and
:class:`~gateway.model.Limits`. Profile loading rejects any name not in :data:`VALUE_NAMES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from gateway.alarms import FAULT_GROUPS, active_fault_groups
from gateway.battery import Extreme, Extremes, extremes
from gateway.chemistry import infer_chemistry
from gateway.model import Alarm, BatteryState, Chemistry, Limits, PackReading, ProtectionSettings

Value = float | int | bool | str

DEFAULT_SOH_PCT: Final = 100.0
"""Sent when the BMS protocol carries no state of health (the JK wired protocol does not)."""

SAFE_ROUNDING: Final[Mapping[str, int]] = {
    "charge_voltage_limit_v": -1,
    "charge_current_limit_a": -1,
    "discharge_current_limit_a": -1,
    "discharge_voltage_limit_v": +1,
}
"""How an encoder rounds a limit onto its field's steps, by magnitude (:func:`gateway.limits.rounding.round_raw`):
−1 down (the current limits and CVL: never more than the engine allows), +1 up (DVL: never lower); every other
value to the nearest. The one table the CAN and RS485 encoders both follow."""
MIN_ENABLED_LIMIT_A: Final = 0.1
"""An enable is sent only beside a current limit of at least this, A: one step of the coarsest current field of the
built-in profiles (0.1 A in every CAN profile, Pylontech 0x92/0x47, Voltronic 0x0072/0x0073, modbus-battery).
Below it a limit reads 0 on the wire while the enable says go, and an inverter that obeys the enables, not the
limits, would keep going."""
IDLE_CURRENT_A: Final = 0.5
"""Below this magnitude the battery counts as idle (neither charging nor discharging), A."""

NUMERIC_VALUES: Final[Mapping[str, str]] = {
    "charge_voltage_limit_v": "charge voltage limit, V",
    "charge_current_limit_a": "charge current limit, A",
    "discharge_current_limit_a": "discharge current limit, A (positive)",
    "discharge_voltage_limit_v": "discharge voltage limit, V",
    "soc_pct": "state of charge, %",
    "soh_pct": f"state of health, % ({DEFAULT_SOH_PCT:g} when not carried)",
    "pack_voltage_v": "pack voltage, V",
    "current_a": "pack current, A, + charging",
    "temperature_c": "mean of the fitted battery sensors (MOS sensor if none), °C",
    "max_temperature_c": "highest battery temperature, °C",
    "min_temperature_c": "lowest battery temperature, °C",
    "max_cell_v": "highest cell voltage, V",
    "min_cell_v": "lowest cell voltage, V",
    "capacity_ah": "nominal capacity, Ah",
    "remaining_capacity_ah": "remaining capacity, Ah (SOC × capacity when not carried)",
    "cycle_count": "charge cycles",
    "module_count": "packs in parallel",
    "cell_count": "cells in series (the cell-count setting, else the cells reported)",
}
FLAG_VALUES: Final[Mapping[str, str]] = {
    "charge_enable": "the inverter may charge",
    "discharge_enable": "the inverter may discharge",
    "force_charge": "charge now, SOC critically low",
    "full_charge_request": "charge fully to recalibrate SOC",
    "comm_alarm": "BMS data is stale: communication lost",
    "is_charging": f"current above +{IDLE_CURRENT_A} A",
    "is_discharging": f"current below −{IDLE_CURRENT_A} A",
    "is_idle": "neither charging nor discharging",
    **{
        f"chemistry_{chemistry.value}": f"the cells are {chemistry.value} (the BMS's battery type, else implied by its "
        "cell OVP)"
        for chemistry in Chemistry
    },
    **{f"alarm_{alarm.value}": f"BMS alarm {alarm.value}" for alarm in Alarm},
    **{
        f"fault_{group.value}": f"any BMS alarm of the {group.value} group (gateway/alarms.py)"
        for group in FAULT_GROUPS
    },
}
TEXT_VALUES: Final[Mapping[str, str]] = {
    "min_cell_name": "where the lowest cell is: 'Cell 07' (one pack), 'P2 C07' (cell 7 of the second pack)",
    "max_cell_name": "where the highest cell is, as min_cell_name",
    "min_temperature_name": "the coldest battery sensor: 'Temp 1' (one pack), 'P2 T1'; 'MOS' with no battery sensor",
    "max_temperature_name": "the hottest battery sensor, as min_temperature_name",
}
"""Text values, for text_value fields (Victron names the cell or sensor holding each extreme as text)."""
VALUE_NAMES: Final = frozenset(NUMERIC_VALUES) | frozenset(FLAG_VALUES)


def _battery_temperatures(state: BatteryState) -> list[float]:
    fitted = [t for t in state.battery_temperatures_c if t is not None]
    if fitted:
        return fitted
    return [state.mos_temperature_c] if state.mos_temperature_c is not None else []


def chemistry_of(settings: ProtectionSettings) -> Chemistry:
    """The cell chemistry: the BMS's battery-type setting, else what its cell OVP implies."""
    return settings.battery_type or infer_chemistry(settings.cell_ovp_v)


def _where(extreme: Extreme | None, pack_ids: Sequence[str], *, cell: bool) -> str:
    """The name of an extreme's cell or sensor, for the text values (see :data:`TEXT_VALUES`)."""
    if extreme is None:
        return ""
    if extreme.index is None:
        return "MOS"
    if len(pack_ids) > 1 and extreme.pack_id in pack_ids:
        pack = pack_ids.index(extreme.pack_id) + 1
        return f"P{pack} C{extreme.index:02d}" if cell else f"P{pack} T{extreme.index}"
    return f"Cell {extreme.index:02d}" if cell else f"Temp {extreme.index}"


def location_names(reading: PackReading, where: Extremes | None = None, pack_ids: Sequence[str] = ()) -> dict[str, str]:
    """The :data:`TEXT_VALUES`: where each extreme of ``reading`` sits. ``where`` and ``pack_ids`` (the packs in
    order) come from a battery of several packs; without them the reading is one pack's."""
    found = where if where is not None else extremes((reading,))
    hottest = found.max_temperature or found.max_mos_temperature
    coldest = found.min_temperature or found.max_mos_temperature
    return {
        "min_cell_name": _where(found.min_cell, pack_ids, cell=True),
        "max_cell_name": _where(found.max_cell, pack_ids, cell=True),
        "min_temperature_name": _where(coldest, pack_ids, cell=False),
        "max_temperature_name": _where(hottest, pack_ids, cell=False),
    }


def published_values(
    reading: PackReading,
    limits: Limits,
    *,
    comm_alarm: bool = False,
    module_count: int = 1,
    where: Extremes | None = None,
    pack_ids: Sequence[str] = (),
) -> dict[str, Value]:
    """Every value of :data:`VALUE_NAMES` and :data:`TEXT_VALUES` for one battery reading and its limits.

    :param where: for a battery of several packs, where its extremes are (:attr:`BatteryAggregate.extremes`).
    :param pack_ids: the packs of that battery in order, to number them in the text values.
    """
    state, settings = reading.state, reading.settings
    temperatures = _battery_temperatures(state)
    capacity = settings.capacity_ah or 0.0
    remaining = state.remaining_capacity_ah
    if remaining is None:
        remaining = capacity * state.soc_pct / 100
    charging = limits.charge_enable and limits.charge_current_limit_a >= MIN_ENABLED_LIMIT_A
    values: dict[str, Value] = {
        "charge_voltage_limit_v": limits.charge_voltage_limit_v,
        "charge_current_limit_a": limits.charge_current_limit_a,
        "discharge_current_limit_a": limits.discharge_current_limit_a,
        "discharge_voltage_limit_v": limits.discharge_voltage_limit_v,
        "soc_pct": state.soc_pct if limits.soc_pct is None else limits.soc_pct,
        "soh_pct": state.soh_pct if state.soh_pct is not None else DEFAULT_SOH_PCT,
        "pack_voltage_v": state.pack_voltage_v,
        "current_a": state.current_a,
        "temperature_c": sum(temperatures) / len(temperatures) if temperatures else 0.0,
        "max_temperature_c": max(temperatures, default=0.0),
        "min_temperature_c": min(temperatures, default=0.0),
        "max_cell_v": state.max_cell_v,
        "min_cell_v": state.min_cell_v,
        "capacity_ah": capacity,
        "remaining_capacity_ah": remaining,
        "cycle_count": state.cycle_count or 0,
        "module_count": module_count,
        "cell_count": settings.cell_count if settings.cell_count > 0 else state.cell_count,
        # Whatever made a limit 0 (or less than the wire can show) reaches its enable, and force charge follows
        # the charge enable, as the limits engine does.
        "charge_enable": charging,
        "discharge_enable": limits.discharge_enable and limits.discharge_current_limit_a >= MIN_ENABLED_LIMIT_A,
        "force_charge": limits.force_charge and charging,
        "full_charge_request": limits.full_charge_request,
        "comm_alarm": comm_alarm,
        "is_charging": state.current_a > IDLE_CURRENT_A,
        "is_discharging": state.current_a < -IDLE_CURRENT_A,
        "is_idle": abs(state.current_a) <= IDLE_CURRENT_A,
    }
    chemistry = chemistry_of(settings)
    for each in Chemistry:
        values[f"chemistry_{each.value}"] = each is chemistry
    values.update(location_names(reading, where, pack_ids))
    for alarm in Alarm:
        values[f"alarm_{alarm.value}"] = alarm in state.alarms
    groups = active_fault_groups(state.alarms)
    for group in FAULT_GROUPS:
        values[f"fault_{group.value}"] = group in groups
    return values
