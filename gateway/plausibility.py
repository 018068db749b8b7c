"""Is a decoded reading believable? A reading that is not is treated like a failed poll (fail closed).

A frame can be well-formed and still wrong: a loose sense wire reads 0 V, a glitching BMS reports 250 % SOC.
Such values must never reach the limits, so the runtime drops the whole reading and the fail-safe timer runs on.
"""

from __future__ import annotations

from typing import Final

from gateway.model import PackReading

CELL_V_RANGE: Final = (0.5, 5.0)
"""Any cell outside this, V, is a measurement fault (no lithium chemistry lives there)."""
PACK_VS_CELLS_TOLERANCE: Final = 0.05
"""Pack voltage may differ from the sum of cells by this fraction (shunt and wiring drop) before it is a fault."""
TEMPERATURE_C_RANGE: Final = (-50.0, 150.0)


def implausibility(reading: PackReading) -> str | None:
    """Why ``reading`` cannot be trusted, in one line, or None when it is plausible."""
    state, settings = reading.state, reading.settings
    cells = state.cell_voltages_v
    if not cells:
        return "no cell voltages"
    if settings.cell_count and settings.cell_count != len(cells):
        return f"BMS reports {len(cells)} cells but its cell-count setting is {settings.cell_count}"
    low, high = CELL_V_RANGE
    for number, volts in enumerate(cells, start=1):
        if not low <= volts <= high:
            return f"cell {number} reads {volts:.3f} V (outside {low}–{high} V: sense wire?)"
    if not 0 <= state.soc_pct <= 100:
        return f"SOC {state.soc_pct:g} % outside 0–100 %"
    cell_sum = sum(cells)
    if abs(state.pack_voltage_v - cell_sum) > PACK_VS_CELLS_TOLERANCE * cell_sum:
        return f"pack voltage {state.pack_voltage_v:.2f} V disagrees with the sum of cells {cell_sum:.2f} V"
    t_low, t_high = TEMPERATURE_C_RANGE
    for name, value in (
        ("MOS", state.mos_temperature_c),
        *((f"T{i + 1}", t) for i, t in enumerate(state.battery_temperatures_c)),
    ):
        if value is not None and not t_low <= value <= t_high:
            return f"temperature {name} reads {value:g} °C"
    if not settings.cell_uvp_v < settings.cell_ovp_v:
        return f"settings: cell UVP {settings.cell_uvp_v} V not below OVP {settings.cell_ovp_v} V"
    return None
