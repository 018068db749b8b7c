"""A LiFePO4 pack model for simulations: cells with their own capacity, charge and resistance, and an active
balancer as a JK BMS has one. Pure: every step returns a new :class:`PackModel`.

Each cell's voltage is its open-circuit voltage at its own SOC plus current × its resistance. The OCV curve is
that of LiFePO4: flat in the middle, steep below ~10 % and above ~97 % SOC; beyond 100 % it keeps rising at the
slope of its last segment, so an overcharged cell runs past OVP as a real one does.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

SECONDS_PER_HOUR: Final = 3600.0

LFP_OCV_CURVE: Final[tuple[tuple[float, float], ...]] = (
    (0.0, 2.50), (1.0, 2.75), (3.0, 2.95), (6.0, 3.10), (10.0, 3.20), (20.0, 3.25), (30.0, 3.27),
    (40.0, 3.285), (50.0, 3.295), (60.0, 3.30), (70.0, 3.31), (80.0, 3.32), (90.0, 3.335), (95.0, 3.35),
    (97.0, 3.375), (98.0, 3.40), (99.0, 3.45), (99.5, 3.52), (100.0, 3.60),
)  # fmt: skip
"""Open-circuit voltage of a LiFePO4 cell against its SOC: (%, V)."""

_OCV_SOC: Final = tuple(p[0] for p in LFP_OCV_CURVE)
_OCV_V: Final = tuple(p[1] for p in LFP_OCV_CURVE)


def lfp_ocv_v(soc_pct: float) -> float:
    """Open-circuit voltage of a LiFePO4 cell at ``soc_pct`` (%), V; extrapolated linearly beyond both ends."""
    i = bisect.bisect_right(_OCV_SOC, soc_pct)
    i = min(max(i, 1), len(_OCV_SOC) - 1)  # the end segments extrapolate
    soc0, soc1, v0, v1 = _OCV_SOC[i - 1], _OCV_SOC[i], _OCV_V[i - 1], _OCV_V[i]
    return v0 + (v1 - v0) * (soc_pct - soc0) / (soc1 - soc0)


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell: its capacity, the charge it holds and its internal resistance."""

    capacity_ah: float
    """Usable capacity, Ah."""
    charge_ah: float
    """Charge held, Ah (0: empty, ``capacity_ah``: full)."""
    resistance_ohm: float
    """Internal resistance, Ω."""

    @property
    def soc_pct(self) -> float:
        """State of charge, %."""
        return 100.0 * self.charge_ah / self.capacity_ah

    @property
    def ocv_v(self) -> float:
        """Open-circuit voltage, V."""
        return lfp_ocv_v(self.soc_pct)

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
        return tuple(lfp_ocv_v(100.0 * c.charge_ah / c.capacity_ah) for c in self.cells)

    def cell_voltages_v(self, current_a: float, ocvs_v: Sequence[float] | None = None) -> tuple[float, ...]:
        """Each cell's terminal voltage with ``current_a`` flowing (A, + charging), V; ``ocvs_v``: the cells'
        open-circuit voltages if already known (V)."""
        ocvs = self.cell_ocvs_v() if ocvs_v is None else ocvs_v
        return tuple(v + current_a * c.resistance_ohm for v, c in zip(ocvs, self.cells, strict=True))

    def step(self, current_a: float, dt_s: float, balancing: Balancing | None = None) -> PackModel:
        """The pack after ``current_a`` (A, + charging) flowed for ``dt_s`` seconds, with ``balancing``."""
        delta_ah = current_a * dt_s / SECONDS_PER_HOUR
        cells = [Cell(c.capacity_ah, c.charge_ah + delta_ah, c.resistance_ohm) for c in self.cells]
        if balancing is not None:
            # An active balancer moves charge from one cell to another (losses neglected).
            moved_ah = balancing.current_a * dt_s / SECONDS_PER_HOUR
            source, sink = cells[balancing.source], cells[balancing.sink]
            cells[balancing.source] = Cell(source.capacity_ah, source.charge_ah - moved_ah, source.resistance_ohm)
            cells[balancing.sink] = Cell(sink.capacity_ah, sink.charge_ah + moved_ah, sink.resistance_ohm)
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
) -> PackModel:
    """A pack of ``cell_count`` cells that differ a little, reproducibly for one ``seed``.

    :param capacity_ah: nominal cell capacity, Ah; each cell within ± ``capacity_spread`` (fraction) of it.
    :param runner: index of the cell that is ``runner_deficit`` (fraction) smaller than nominal and starts at
        the top of the SOC spread (None: none); it runs ahead at the top of the charge and, once the balancer
        has levelled the cells there, falls first at the bottom.
    :param soc_pct: initial SOC, %, each cell within ± ``soc_spread_pct`` (percentage points).
    :param resistance_ohm: cell resistance, Ω, each within ± ``resistance_spread`` (fraction).
    """
    rng = random.Random(seed)
    cells: list[Cell] = []
    for i in range(cell_count):
        capacity = capacity_ah * (1.0 + rng.uniform(-capacity_spread, capacity_spread))
        if i == runner:
            capacity = capacity_ah * (1.0 - runner_deficit)
        soc = soc_pct + rng.uniform(-soc_spread_pct, soc_spread_pct)
        if i == runner:
            # Smallest and fullest: it has the least room left, so it surely leads at the top of the charge.
            soc = soc_pct + soc_spread_pct
        resistance = resistance_ohm * (1.0 + rng.uniform(-resistance_spread, resistance_spread))
        cells.append(Cell(capacity, capacity * soc / 100.0, resistance))
    return PackModel(tuple(cells))
