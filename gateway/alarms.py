"""Every alarm of every supported BMS protocol, in one table.

Each row says which bit carries the alarm in the JK wired protocol (warning bitmask, tag 0x8B) and in the
JK-PB Modbus protocol (alarm bitmap, live block offset 0xA0), which current direction it blocks, and which
inverter-facing fault group it raises. Codecs take their bit maps from here, the limits engine its blocking
rule, and profiles the ``fault_*`` flags (:data:`FAULT_GROUPS`): one place, so that a new alarm cannot be
decoded and then forgotten by the limits.

Rules: a protection that trips on one side blocks that side; anything that means the BMS cannot be trusted
(an internal fault, a MOS fault, a sensor fault, an undocumented protection) blocks both; a reminder that
forbids nothing (low capacity, GPS module unplugged) blocks neither.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


class Side(enum.Flag):
    """Which direction of current an alarm forbids."""

    NONE = 0
    CHARGE = enum.auto()
    DISCHARGE = enum.auto()
    BOTH = CHARGE | DISCHARGE


class FaultGroup(enum.StrEnum):
    """The coarse alarm classes that inverter protocols carry (Pylontech 0x359, SMA 0x35A, ...)."""

    NONE = "none"
    OVER_VOLTAGE = "over_voltage"
    UNDER_VOLTAGE = "under_voltage"
    OVER_TEMPERATURE = "over_temperature"
    UNDER_TEMPERATURE = "under_temperature"
    CHARGE_OVER_CURRENT = "charge_over_current"
    DISCHARGE_OVER_CURRENT = "discharge_over_current"
    CELL_IMBALANCE = "cell_imbalance"
    SYSTEM = "system"
    """A BMS-internal fault, or a protection whose meaning is not documented."""


class Alarm(enum.StrEnum):
    """Alarm and protection states, named once for every BMS protocol (see :data:`ALARM_TABLE`)."""

    LOW_CAPACITY = "low_capacity"
    MOS_OVER_TEMPERATURE = "mos_over_temperature"
    CHARGE_OVER_VOLTAGE = "charge_over_voltage"
    DISCHARGE_UNDER_VOLTAGE = "discharge_under_voltage"
    BATTERY_OVER_TEMPERATURE = "battery_over_temperature"
    CHARGE_OVER_CURRENT = "charge_over_current"
    DISCHARGE_OVER_CURRENT = "discharge_over_current"
    CELL_VOLTAGE_DIFFERENCE = "cell_voltage_difference"
    BOX_OVER_TEMPERATURE = "box_over_temperature"
    BATTERY_UNDER_TEMPERATURE = "battery_under_temperature"
    CELL_OVER_VOLTAGE = "cell_over_voltage"
    CELL_UNDER_VOLTAGE = "cell_under_voltage"
    PROTECTION_309_A = "protection_309_a"
    PROTECTION_309_B = "protection_309_b"
    # JK-PB only
    BALANCE_WIRE_RESISTANCE = "balance_wire_resistance"
    CELL_COUNT_MISMATCH = "cell_count_mismatch"
    CURRENT_SENSOR_FAULT = "current_sensor_fault"
    PACK_OVER_VOLTAGE = "pack_over_voltage"
    CHARGE_SHORT_CIRCUIT = "charge_short_circuit"
    CHARGE_OVER_TEMPERATURE = "charge_over_temperature"
    INTERNAL_COMMUNICATION = "internal_communication"
    PACK_UNDER_VOLTAGE = "pack_under_voltage"
    DISCHARGE_SHORT_CIRCUIT = "discharge_short_circuit"
    DISCHARGE_OVER_TEMPERATURE = "discharge_over_temperature"
    CHARGE_MOS_FAULT = "charge_mos_fault"
    DISCHARGE_MOS_FAULT = "discharge_mos_fault"
    GPS_DISCONNECTED = "gps_disconnected"
    PASSWORD_CHANGE_DUE = "password_change_due"
    DISCHARGE_ON_FAILED = "discharge_on_failed"
    TEMPERATURE_SENSOR_FAULT = "temperature_sensor_fault"
    PARALLEL_MODULE_FAULT = "parallel_module_fault"

    @property
    def blocks(self) -> Side:
        """The current direction this alarm forbids while active."""
        return ALARM_TABLE[self].blocks

    @property
    def fault_group(self) -> FaultGroup:
        return ALARM_TABLE[self].fault_group


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    wired_bit: int | None
    """Bit in the JK wired warning bitmask (tag 0x8B), or None."""
    pb_bit: int | None
    """Bit in the JK-PB alarm bitmap (live block offset 0xA0), or None."""
    blocks: Side
    fault_group: FaultGroup


_C, _D, _B, _N = Side.CHARGE, Side.DISCHARGE, Side.BOTH, Side.NONE
_G = FaultGroup

ALARM_TABLE: Final[Mapping[Alarm, AlarmSpec]] = MappingProxyType(
    {
        #                                    wired  PB   blocks  fault group
        Alarm.LOW_CAPACITY: AlarmSpec(0, None, _N, _G.NONE),
        Alarm.MOS_OVER_TEMPERATURE: AlarmSpec(1, 1, _B, _G.OVER_TEMPERATURE),
        Alarm.CHARGE_OVER_VOLTAGE: AlarmSpec(2, None, _C, _G.OVER_VOLTAGE),
        Alarm.DISCHARGE_UNDER_VOLTAGE: AlarmSpec(3, None, _D, _G.UNDER_VOLTAGE),
        Alarm.BATTERY_OVER_TEMPERATURE: AlarmSpec(4, 21, _B, _G.OVER_TEMPERATURE),
        Alarm.CHARGE_OVER_CURRENT: AlarmSpec(5, 6, _C, _G.CHARGE_OVER_CURRENT),
        Alarm.DISCHARGE_OVER_CURRENT: AlarmSpec(6, 13, _D, _G.DISCHARGE_OVER_CURRENT),
        # A delta large enough for the BMS to protect on trips both sides.
        Alarm.CELL_VOLTAGE_DIFFERENCE: AlarmSpec(7, None, _B, _G.CELL_IMBALANCE),
        Alarm.BOX_OVER_TEMPERATURE: AlarmSpec(8, None, _B, _G.OVER_TEMPERATURE),
        # Wired bit 9 and PB bit 9 are both the charge under-temperature protection.
        Alarm.BATTERY_UNDER_TEMPERATURE: AlarmSpec(9, 9, _C, _G.UNDER_TEMPERATURE),
        Alarm.CELL_OVER_VOLTAGE: AlarmSpec(10, 4, _C, _G.OVER_VOLTAGE),
        Alarm.CELL_UNDER_VOLTAGE: AlarmSpec(11, 11, _D, _G.UNDER_VOLTAGE),
        # Meaning undocumented by JK: an unknown protection blocks both.
        Alarm.PROTECTION_309_A: AlarmSpec(12, None, _B, _G.SYSTEM),
        Alarm.PROTECTION_309_B: AlarmSpec(13, None, _B, _G.SYSTEM),
        # Cell voltages cannot be trusted with a bad sense wire.
        Alarm.BALANCE_WIRE_RESISTANCE: AlarmSpec(None, 0, _B, _G.SYSTEM),
        Alarm.CELL_COUNT_MISMATCH: AlarmSpec(None, 2, _B, _G.SYSTEM),
        Alarm.CURRENT_SENSOR_FAULT: AlarmSpec(None, 3, _B, _G.SYSTEM),
        Alarm.PACK_OVER_VOLTAGE: AlarmSpec(None, 5, _C, _G.OVER_VOLTAGE),
        Alarm.CHARGE_SHORT_CIRCUIT: AlarmSpec(None, 7, _C, _G.CHARGE_OVER_CURRENT),
        Alarm.CHARGE_OVER_TEMPERATURE: AlarmSpec(None, 8, _C, _G.OVER_TEMPERATURE),
        Alarm.INTERNAL_COMMUNICATION: AlarmSpec(None, 10, _B, _G.SYSTEM),
        Alarm.PACK_UNDER_VOLTAGE: AlarmSpec(None, 12, _D, _G.UNDER_VOLTAGE),
        Alarm.DISCHARGE_SHORT_CIRCUIT: AlarmSpec(None, 14, _D, _G.DISCHARGE_OVER_CURRENT),
        Alarm.DISCHARGE_OVER_TEMPERATURE: AlarmSpec(None, 15, _D, _G.OVER_TEMPERATURE),
        Alarm.CHARGE_MOS_FAULT: AlarmSpec(None, 16, _B, _G.SYSTEM),
        Alarm.DISCHARGE_MOS_FAULT: AlarmSpec(None, 17, _B, _G.SYSTEM),
        Alarm.GPS_DISCONNECTED: AlarmSpec(None, 18, _N, _G.NONE),
        Alarm.PASSWORD_CHANGE_DUE: AlarmSpec(None, 19, _N, _G.NONE),
        Alarm.DISCHARGE_ON_FAILED: AlarmSpec(None, 20, _D, _G.SYSTEM),
        # Temperature windows cannot be enforced on a faulty sensor.
        Alarm.TEMPERATURE_SENSOR_FAULT: AlarmSpec(None, 22, _B, _G.SYSTEM),
        Alarm.PARALLEL_MODULE_FAULT: AlarmSpec(None, 23, _B, _G.SYSTEM),
    }
)

WIRED_WARNING_BITS: Final[Mapping[int, Alarm]] = MappingProxyType(
    {spec.wired_bit: alarm for alarm, spec in ALARM_TABLE.items() if spec.wired_bit is not None}
)
"""JK wired protocol, tag 0x8B: bit → alarm."""
PB_ALARM_BITS: Final[Mapping[int, Alarm]] = MappingProxyType(
    {spec.pb_bit: alarm for alarm, spec in ALARM_TABLE.items() if spec.pb_bit is not None}
)
"""JK-PB, live block offset 0xA0: bit → alarm."""
FAULT_GROUPS: Final = tuple(group for group in FaultGroup if group is not FaultGroup.NONE)
"""The groups a profile may carry as ``fault_<group>`` flags."""


def blocked_sides(alarms: Iterable[Alarm]) -> Side:
    """The union of the sides that ``alarms`` forbid."""
    side = Side.NONE
    for alarm in alarms:
        side |= alarm.blocks
    return side


def active_fault_groups(alarms: Iterable[Alarm]) -> frozenset[FaultGroup]:
    return frozenset(alarm.fault_group for alarm in alarms) - {FaultGroup.NONE}
