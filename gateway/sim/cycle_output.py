"""Files of a charge-cycle run: the CSV trace and the PNG plot, of the built-in cycle and of a scenario run.

matplotlib is the optional ``plot`` extra: :func:`plotting_available` says whether it is there, and it is
imported only when a plot is written (untyped: it is not even a dependency of the type check, and slow to load).
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.sim.bms_model import simulated_bms_settings

if TYPE_CHECKING:  # the run modules import this one
    from gateway.sim.charge_cycle import CycleResult, TraceRow
    from gateway.sim.cycle_run import ScenarioRow


def csv_header(cell_count: int) -> list[str]:
    return [
        "time_s",
        "stage",
        *(f"cell_{i + 1:02d}_v" for i in range(cell_count)),
        "pack_v",
        "current_a",
        "soc_pct",
        "cvl_v",
        "ccl_a",
        "dcl_a",
        "dvl_v",
        "charge_enable",
        "discharge_enable",
        "charge_phase",
        "cvl_limiter",
        "ccl_limiter",
        "ccl_reason",
        "dcl_limiter",
        "true_ccl_a",
        "true_dcl_a",
        "balance_a",
        "charge_mos_on",
        "discharge_mos_on",
    ]


def write_csv(rows: Sequence[TraceRow], path: str | Path) -> None:
    """Write ``rows`` to ``path`` as CSV with a header row."""
    cell_count = len(rows[0].cell_voltages_v) if rows else 16
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(csv_header(cell_count))
        for r in rows:
            writer.writerow(
                [
                    f"{r.time_s:g}",
                    r.stage.value,
                    *(f"{v:.3f}" for v in r.cell_voltages_v),
                    f"{r.pack_v:.2f}",
                    f"{r.current_a:.2f}",
                    f"{r.soc_pct:.3f}",
                    f"{r.cvl_v:g}",
                    f"{r.ccl_a:g}",
                    f"{r.dcl_a:g}",
                    f"{r.dvl_v:g}",
                    int(r.charge_enable),
                    int(r.discharge_enable),
                    r.charge_phase or "",
                    r.cvl_limiter,
                    r.ccl_limiter,
                    r.ccl_reason,
                    r.dcl_limiter,
                    f"{r.true_ccl_a:g}",
                    f"{r.true_dcl_a:g}",
                    f"{r.balance_a:g}",
                    int(r.charge_mos_on),
                    int(r.discharge_mos_on),
                ]
            )


def plotting_available() -> bool:
    """Whether the optional plotting extra (matplotlib) is installed."""
    return importlib.util.find_spec("matplotlib") is not None


PHASE_COLOURS = {"bulk": "tab:orange", "absorption": "tab:red", "float": "tab:green", "re-bulk": "tab:purple"}
"""Background of each charge phase in the plot."""


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    """A stretch of the run in one charge phase, in minutes from the start."""

    label: str
    """``bulk``, ``absorption``, ``float``, or ``re-bulk`` (a bulk after absorption or float)."""
    start_min: float
    end_min: float


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the current panel: how it is drawn, so that lines that overlap stay distinguishable."""

    label: str
    values: tuple[float, ...]
    style: str = "-"
    width: float = 1.2
    alpha: float = 1.0
    order: int = 3
    """Drawing order (matplotlib zorder): the higher, the later, on top."""


@dataclass(frozen=True, slots=True)
class PlotLayout:
    """What the plot of a built-in cycle shows, apart from the drawing itself (tested without matplotlib)."""

    minutes: tuple[float, ...]
    phases: tuple[PhaseSpan, ...]
    current_lines: tuple[Line, ...]
    soc: Line

    @property
    def current_legend(self) -> list[str]:
        """The current panel's legend: its lines and the SOC of the twin axis."""
        return [line.label for line in self.current_lines] + [self.soc.label]


def phase_spans(rows: Sequence[TraceRow]) -> tuple[PhaseSpan, ...]:
    """The run cut into charge phases; each span ends where the next begins (or at the last row)."""
    spans: list[PhaseSpan] = []
    label: str | None = None
    start_s = 0.0
    left_bulk = False
    for row in rows:
        phase = row.charge_phase
        here = "re-bulk" if phase == "bulk" and left_bulk else phase
        if here != label:
            if label is not None:
                spans.append(PhaseSpan(label, start_s / 60, row.time_s / 60))
            label, start_s = here, row.time_s
        left_bulk = left_bulk or phase in ("absorption", "float")
    if label is not None and rows:
        spans.append(PhaseSpan(label, start_s / 60, rows[-1].time_s / 60))
    return tuple(spans)


def plot_layout(result: CycleResult) -> PlotLayout:
    rows = result.rows
    return PlotLayout(
        minutes=tuple(r.time_s / 60 for r in rows),
        phases=phase_spans(rows),
        current_lines=(
            Line("current A", tuple(r.current_a for r in rows), order=4),
            # The engine's CCL, wide and pale underneath; what the inverter heard, thin and dashed on top: where
            # enforcement does not compensate the two coincide and both stay visible.
            Line("CCL (engine)", tuple(r.true_ccl_a for r in rows), width=4.0, alpha=0.35, order=2),
            Line("CCL (advertised)", tuple(r.ccl_a for r in rows), style="--", width=1.2, order=3),
            Line("−DCL (advertised)", tuple(-r.dcl_a for r in rows), style="-.", width=1.0, order=3),
        ),
        soc=Line("SOC %", tuple(r.soc_pct for r in rows), width=0.8, order=1),
    )


def write_plot(result: CycleResult, path: str | Path) -> bool:
    """Write a PNG of cells, CVL, CCL, DCL and current to ``path``, the charge phases shaded and labelled; False
    (and nothing written) when matplotlib, the optional plotting extra, is not installed."""
    if not plotting_available():
        return False
    # Imported here, untyped: matplotlib is optional (not even a dependency of the type check) and slow.
    importlib.import_module("matplotlib").use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    rows = result.rows
    layout = plot_layout(result)
    minutes = layout.minutes
    fig, (cells_ax, pack_ax, current_ax) = plt.subplots(3, 1, sharex=True, figsize=(12, 10))
    for axis in (cells_ax, pack_ax, current_ax):
        for span in layout.phases:
            axis.axvspan(span.start_min, span.end_min, color=PHASE_COLOURS[span.label], alpha=0.1, zorder=0)
    for span in layout.phases:
        cells_ax.annotate(
            span.label,
            ((span.start_min + span.end_min) / 2, 1.01),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=8,
            color=PHASE_COLOURS[span.label],
        )
    for i in range(len(rows[0].cell_voltages_v)):
        cells_ax.plot(minutes, [r.cell_voltages_v[i] for r in rows], linewidth=0.7)
    settings = simulated_bms_settings()
    for level, label in ((settings.cell_ovp_v, "OVP"), (settings.cell_uvp_v, "UVP")):
        cells_ax.axhline(level, color="red", linestyle="--", linewidth=0.8)
        cells_ax.annotate(label, (minutes[0], level), color="red", fontsize=8)
    cells_ax.set_ylabel("cell V")
    cells_ax.set_title(f"charge cycle, inverter overshoot × {result.summary.overshoot:g}", pad=16)
    pack_ax.plot(minutes, [r.pack_v for r in rows], label="pack V")
    pack_ax.plot(minutes, [r.cvl_v for r in rows], label="CVL")
    pack_ax.plot(minutes, [r.dvl_v for r in rows], label="DVL")
    pack_ax.set_ylabel("V")
    pack_ax.legend(loc="lower right")
    for line in layout.current_lines:
        current_ax.plot(
            minutes,
            line.values,
            label=line.label,
            linestyle=line.style,
            linewidth=line.width,
            alpha=line.alpha,
            zorder=line.order,
        )
    soc_ax = current_ax.twinx()
    soc_ax.plot(minutes, layout.soc.values, color="grey", linewidth=layout.soc.width, label=layout.soc.label)
    soc_ax.set_ylabel("SOC %")
    current_ax.set_ylabel("A")
    current_ax.set_xlabel("min")
    # One legend for both axes of the panel, SOC included.
    handles, labels = current_ax.get_legend_handles_labels()
    soc_handles, soc_labels = soc_ax.get_legend_handles_labels()
    current_ax.legend(handles + soc_handles, labels + soc_labels, loc="lower left")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100)
    plt.close(fig)
    return True


def scenario_csv_header(packs: int) -> list[str]:
    header = [
        "time_s",
        "stage",
        "heard_cvl_v",
        "heard_ccl_a",
        "heard_dcl_a",
        "heard_dvl_v",
        "heard_charge_enable",
        "heard_discharge_enable",
        "current_a",
        "bus_v",
    ]
    for number in range(1, packs + 1):
        names = ("current_a", "max_cell_v", "min_cell_v", "temperature_c", "soc_pct")
        header += [f"pack{number}_{name}" for name in names]
    return header


def write_scenario_csv(rows: Sequence[ScenarioRow], path: Path) -> None:
    """The trace of a scenario run, one row per step (the heard limits empty while the inverter hears none)."""
    packs = len(rows[0].pack_currents_a) if rows else 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(scenario_csv_header(packs))
        for row in rows:
            heard = row.heard
            limits: list[object] = (
                ["", "", "", "", "", ""]
                if heard is None
                else [
                    heard.cvl_v,
                    heard.ccl_a,
                    heard.dcl_a,
                    heard.dvl_v,
                    int(heard.charge_enable),
                    int(heard.discharge_enable),
                ]
            )
            cells: list[object] = []
            for values in zip(
                row.pack_currents_a,
                row.pack_max_cell_v,
                row.pack_min_cell_v,
                row.pack_temperatures_c,
                row.pack_soc_pct,
                strict=True,
            ):
                cells += [round(v, 3) for v in values]
            writer.writerow([row.time_s, row.stage, *limits, round(row.current_a, 2), round(row.bus_v, 3), *cells])


def write_scenario_plot(rows: Sequence[ScenarioRow], path: Path) -> None:
    """A PNG of the run: cell extremes per pack, the current and the heard CCL/CVL (matplotlib must be there)."""
    importlib.import_module("matplotlib").use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    hours = [row.time_s / 3600 for row in rows]
    figure, (cells, amps, volts) = plt.subplots(3, 1, sharex=True, figsize=(11, 8))
    for index in range(len(rows[0].pack_currents_a) if rows else 0):
        cells.plot(hours, [r.pack_max_cell_v[index] for r in rows], label=f"pack {index + 1} highest cell")
        cells.plot(hours, [r.pack_min_cell_v[index] for r in rows], label=f"pack {index + 1} lowest cell", alpha=0.6)
        amps.plot(hours, [r.pack_currents_a[index] for r in rows], label=f"pack {index + 1} current")
    amps.plot(hours, [r.heard.ccl_a if r.heard else 0.0 for r in rows], "k--", label="CCL heard")
    volts.plot(hours, [r.heard.cvl_v if r.heard else float("nan") for r in rows], label="CVL heard")
    volts.plot(hours, [r.bus_v for r in rows], label="bus voltage")
    cells.set_ylabel("V")
    amps.set_ylabel("A")
    volts.set_ylabel("V")
    volts.set_xlabel("h")
    for axis in (cells, amps, volts):
        axis.legend(fontsize="small")
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
