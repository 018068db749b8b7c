"""A pack model for simulations: cells with their own capacity, charge and resistance, and an active balancer
as a JK BMS has one. Pure: every step returns a new :class:`PackModel`.

Each cell's voltage is its open-circuit voltage at its own SOC plus current × its resistance. The OCV curve is
its chemistry's (:data:`OCV_CURVES`): LiFePO4 flat in the middle, steep below ~10 % and above ~97 % SOC; NMC
and LTO slope all the way. Beyond 100 % a curve keeps rising at the slope of its last segment, so an
overcharged cell runs past OVP as a real one does.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from gateway.model import Chemistry

SECONDS_PER_HOUR: Final = 3600.0

LFP_OCV_CURVE: Final[tuple[tuple[float, float], ...]] = (
    (0.0, 2.50), (1.0, 2.75), (3.0, 2.95), (6.0, 3.10), (10.0, 3.20), (20.0, 3.25), (30.0, 3.27),
    (40.0, 3.285), (50.0, 3.295), (60.0, 3.30), (70.0, 3.31), (80.0, 3.32), (90.0, 3.335), (95.0, 3.35),
    (97.0, 3.375), (98.0, 3.40), (99.0, 3.45), (99.5, 3.52), (100.0, 3.60),
)  # fmt: skip
"""Open-circuit voltage of a LiFePO4 cell against its SOC: (%, V)."""

NMC_OCV_CURVE: Final[tuple[tuple[float, float], ...]] = (
    (0.0, 3.00), (5.0, 3.40), (10.0, 3.50), (20.0, 3.58), (30.0, 3.63), (40.0, 3.68), (50.0, 3.74),
    (60.0, 3.81), (70.0, 3.89), (80.0, 3.97), (90.0, 4.06), (95.0, 4.11), (100.0, 4.18),
)  # fmt: skip
"""Open-circuit voltage of an NMC cell against its SOC: (%, V). unverified: a typical curve shape (3.0 V
empty, 4.2 V full, 3.7 V nominal), not a measured cell's; a simulator needs the shape, not one maker's cell."""

LTO_OCV_CURVE: Final[tuple[tuple[float, float], ...]] = (
    (0.0, 1.80), (5.0, 2.10), (10.0, 2.20), (20.0, 2.25), (40.0, 2.30), (60.0, 2.36), (80.0, 2.45),
    (90.0, 2.55), (95.0, 2.62), (100.0, 2.78),
)  # fmt: skip
"""Open-circuit voltage of an LTO cell against its SOC: (%, V). unverified: a typical curve shape (1.8 V empty,
2.8 V full, 2.3–2.4 V nominal), as for NMC."""

OCV_CURVES: Final = {
    Chemistry.LIFEPO4: LFP_OCV_CURVE,
    Chemistry.LI_ION: NMC_OCV_CURVE,
    Chemistry.LTO: LTO_OCV_CURVE,
}
_OCV_TABLES: Final = {
    chemistry: (tuple(p[0] for p in curve), tuple(p[1] for p in curve)) for chemistry, curve in OCV_CURVES.items()
}


def ocv_v(soc_pct: float, chemistry: Chemistry = Chemistry.LIFEPO4) -> float:
    """Open-circuit voltage of a ``chemistry`` cell at ``soc_pct`` (%), V; extrapolated linearly beyond both ends."""
    socs, volts = _OCV_TABLES[chemistry]
    i = bisect.bisect_right(socs, soc_pct)
    i = min(max(i, 1), len(socs) - 1)  # the end segments extrapolate
    soc0, soc1, v0, v1 = socs[i - 1], socs[i], volts[i - 1], volts[i]
    return v0 + (v1 - v0) * (soc_pct - soc0) / (soc1 - soc0)


def lfp_ocv_v(soc_pct: float) -> float:
    """Open-circuit voltage of a LiFePO4 cell at ``soc_pct`` (%), V."""
    return ocv_v(soc_pct, Chemistry.LIFEPO4)


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell: its capacity, the charge it holds and its internal resistance."""

    capacity_ah: float
    """Usable capacity, Ah."""
    charge_ah: float
    """Charge held, Ah (0: empty, ``capacity_ah``: full)."""
    resistance_ohm: float
    """Internal resistance, Ω."""
    chemistry: Chemistry = Chemistry.LIFEPO4

    @property
    def soc_pct(self) -> float:
        """State of charge, %."""
        return 100.0 * self.charge_ah / self.capacity_ah

    @property
    def ocv_v(self) -> float:
        """Open-circuit voltage, V."""
        return ocv_v(self.soc_pct, self.chemistry)

    def voltage_v(self, current_a: float) -> float:
        """Terminal voltage with ``current_a`` flowing (A, + charging), V."""
        return self.ocv_v + current_a * self.resistance_ohm


@dataclass(frozen=True, slots=True)
class Balancing:
    """What the balancer does during one step."""

    source: int
    """Index of the cell charge is taken from."""
    sink: int
    """Index of the cell charge is given to."""
    current_a: float
    """Balance current, A."""


@dataclass(frozen=True, slots=True)
class PackModel:
    """Cells in series."""

    cells: tuple[Cell, ...]

    @property
    def capacity_ah(self) -> float:
        """Sum of the cell capacities, Ah (used for the capacity-weighted SOC)."""
        return sum(c.capacity_ah for c in self.cells)

    @property
    def soc_pct(self) -> float:
        """Capacity-weighted mean SOC of the cells, %."""
        return 100.0 * sum(c.charge_ah for c in self.cells) / self.capacity_ah

    @property
    def resistance_ohm(self) -> float:
        """Series resistance of the pack, Ω."""
        return sum(c.resistance_ohm for c in self.cells)

    @property
    def ocv_v(self) -> float:
        """Open-circuit voltage of the pack, V."""
        return sum(self.cell_ocvs_v())

    def cell_ocvs_v(self) -> tuple[float, ...]:
        """Each cell's open-circuit voltage, V."""
        return tuple(ocv_v(100.0 * c.charge_ah / c.capacity_ah, c.chemistry) for c in self.cells)

    def cell_voltages_v(self, current_a: float, ocvs_v: Sequence[float] | None = None) -> tuple[float, ...]:
        """Each cell's terminal voltage with ``current_a`` flowing (A, + charging), V; ``ocvs_v``: the cells'
        open-circuit voltages if already known (V)."""
        ocvs = self.cell_ocvs_v() if ocvs_v is None else ocvs_v
        return tuple(v + current_a * c.resistance_ohm for v, c in zip(ocvs, self.cells, strict=True))

    def step(self, current_a: float, dt_s: float, balancing: Balancing | None = None) -> PackModel:
        """The pack after ``current_a`` (A, + charging) flowed for ``dt_s`` seconds, with ``balancing``."""
        delta_ah = current_a * dt_s / SECONDS_PER_HOUR
        cells = [replace(c, charge_ah=c.charge_ah + delta_ah) for c in self.cells]
        if balancing is not None:
            # An active balancer moves charge from one cell to another (losses neglected).
            moved_ah = balancing.current_a * dt_s / SECONDS_PER_HOUR
            source, sink = cells[balancing.source], cells[balancing.sink]
            cells[balancing.source] = replace(source, charge_ah=source.charge_ah - moved_ah)
            cells[balancing.sink] = replace(sink, charge_ah=sink.charge_ah + moved_ah)
        return PackModel(tuple(cells))


def balance_decision(
    cell_voltages_v: Sequence[float], *, start_v: float, trigger_v: float, max_current_a: float
) -> Balancing | None:
    """What a JK active balancer does given the cell voltages it measures (V): it moves ``max_current_a`` (A)
    from the highest to the lowest cell while the highest is at or above ``start_v`` (V) and the spread is at
    least ``trigger_v`` (V); otherwise it rests (None)."""
    highest, lowest = max(cell_voltages_v), min(cell_voltages_v)
    if max_current_a <= 0 or highest < start_v or highest - lowest < trigger_v:
        return None
    return Balancing(cell_voltages_v.index(highest), cell_voltages_v.index(lowest), max_current_a)


def make_pack(
    *,
    cell_count: int = 16,
    capacity_ah: float = 100.0,
    capacity_spread: float = 0.01,
    runner: int | None = 6,
    runner_deficit: float = 0.015,
    soc_pct: float = 20.0,
    soc_spread_pct: float = 0.5,
    resistance_ohm: float = 0.0006,
    resistance_spread: float = 0.05,
    seed: int = 1,
    chemistry: Chemistry = Chemistry.LIFEPO4,
    weak_cells: Mapping[int, float] | None = None,
    resistances_ohm: Mapping[int, float] | None = None,
) -> PackModel:
    """A pack of ``cell_count`` cells that differ a little, reproducibly for one ``seed``.

    :param capacity_ah: nominal cell capacity, Ah; each cell within ± ``capacity_spread`` (fraction) of it.
    :param runner: index of the cell that is ``runner_deficit`` (fraction) smaller than nominal and starts at
        the top of the SOC spread (None: none); it runs ahead at the top of the charge and, once the balancer
        has levelled the cells there, falls first at the bottom.
    :param soc_pct: initial SOC, %, each cell within ± ``soc_spread_pct`` (percentage points).
    :param resistance_ohm: cell resistance, Ω, each within ± ``resistance_spread`` (fraction).
    :param weak_cells: cell number (1-based) → its capacity as a fraction of nominal; such a cell also starts
        at the top of the SOC spread, as the runner does.
    :param resistances_ohm: cell number (1-based) → its resistance, Ω (the others as ``resistance_ohm``).
    """
    rng = random.Random(seed)
    cells: list[Cell] = []
    for i in range(cell_count):
        capacity = capacity_ah * (1.0 + rng.uniform(-capacity_spread, capacity_spread))
        weak = (weak_cells or {}).get(i + 1)
        if i == runner:
            capacity = capacity_ah * (1.0 - runner_deficit)
        if weak is not None:
            capacity = capacity_ah * weak
        soc = soc_pct + rng.uniform(-soc_spread_pct, soc_spread_pct)
        if i == runner or weak is not None:
            # Smallest and fullest: it has the least room left, so it surely leads at the top of the charge.
            soc = soc_pct + soc_spread_pct
        resistance = resistance_ohm * (1.0 + rng.uniform(-resistance_spread, resistance_spread))
        resistance = (resistances_ohm or {}).get(i + 1, resistance)
        cells.append(Cell(capacity, capacity * soc / 100.0, resistance, chemistry))
    return PackModel(tuple(cells))
