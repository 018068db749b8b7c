"""What a charge-cycle scenario run measured (:class:`ScenarioSummary`), and the counting it needs. Pure.

Every figure is what a careful installer would look at: the BMS trips (what the gateway exists to prevent),
the extreme cells, when float came, how often the limits the inverter hears change, how often charging was
switched off and on, how far each pack's current went beyond its BMS's limit, and how much charge went in
while a pack was outside the temperature window the gateway allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.sim.bms_model import BmsTrip

CHANGE_WINDOW_S: Final = 60.0
"""Limit changes are counted in sliding windows of this length, s."""
OUTSIDE_WINDOW_FRACTION: Final = 0.005
"""``charged_outside_window`` once a pack took more than this fraction of its capacity outside the window."""


def max_changes_per_window(times_s: Sequence[float], window_s: float = CHANGE_WINDOW_S) -> int:
    """The most of the ascending ``times_s`` (s) that fall within any ``window_s`` (s) long span."""
    best, start = 0, 0
    for end, t in enumerate(times_s):
        while t - times_s[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass(frozen=True, slots=True)
class PackTrip:
    """A trip of one pack's BMS."""

    pack: int
    """The pack's number, 1-based, in the scenario's order."""
    trip: BmsTrip


@dataclass(frozen=True, slots=True)
class ScenarioSummary:
    trips: tuple[PackTrip, ...]
    max_cell_v: float
    """Highest true cell voltage of any pack, V."""
    min_cell_v: float
    float_reached_s: float | None
    """When the battery's limits first reached float, s; None: never."""
    ccl_change_times_s: tuple[float, ...]
    """When the CCL the inverter heard changed, s."""
    cvl_change_times_s: tuple[float, ...]
    cvl_rise_times_s: tuple[float, ...]
    """When the CVL the inverter heard rose, s: a saw-tooth (audit P13) is many rises; a fall is how a block
    or a runner cell acts at once."""
    enable_toggles: int
    """Changes of the charge enable the inverter heard."""
    max_pack_current_over_bms_limit_a: tuple[float, ...]
    """Per pack: the most its current exceeded its BMS's max current (either direction), A; 0 if never."""
    charge_outside_window_ah: tuple[float, ...]
    """Per pack: Ah charged while its temperature was outside the window the gateway allows (edges included)."""
    capacities_ah: tuple[float, ...]
    seconds_simulated: float
    wall_s: float
    """Real time the run took, s (not in the JSON: it differs between machines)."""

    @property
    def trip_count(self) -> int:
        return len(self.trips)

    @property
    def charged_outside_window(self) -> bool:
        return any(
            ah > OUTSIDE_WINDOW_FRACTION * capacity
            for ah, capacity in zip(self.charge_outside_window_ah, self.capacities_ah, strict=True)
        )

    @property
    def max_changes_per_min(self) -> dict[str, int]:
        return {
            "ccl": max_changes_per_window(self.ccl_change_times_s),
            "cvl": max_changes_per_window(self.cvl_change_times_s),
            "cvl_rises": max_changes_per_window(self.cvl_rise_times_s),
        }

    def to_json(self) -> dict[str, Any]:
        """The summary as ``--json`` prints it (see docs/charge-cycle.md)."""
        return {
            "trips": [
                {"t_s": round(t.trip.time_s, 1), "pack": t.pack, "kind": t.trip.kind, "cell": t.trip.cell}
                for t in self.trips
            ],
            "trip_count": self.trip_count,
            "max_cell_v": round(self.max_cell_v, 3),
            "min_cell_v": round(self.min_cell_v, 3),
            "float_reached_s": None if self.float_reached_s is None else round(self.float_reached_s, 1),
            "max_changes_per_min": self.max_changes_per_min,
            "enable_toggles": self.enable_toggles,
            "max_pack_current_over_bms_limit_a": [round(a, 2) for a in self.max_pack_current_over_bms_limit_a],
            "charge_outside_window_ah": [round(ah, 3) for ah in self.charge_outside_window_ah],
            "charged_outside_window": self.charged_outside_window,
            "seconds_simulated": round(self.seconds_simulated, 1),
        }


def format_scenario_summary(summary: ScenarioSummary) -> str:
    """A few human lines about one run."""
    minutes = "never" if summary.float_reached_s is None else f"{summary.float_reached_s / 60:.1f} min"
    lines = [
        f"{summary.seconds_simulated / 3600:.2f} h simulated in {summary.wall_s:.1f} s; float at {minutes}",
        f"BMS trips: {summary.trip_count}"
        + "".join(f"\n  {t.trip.time_s:.0f} s pack {t.pack} {t.trip.kind}: {t.trip.detail}" for t in summary.trips),
        f"cells {summary.min_cell_v:.3f} … {summary.max_cell_v:.3f} V",
        "most limit changes per minute: "
        + ", ".join(f"{name} {count}" for name, count in summary.max_changes_per_min.items())
        + f"; charge enable toggled {summary.enable_toggles} times",
    ]
    for index, (over, outside) in enumerate(
        zip(summary.max_pack_current_over_bms_limit_a, summary.charge_outside_window_ah, strict=True), start=1
    ):
        lines.append(
            f"pack {index}: at most {over:.1f} A over its BMS limit, {outside:.2f} Ah charged outside the window"
        )
    return "\n".join(lines)
