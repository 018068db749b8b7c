"""One fixed set of published values for encoding frames in tests (monitor, export-dbc round trip).

Every name in gateway.values gets a value, and with a profile so does every name its fields carry (inverter
values among them), so any profile, also one added later, encodes; a number not listed here gets
:data:`FALLBACK_NUMBER`. Numbers are inside the usual field ranges and
carry the decimals a 0.1 or 0.01 scale resolves; one current is negative, to exercise signed fields.
"""

from __future__ import annotations

from typing import Final

from gateway.profiles import Profile
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, TEXT_VALUES, Value

NUMBERS: Final[dict[str, float]] = {
    "charge_voltage_limit_v": 55.2,
    "charge_current_limit_a": 87.3,
    "discharge_current_limit_a": 123.4,
    "discharge_voltage_limit_v": 44.8,
    "soc_pct": 67,
    "soh_pct": 98,
    "pack_voltage_v": 52.34,
    "current_a": -23.4,
    "temperature_c": 21.7,
    "max_temperature_c": 24.5,
    "min_temperature_c": 18.2,
    "max_cell_v": 3.312,
    "min_cell_v": 3.287,
    "capacity_ah": 280,
    "remaining_capacity_ah": 187.6,
    "cycle_count": 42,
    "module_count": 1,
    # What inverter frames carry (SMA 0x305/0x306 style).
    "inverter_voltage_v": 52.1,
    "inverter_current_a": -12.3,
    "inverter_temperature_c": 23.4,
    "inverter_soc_pct": 66,
    "inverter_soh_pct": 97,
    "inverter_charge_voltage_setpoint_v": 55.0,
    "inverter_charge_procedure": 1,
    "inverter_operating_state": 2,
    "inverter_error_code": 0,
    "inverter_power_w": -640,
}
FALLBACK_NUMBER: Final = 12.5
TEXTS: Final[dict[str, str]] = {
    "min_cell_name": "Cell 03",
    "max_cell_name": "Cell 14",
    "min_temperature_name": "Temp 2",
    "max_temperature_name": "Temp 1",
}
FLAGS: Final[dict[str, bool]] = {
    "charge_enable": True,
    "discharge_enable": False,
    "force_charge": True,
    "full_charge_request": False,
    "comm_alarm": True,
}


def fixed_values(profile: Profile | None = None) -> dict[str, Value]:
    """Every published value name (and every name ``profile``'s fields carry) → a fixed value; flags not in
    :data:`FLAGS` alternate by sorted name."""
    numbers = set(NUMERIC_VALUES)
    flags = set(FLAG_VALUES)
    if profile is not None:
        for codec in (*profile.frames, *profile.inverter_frames):
            for field in codec.spec.fields:
                numbers.update([field.value] if field.value is not None and field.value not in TEXT_VALUES else [])
                flags.update(field.flags)
    values: dict[str, Value] = {name: NUMBERS.get(name, FALLBACK_NUMBER) for name in sorted(numbers)}
    values.update(TEXTS)
    for index, name in enumerate(sorted(flags)):
        values[name] = FLAGS.get(name, index % 2 == 0)
    return values
