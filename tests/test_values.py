"""The published values every profile draws on: chemistry, direction, cell count, and where the extremes sit.

The four-pack battery of ``multipack_fixtures`` is worked out by hand in its docstring: highest cell 3.350 V in
pack 2 cell 7, lowest 3.280 V in pack 3 cell 3, hottest sensor 30 °C in pack 3 T1, coldest 19 °C in pack 4 T2.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from multipack_fixtures import four_at

from gateway.battery import aggregate
from gateway.model import Chemistry, Limits, PackReading
from gateway.rs485.fields import FieldKind, FieldSpec, encode_field
from gateway.values import TEXT_VALUES, location_names, published_values

LIMITS = Limits(
    computed_at_s=0.0,
    charge_voltage_limit_v=55.2,
    charge_current_limit_a=100.0,
    discharge_current_limit_a=100.0,
    discharge_voltage_limit_v=44.8,
    charge_enable=True,
    discharge_enable=True,
)


def one_pack() -> PackReading:
    return four_at(0.0)[1]  # pack 2: #7 at 3.350 V, the rest 3.300 V; T1 26 °C, T2 25 °C


def test_one_pack_names_the_cell_and_sensor() -> None:
    # Pack 2 alone: highest cell 7, lowest the first of the equal 3.300 V cells (1); T1 hottest, T2 coldest.
    assert location_names(one_pack()) == {
        "min_cell_name": "Cell 01",
        "max_cell_name": "Cell 07",
        "min_temperature_name": "Temp 2",
        "max_temperature_name": "Temp 1",
    }


def test_a_battery_of_several_packs_names_the_pack_too() -> None:
    battery = aggregate(four_at(0.0))
    names = location_names(battery.reading, battery.extremes, battery.online)
    assert names == {
        "min_cell_name": "P3 C03",
        "max_cell_name": "P2 C07",
        "min_temperature_name": "P4 T2",
        "max_temperature_name": "P3 T1",
    }
    assert all(len(text) <= 8 for text in names.values()), "each fits a CAN frame"


def test_without_battery_sensors_the_mos_sensor_is_named() -> None:
    reading = one_pack()
    reading = replace(reading, state=replace(reading.state, battery_temperatures_c=(None, None)))
    names = location_names(reading)
    assert names["min_temperature_name"] == names["max_temperature_name"] == "MOS"


def test_published_values_carry_the_texts() -> None:
    values = published_values(one_pack(), LIMITS)
    assert {name: values[name] for name in TEXT_VALUES} == location_names(one_pack())


@pytest.mark.parametrize(
    ("current_a", "direction"), [(20.0, "is_charging"), (-3.0, "is_discharging"), (0.4, "is_idle"), (-0.5, "is_idle")]
)
def test_direction_flags(current_a: float, direction: str) -> None:
    reading = one_pack()
    values = published_values(replace(reading, state=replace(reading.state, current_a=current_a)), LIMITS)
    assert [name for name in ("is_charging", "is_discharging", "is_idle") if values[name]] == [direction]


@pytest.mark.parametrize(
    ("battery_type", "cell_ovp_v", "chemistry"),
    [
        (Chemistry.LTO, 3.65, "lto"),  # the BMS's setting wins
        (None, 3.65, "lifepo4"),  # else what the OVP implies
        (None, 4.20, "li_ion"),
        (None, 2.85, "lto"),
    ],
)
def test_chemistry_flags(battery_type: Chemistry | None, cell_ovp_v: float, chemistry: str) -> None:
    reading = one_pack()
    settings = replace(reading.settings, battery_type=battery_type, cell_ovp_v=cell_ovp_v)
    values = published_values(replace(reading, settings=settings), LIMITS)
    assert [c for c in Chemistry if values[f"chemistry_{c.value}"]] == [Chemistry(chemistry)]


def test_cell_count_is_the_setting_else_the_cells_reported() -> None:
    reading = one_pack()
    assert published_values(reading, LIMITS)["cell_count"] == 16
    unset = replace(reading, settings=replace(reading.settings, cell_count=0))
    assert published_values(unset, LIMITS)["cell_count"] == len(reading.state.cell_voltages_v)


def test_an_enable_beside_a_limit_the_wire_cannot_show_is_cleared() -> None:
    # Audit battery-safety P11: an engine CCL of 0.03 A went out as 0.0 A with the charge enable set. Every field
    # carries the current limits in 0.1 A at best, so the enable now follows the limit as the wire shows it.
    tiny = replace(LIMITS, charge_current_limit_a=0.03, discharge_current_limit_a=0.09, force_charge=True)
    values = published_values(one_pack(), tiny)
    assert (values["charge_enable"], values["discharge_enable"], values["force_charge"]) == (False, False, False)
    enough = replace(LIMITS, charge_current_limit_a=0.1, discharge_current_limit_a=0.1)
    values = published_values(one_pack(), enough)
    assert (values["charge_enable"], values["discharge_enable"]) == (True, True)


def test_a_negative_dcl_on_the_wire_rounds_towards_zero() -> None:
    # Pylontech 0x92 sends the DCL negative in 0.1 A (capture "FDD5" = -55.5 A): 55.55 A may go out as 55.5 A,
    # never as 55.6 A (round to nearest gave -556).
    spec = FieldSpec(
        name="dcl",
        kind=FieldKind.NUMBER,
        size=2,
        value="discharge_current_limit_a",
        scale=0.1,
        signed=True,
        negate=True,
    )
    assert encode_field(spec, {"discharge_current_limit_a": 55.55}) == bytes.fromhex("FDD5")
    assert encode_field(spec, {"discharge_current_limit_a": 55.5}) == bytes.fromhex("FDD5")
