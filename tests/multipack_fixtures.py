"""Four JK-PB packs in parallel, different enough that every aggregation rule shows in the numbers.

All are 16S LiFePO4 with the simulator's base settings (OVP 3.65, UVP 2.70 / UVPR 2.90, max charge 150 A, max
discharge 200 A, 280 Ah), except where noted. With user caps of 1000 A each pack's own limits are 0.9 × its BMS
max: 135 A charge (pack 4: 0.9 × 100 = 90 A), 180 A discharge; CVL 16 × 3.45 = 55.2 V; DVL 16 × (UVP + 0.10) =
44.8 V (pack 3: 16 × 2.90 = 46.4 V).

=====  =====================  ======  =====  ====  =============  =====  ===============================
pack   cells (V)              pack V  I (A)  SOC   T1 / T2 (°C)   MOS    settings that differ
=====  =====================  ======  =====  ====  =============  =====  ===============================
1      15 × 3.300, #16 3.310  52.81   25     60    25 / 24        30
2      #7 3.350, else 3.300   52.85   20     50    26 / 25        31
3      #3 3.280, else 3.300   52.78   10     18    30 / 29        35     140 Ah, UVP 2.80
4      16 × 3.300             52.80   15     70    20 / 19        28     max charge 100 A
=====  =====================  ======  =====  ====  =============  =====  ===============================

The battery, by hand: pack voltage (52.81 + 52.85 + 52.78 + 52.80) / 4 = 52.81 V; current 25 + 20 + 10 + 15 =
70 A; capacity 280 + 280 + 140 + 280 = 980 Ah; SOC by capacity (60·2 + 50·2 + 18·1 + 70·2) / 7 = 378 / 7 = 54 %;
remaining 168 + 140 + 25.2 + 196 = 529.2 Ah; highest cell 3.350 V (pack 2, cell 7), lowest 3.280 V (pack 3, cell
3); temperature: the mean of the eight sensors 198 / 8 = 24.75 °C, hottest 30 °C (pack 3, T1), coldest 19 °C
(pack 4, T2); hottest MOS 35 °C (pack 3). Limits (equal sharing): CCL 4 × min(135, 135, 135, 90) = 360 A, set by
pack 4; DCL 4 × 180 = 720 A; CVL min = 55.2 V; DVL max = 46.4 V (pack 3).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from gateway.limits import LimitsSettings
from gateway.limits.settings import CurrentSharing
from gateway.model import BatteryState, DeviceInfo, PackReading
from gateway.sim.scenarios import Scenario, Step, base_settings

TUNING: Final = LimitsSettings(
    max_charge_current_a=1000.0, max_discharge_current_a=1000.0, current_sharing=CurrentSharing.EQUAL
)
"""User caps above anything the packs allow: each pack's own limits are 0.9 × its BMS max. Equal sharing, as the
numbers above are worked out (the default ``auto`` shares these packs by capacity: pack 3 has 140 Ah)."""
DEVICE: Final = DeviceInfo(model="JK_PB2A16S20P", software_version="15.41", hardware_version="15A")


def _cells(special: dict[int, float] | None = None) -> tuple[float, ...]:
    cells = [3.300] * 16
    for number, volts in (special or {}).items():
        cells[number - 1] = volts
    return tuple(cells)


def pack(
    cells: tuple[float, ...],
    *,
    soc_pct: float,
    current_a: float,
    temperatures_c: tuple[float, float],
    mos_c: float,
    at_s: float = 0.0,
    pack_id: str = "sim",
    **settings: Any,
) -> PackReading:
    state = BatteryState(
        measured_at_s=at_s,
        cell_voltages_v=cells,
        pack_voltage_v=round(sum(cells), 2),
        current_a=current_a,
        soc_pct=soc_pct,
        cycle_count=10,
        mos_temperature_c=mos_c,
        battery_temperatures_c=temperatures_c,
        charge_mos_on=True,
        discharge_mos_on=True,
    )
    return PackReading(pack_id, state, replace(base_settings(), measured_at_s=at_s, **settings), DEVICE)


FOUR: Final[dict[int, PackReading]] = {
    1: pack(_cells({16: 3.310}), soc_pct=60, current_a=25.0, temperatures_c=(25.0, 24.0), mos_c=30.0),
    2: pack(_cells({7: 3.350}), soc_pct=50, current_a=20.0, temperatures_c=(26.0, 25.0), mos_c=31.0),
    3: pack(
        _cells({3: 3.280}),
        soc_pct=18,
        current_a=10.0,
        temperatures_c=(30.0, 29.0),
        mos_c=35.0,
        capacity_ah=140.0,
        cell_uvp_v=2.80,
    ),
    4: pack(_cells(), soc_pct=70, current_a=15.0, temperatures_c=(20.0, 19.0), mos_c=28.0, max_charge_current_a=100.0),
}
"""Unit address → what that pack reports (``pack_id`` and times are the driver's to fill in)."""


def four_at(at_s: float, prefix: str = "jk-modbus:bus#") -> list[PackReading]:
    """The four packs as a driver would return them at monotonic ``at_s``."""
    return [
        replace(
            r,
            pack_id=f"{prefix}{unit}",
            state=replace(r.state, measured_at_s=at_s),
            settings=replace(r.settings, measured_at_s=at_s),
        )
        for unit, r in FOUR.items()
    ]


def constant(reading: PackReading) -> Scenario:
    """A simulator scenario that always reports ``reading``."""
    return Scenario("constant", "always the same reading", lambda t_s: Step(reading))
