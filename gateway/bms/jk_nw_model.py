"""A JK wired "NW" read-all reply to and from the domain model: :func:`to_reading` (the driver's side) and
:func:`from_reading` with the values the model does not hold (the simulator's side).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gateway.bms.jk_nw_codec import JkNwReply
from gateway.bms.jk_nw_tags import (
    BATTERY_TYPES,
    CELLS_NAME,
    CURRENT_NAME,
    SIMULATOR_PROTOCOL_VERSION,
    STATUS_BALANCER,
    STATUS_CHARGE_MOS,
    STATUS_DISCHARGE_MOS,
    TAG_BY_NAME,
    TEMPERATURE_SENSOR_NAMES,
    WARNING_BITS,
    FieldValue,
)
from gateway.errors import FrameError
from gateway.model import Alarm, BatteryState, Chemistry, DeviceInfo, PackReading, ProtectionSettings
from gateway.secret import Secret


def _bit(mask: int, bit: int) -> bool:
    return bool(mask & bit)


def alarms_from_warnings(warnings: int) -> frozenset[Alarm]:
    return frozenset(alarm for bit, alarm in WARNING_BITS.items() if warnings >> bit & 1)


def warnings_from_alarms(alarms: frozenset[Alarm]) -> int:
    return sum(1 << bit for bit, alarm in WARNING_BITS.items() if alarm in alarms)


def _required(reply: JkNwReply, name: str) -> int | float:
    value = reply.get_number(name)
    if value is None:
        raise FrameError("missing field", f"reply has no tag 0x{TAG_BY_NAME[name]:02X} ({name})")
    return value


def _optional_float(reply: JkNwReply, name: str) -> float | None:
    value = reply.get_number(name)
    return None if value is None else float(value)


def to_reading(reply: JkNwReply, measured_at_s: float, pack_id: str) -> PackReading:
    """Map a decoded reply onto the shared model, stamped with the monotonic time of the reply.

    :raises FrameError: a field the model requires is missing from the reply.
    """
    cells = reply.fields.get(CELLS_NAME)
    if not isinstance(cells, tuple) or not cells:
        raise FrameError("missing field", "reply has no cell voltages (tag 0x79)")
    status = int(_required(reply, "status"))
    sensor_count = int(reply.get_number("temperature_sensor_count") or 0)
    temperatures = tuple(
        _optional_float(reply, name) if index < sensor_count else None
        for index, name in enumerate(TEMPERATURE_SENSOR_NAMES)
    )
    runtime_min = reply.get_number("runtime_min")
    state = BatteryState(
        measured_at_s=measured_at_s,
        cell_voltages_v=cells,
        pack_voltage_v=float(_required(reply, "pack_voltage_v")),
        current_a=float(_required(reply, CURRENT_NAME)),
        soc_pct=float(_required(reply, "soc_pct")),
        cycle_count=_int_or_none(reply.get_number("cycle_count")),
        cycle_capacity_ah=_optional_float(reply, "cycle_capacity_ah"),
        mos_temperature_c=_optional_float(reply, "mos_temperature_c"),
        battery_temperatures_c=temperatures,
        charge_mos_on=_bit(status, STATUS_CHARGE_MOS),
        discharge_mos_on=_bit(status, STATUS_DISCHARGE_MOS),
        balancer_on=_bit(status, STATUS_BALANCER),
        alarms=alarms_from_warnings(int(reply.get_number("warnings") or 0)),
        runtime_s=None if runtime_min is None else float(runtime_min) * 60,
    )
    battery_type = reply.get_number("battery_type")
    capacity = reply.get_number("capacity_ah")
    settings = ProtectionSettings(
        measured_at_s=measured_at_s,
        cell_count=int(reply.get_number("cell_count_setting") or len(cells)),
        capacity_ah=None if capacity is None else float(capacity),
        battery_type=None if battery_type is None else BATTERY_TYPES.get(int(battery_type)),
        cell_ovp_v=float(_required(reply, "cell_ovp_v")),
        cell_ovpr_v=float(_required(reply, "cell_ovpr_v")),
        cell_uvp_v=float(_required(reply, "cell_uvp_v")),
        cell_uvpr_v=float(_required(reply, "cell_uvpr_v")),
        max_charge_current_a=float(_required(reply, "max_charge_current_a")),
        max_discharge_current_a=float(_required(reply, "max_discharge_current_a")),
        pack_ovp_v=_optional_float(reply, "pack_ovp_v"),
        pack_uvp_v=_optional_float(reply, "pack_uvp_v"),
        cell_ovp_delay_s=_optional_float(reply, "cell_ovp_delay_s"),
        cell_uvp_delay_s=_optional_float(reply, "cell_uvp_delay_s"),
        cell_delta_protect_v=_optional_float(reply, "cell_delta_protect_v"),
        charge_ocp_delay_s=_optional_float(reply, "charge_ocp_delay_s"),
        discharge_ocp_delay_s=_optional_float(reply, "discharge_ocp_delay_s"),
        balance_start_v=_optional_float(reply, "balance_start_v"),
        balance_trigger_v=_optional_float(reply, "balance_trigger_v"),
        balancer_enabled=_bool_or_none(reply.get_number("balancer_switch")),
        charge_otp_c=_optional_float(reply, "charge_otp_c"),
        discharge_otp_c=_optional_float(reply, "discharge_otp_c"),
        charge_utp_c=_optional_float(reply, "charge_utp_c"),
        charge_utpr_c=_optional_float(reply, "charge_utpr_c"),
        discharge_utp_c=_optional_float(reply, "discharge_utp_c"),
        discharge_utpr_c=_optional_float(reply, "discharge_utpr_c"),
        mos_otp_c=_optional_float(reply, "mos_otp_c"),
        mos_otpr_c=_optional_float(reply, "mos_otpr_c"),
        box_otp_c=_optional_float(reply, "box_otp_c"),
        box_otpr_c=_optional_float(reply, "box_otpr_c"),
        charge_mos_switch=_bool_or_none(reply.get_number("charge_mos_switch")),
        discharge_mos_switch=_bool_or_none(reply.get_number("discharge_mos_switch")),
    )
    device = DeviceInfo(
        model=reply.get_text("manufacturer"),
        software_version=reply.get_text("software_version"),
        manufacture_date=reply.get_text("manufacture_date"),
    )
    return PackReading(pack_id=pack_id, state=state, settings=settings, device=device)


CHEMISTRY_CODES: Final[Mapping[Chemistry, int]] = MappingProxyType({v: k for k, v in BATTERY_TYPES.items()})

SIMULATOR_EXTRAS: Final[Mapping[str, FieldValue]] = MappingProxyType(
    {
        "temperature_delta_protect_c": 20,
        "current_calibration_ma": 1000,
        "board_address": 1,
        "sleep_wait_s": 10,
        "low_soc_alarm_pct": 20,
        "password": Secret("123456"),
        "dedicated_charger_switch": 0,
        "device_id": "bmsgw-sm",
        "start_current_calibration": 0,
        "actual_capacity_ah": 0,
        "protocol_version": SIMULATOR_PROTOCOL_VERSION,
    }
)
"""Values for tags the domain model does not hold, used when the simulator builds a reply."""


def from_reading(reading: PackReading, extras: Mapping[str, FieldValue] = SIMULATOR_EXTRAS) -> JkNwReply:
    """The reply a JK BMS would send for ``reading``; the inverse of :func:`to_reading`.

    Tags come in wire order. Values the model does not hold come from ``extras``; a setting that is
    ``None`` in the model is sent as 0.
    """
    state, settings, device = reading.state, reading.settings, reading.device
    fitted = 0
    for temperature in state.battery_temperatures_c:
        if temperature is None:
            break
        fitted += 1
    temperatures = [t or 0.0 for t in state.battery_temperatures_c[:2]]
    temperatures += [0.0] * (2 - len(temperatures))
    status = (
        (STATUS_CHARGE_MOS if state.charge_mos_on else 0)
        | (STATUS_DISCHARGE_MOS if state.discharge_mos_on else 0)
        | (STATUS_BALANCER if state.balancer_on else 0)
    )
    known: dict[str, FieldValue | bool | None] = {
        CELLS_NAME: tuple(state.cell_voltages_v),
        "mos_temperature_c": state.mos_temperature_c,
        "temperature_1_c": temperatures[0],
        "temperature_2_c": temperatures[1],
        "pack_voltage_v": state.pack_voltage_v,
        CURRENT_NAME: state.current_a,
        "soc_pct": round(state.soc_pct),
        "temperature_sensor_count": fitted,
        "cycle_count": state.cycle_count,
        "cycle_capacity_ah": state.cycle_capacity_ah,
        "cell_count": state.cell_count,
        "warnings": warnings_from_alarms(state.alarms),
        "status": status,
        "balancer_switch": settings.balancer_enabled,
        "cell_count_setting": settings.cell_count,
        "capacity_ah": settings.capacity_ah,
        "battery_type": None if settings.battery_type is None else CHEMISTRY_CODES[settings.battery_type],
        "charge_mos_switch": settings.charge_mos_switch,
        "discharge_mos_switch": settings.discharge_mos_switch,
        "manufacture_date": device.manufacture_date or "2401",
        "runtime_min": None if state.runtime_s is None else state.runtime_s // 60,
        "software_version": device.software_version or "SIM_S11.26",
        "manufacturer": device.model or "bms-gateway simulator",
    }
    fields: dict[str, FieldValue] = {}
    for name in (CELLS_NAME, *TAG_BY_NAME):
        if name in known:
            value = known[name]
        elif name in extras:
            value = extras[name]
        else:
            value = getattr(settings, name, None)
        if isinstance(value, bool):
            value = int(value)
        fields[name] = 0 if value is None else value
    return JkNwReply(fields=MappingProxyType(fields))


def _int_or_none(value: int | float | None) -> int | None:
    return None if value is None else int(value)


def _bool_or_none(value: int | float | None) -> bool | None:
    return None if value is None else bool(value)
