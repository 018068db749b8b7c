"""The JK-PB's blocks to and from the domain model: which fields a poll reads (:data:`POLL_PLAN`), decoded
fields to :class:`~gateway.model.BatteryState`, :class:`~gateway.model.ProtectionSettings` and
:class:`~gateway.model.DeviceInfo` (:func:`to_state`, :func:`to_settings`, :func:`to_device`), and the
inverse the simulator serves (:func:`values_from_reading`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.alarms import PB_ALARM_BITS
from gateway.bms.jk_modbus_frames import Read, read_plan
from gateway.bms.jk_modbus_image import Value
from gateway.bms.jk_modbus_tables import (
    INFO,
    LIVE,
    MAX_CELLS,
    SETTINGS,
    SETTINGS_PASSCODE,
    SETTINGS_PASSCODE_NAME,
    TEMPERATURE_SENSORS,
    Block,
    Field,
)
from gateway.errors import FrameError
from gateway.model import Alarm, BatteryState, DeviceInfo, PackReading, ProtectionSettings
from gateway.secret import Secret

LIVE_POLLED: Final = (
    "cell_voltages_v",
    "cell_present_bitmap",
    "mos_temperature_c",
    "pack_voltage_v",
    "current_a",
    "temperature_1_c",
    "temperature_2_c",
    "alarm_bitmap",
    "balance_current_a",
    "balance_state",
    "soc_pct",
    "remaining_capacity_ah",
    "cycle_count",
    "cycle_capacity_ah",
    "soh_pct",
    "runtime_s",
    "charge_mos_on",
    "discharge_mos_on",
    "temperature_sensor_bits",
    "temperature_3_c",
    "temperature_4_c",
    "temperature_5_c",
)
"""The live fields :func:`to_state` uses: what the driver reads every poll."""

_SETTINGS_TO_MODEL: Final[Mapping[str, str]] = MappingProxyType(
    {
        name: name
        for name in (
            "cell_count",
            "capacity_ah",
            "cell_ovp_v",
            "cell_ovpr_v",
            "cell_uvp_v",
            "cell_uvpr_v",
            "max_charge_current_a",
            "max_discharge_current_a",
            "power_off_v",
            "charge_ocp_delay_s",
            "charge_ocp_recovery_s",
            "discharge_ocp_delay_s",
            "discharge_ocp_recovery_s",
            "scp_recovery_s",
            "balance_start_v",
            "balance_trigger_v",
            "max_balance_current_a",
            "charge_otp_c",
            "charge_otpr_c",
            "discharge_otp_c",
            "discharge_otpr_c",
            "charge_utp_c",
            "charge_utpr_c",
            "mos_otp_c",
            "mos_otpr_c",
        )
    }
    | {
        "balancer_switch": "balancer_enabled",
        "charge_switch": "charge_mos_switch",
        "discharge_switch": "discharge_mos_switch",
    }
)
"""Settings field → :class:`ProtectionSettings` field."""
SETTINGS_POLLED: Final = tuple(_SETTINGS_TO_MODEL)
_SWITCHES: Final = frozenset({"balancer_switch", "charge_switch", "discharge_switch"})
_REQUIRED_SETTINGS: Final = (
    "cell_count",
    "cell_ovp_v",
    "cell_ovpr_v",
    "cell_uvp_v",
    "cell_uvpr_v",
    "max_charge_current_a",
    "max_discharge_current_a",
)
SETTINGS_NOT_CARRIED: Final = frozenset(
    f.name
    for f in dataclasses.fields(ProtectionSettings)
    if f.name not in _SETTINGS_TO_MODEL.values() and f.name != "measured_at_s"
)
""":class:`ProtectionSettings` fields a JK-PB does not report: always None from this codec."""

INFO_POLLED: Final = ("model", "hardware_version", "software_version", "manufacture_date", "serial_number")

SETTINGS_PASSCODE_READ: Final = Read(INFO.address(SETTINGS_PASSCODE_NAME), SETTINGS_PASSCODE.size // 2)
"""The FC03 read of the settings passcode (0x1470, 8 words): made only for opt-in control, never by a poll."""

POLL_PLAN: Final[Mapping[Block, tuple[Read, ...]]] = MappingProxyType(
    {
        LIVE: read_plan(LIVE, LIVE_POLLED),
        SETTINGS: read_plan(SETTINGS, SETTINGS_POLLED),
        INFO: read_plan(INFO, INFO_POLLED),
    }
)
"""What the driver reads of each block over FC03."""

_TEMPERATURE_NAMES: Final = tuple(f"temperature_{n}_c" for n in range(1, TEMPERATURE_SENSORS + 1))
MOS_SENSOR_BIT: Final = 1 << 0


def _number(values: Mapping[str, Value], name: str, block: Block) -> int | float:
    value = values.get(name)
    if not isinstance(value, int | float):
        raise FrameError("missing field", f"{block.name} block lacks {name} (0x{block.address(name):04X})")
    return value


def _optional(values: Mapping[str, Value], name: str) -> float | None:
    value = values.get(name)
    return float(value) if isinstance(value, int | float) else None


def _int(values: Mapping[str, Value], name: str, default: int) -> int:
    value = values.get(name)
    return int(value) if isinstance(value, int | float) else default


def alarms_from_bitmap(bitmap: int) -> frozenset[Alarm]:
    """Alarm bitmap (live 0xA0) → alarms; bits the protocol leaves undefined are ignored."""
    return frozenset(alarm for bit, alarm in PB_ALARM_BITS.items() if bitmap >> bit & 1)


def bitmap_from_alarms(alarms: Iterable[Alarm]) -> int:
    """Inverse of :func:`alarms_from_bitmap`; alarms without a JK-PB bit are dropped."""
    wanted = frozenset(alarms)
    return sum(1 << bit for bit, alarm in PB_ALARM_BITS.items() if alarm in wanted)


def to_state(live: Mapping[str, Value], measured_at_s: float) -> BatteryState:
    """Decoded live fields → the pack's state, stamped with the monotonic time of the reply.

    The cell count is the highest cell present in the bitmap; a cell missing below it keeps its slot.

    :raises FrameError: a field the model needs is missing, or no cell is present.
    """
    cells = live.get("cell_voltages_v")
    if not isinstance(cells, tuple):
        raise FrameError("missing field", f"live block lacks cell_voltages_v (0x{LIVE.base:04X})")
    count = int(_number(live, "cell_present_bitmap", LIVE)).bit_length()
    if count == 0:
        raise FrameError("no cells", "the cell-present bitmap (0x1240) is 0")
    sensors = _int(live, "temperature_sensor_bits", 0xFF)  # firmware without the bits: all fitted
    temperatures = [
        _optional(live, name) if sensors >> (index + 1) & 1 else None for index, name in enumerate(_TEMPERATURE_NAMES)
    ]
    while temperatures and temperatures[-1] is None:
        temperatures.pop()  # sensors the pack does not have, rather than sensors that failed
    return BatteryState(
        measured_at_s=measured_at_s,
        cell_voltages_v=tuple(float(v) for v in cells[:count]),
        pack_voltage_v=float(_number(live, "pack_voltage_v", LIVE)),
        current_a=float(_number(live, "current_a", LIVE)),
        soc_pct=float(_number(live, "soc_pct", LIVE)),
        soh_pct=_optional(live, "soh_pct"),
        remaining_capacity_ah=_optional(live, "remaining_capacity_ah"),
        cycle_count=None if "cycle_count" not in live else _int(live, "cycle_count", 0),
        cycle_capacity_ah=_optional(live, "cycle_capacity_ah"),
        mos_temperature_c=_optional(live, "mos_temperature_c") if sensors & MOS_SENSOR_BIT else None,
        battery_temperatures_c=tuple(temperatures),
        charge_mos_on=bool(_int(live, "charge_mos_on", 0)),
        discharge_mos_on=bool(_int(live, "discharge_mos_on", 0)),
        balancer_on=bool(_int(live, "balance_state", 0)),
        balance_current_a=_optional(live, "balance_current_a"),
        alarms=alarms_from_bitmap(_int(live, "alarm_bitmap", 0)),
        runtime_s=_optional(live, "runtime_s"),
    )


def to_settings(settings: Mapping[str, Value], measured_at_s: float) -> ProtectionSettings:
    """Decoded settings fields → protection settings; what a JK-PB lacks (:data:`SETTINGS_NOT_CARRIED`) is None.

    :raises FrameError: a setting the model requires is missing.
    """
    for name in _REQUIRED_SETTINGS:
        _number(settings, name, SETTINGS)
    values: dict[str, Any] = {}
    for name, model_name in _SETTINGS_TO_MODEL.items():
        value = _optional(settings, name)
        values[model_name] = bool(value) if name in _SWITCHES and value is not None else value
    values["cell_count"] = int(_number(settings, "cell_count", SETTINGS))
    return ProtectionSettings(measured_at_s=measured_at_s, battery_type=None, **values)


def to_device(info: Mapping[str, Value]) -> DeviceInfo:
    """Decoded info fields → what the BMS says about itself (empty text is None).

    ``serial_number`` is the factory serial at 0x50; the text at 0x28, which the research notes call the
    serial number, is a name the user can set (``device_name``), so it is not used as one.
    """

    def text(name: str) -> str | None:
        value = info.get(name)
        return value if isinstance(value, str) and value else None

    return DeviceInfo(
        model=text("model"),
        software_version=text("software_version"),
        hardware_version=text("hardware_version"),
        serial_number=text("serial_number"),
        manufacture_date=text("manufacture_date"),
    )


SIMULATOR_DEVICE: Final = DeviceInfo(
    model="JK_PB-SIMULATOR", hardware_version="15A", software_version="SIM15.41", manufacture_date="240101"
)
"""Device texts the simulator uses where the reading's do not fit the JK-PB fields."""
SIMULATOR_EXTRAS: Final[Mapping[str, Value]] = MappingProxyType(
    {
        "smart_sleep_v": 3.5,
        "soc_100_v": 3.45,
        "soc_0_v": 2.9,
        "request_charge_v": 3.45,
        "request_float_v": 3.35,
        "scp_delay_us": 1500,
        "control_bits": 0x0208,  # RS485 port, float mode
        "device_passcode": Secret("1234"),
        "setup_passcode": Secret("S1mPa55code"),
        "device_name": "bms-gateway-sim",
        "user_data": "JK-BMS",
    }
)
"""Values for fields the domain model does not hold, used when the simulator builds a pack's blocks."""


def _fit(text: str | None, spec: Field, fallback: str | None) -> str:
    if text is not None and len(text.encode("latin-1", "replace")) <= spec.length:
        return text
    return fallback or ""


def values_from_reading(
    reading: PackReading, extras: Mapping[str, Value] = SIMULATOR_EXTRAS
) -> Mapping[Block, Mapping[str, Value]]:
    """The fields a JK-PB would report for ``reading``, per block: the inverse of :func:`to_state`,
    :func:`to_settings` and :func:`to_device` for everything the protocol carries.

    PB-only values the model lacks come from ``extras``; a model value that is None is sent as 0, except
    SOH (100 %) and remaining capacity (capacity × SOC).
    """
    state, settings, device = reading.state, reading.settings, reading.device
    cells = state.cell_voltages_v
    temperatures = (*state.battery_temperatures_c[:TEMPERATURE_SENSORS], None, None, None, None, None)
    sensor_bits = (MOS_SENSOR_BIT if state.mos_temperature_c is not None else 0) | sum(
        1 << (i + 1) for i, t in enumerate(temperatures[:TEMPERATURE_SENSORS]) if t is not None
    )
    capacity_ah = settings.capacity_ah or 0.0
    remaining = state.remaining_capacity_ah
    live: dict[str, Value] = {
        "cell_voltages_v": (*cells, *(0.0,) * (MAX_CELLS - len(cells))),
        "cell_present_bitmap": (1 << len(cells)) - 1,
        "average_cell_v": state.average_cell_v if cells else 0.0,
        "cell_delta_v": state.cell_delta_v if cells else 0.0,
        "max_cell_index": cells.index(state.max_cell_v) if cells else 0,
        "min_cell_index": cells.index(state.min_cell_v) if cells else 0,
        "wire_resistances_ohm": (0.05,) * MAX_CELLS,
        "mos_temperature_c": state.mos_temperature_c or 0.0,
        "pack_voltage_v": state.pack_voltage_v,
        "power_w": abs(state.power_w),
        "current_a": state.current_a,
        **{name: t or 0.0 for name, t in zip(_TEMPERATURE_NAMES, temperatures, strict=False)},
        "alarm_bitmap": bitmap_from_alarms(state.alarms),
        "balance_current_a": state.balance_current_a or 0.0,
        "balance_state": 1 if state.balancer_on else 0,
        "soc_pct": round(state.soc_pct),
        "remaining_capacity_ah": capacity_ah * state.soc_pct / 100 if remaining is None else remaining,
        "full_charge_capacity_ah": capacity_ah,
        "cycle_count": state.cycle_count or 0,
        "cycle_capacity_ah": state.cycle_capacity_ah or 0.0,
        "soh_pct": 100 if state.soh_pct is None else round(state.soh_pct),
        "runtime_s": round(state.runtime_s or 0),
        "charge_mos_on": int(state.charge_mos_on),
        "discharge_mos_on": int(state.discharge_mos_on),
        "temperature_sensor_bits": sensor_bits,
        "pack_voltage_2_v": state.pack_voltage_v,
        "system_ticks_s": round(state.runtime_s or 0),
    }
    settings_values: dict[str, Value] = {}
    for name, model_name in _SETTINGS_TO_MODEL.items():
        value = getattr(settings, model_name)
        settings_values[name] = 0 if value is None else int(value) if isinstance(value, bool) else value
    info: dict[str, Value] = {
        "model": _fit(device.model, INFO.by_name["model"], SIMULATOR_DEVICE.model),
        "hardware_version": _fit(
            device.hardware_version, INFO.by_name["hardware_version"], SIMULATOR_DEVICE.hardware_version
        ),
        "software_version": _fit(
            device.software_version, INFO.by_name["software_version"], SIMULATOR_DEVICE.software_version
        ),
        "manufacture_date": _fit(
            device.manufacture_date, INFO.by_name["manufacture_date"], SIMULATOR_DEVICE.manufacture_date
        ),
        "serial_number": _fit(device.serial_number, INFO.by_name["serial_number"], ""),
        "info_runtime_s": round(state.runtime_s or 0),
    }
    out: dict[Block, dict[str, Value]] = {LIVE: live, SETTINGS: settings_values, INFO: info}
    for name, value in extras.items():
        for block, values in out.items():
            if name in block.by_name and name not in values:
                values[name] = value
    return MappingProxyType({block: MappingProxyType(values) for block, values in out.items()})
