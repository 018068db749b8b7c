"""``bms-gateway simulate charge-cycle``: a whole charge (and discharge) cycle in compressed time.

Two forms:

* ``--scenario-file FILE`` runs the packs, BMSs and inverter the file describes around the gateway's own control
  loop (:mod:`gateway.sim.cycle_run`; the file's keys in ``docs/charge-cycle.md``): a user's own settings and
  inverter behaviour. ``--json`` prints exactly one JSON object (the summary) and nothing else.
* without it, the built-in cycle: one 16S LiFePO4 pack and an inverter that follows CVL and CCL, or overshoots
  CCL (``--overshoot 1.2``), from 20 % SOC through absorption to float and down to the discharge cut-off.

No file is written unless ``--csv`` or ``--plot`` asks (the plot needs the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import ConfigError
from gateway.sim.charge_cycle import format_summary, plotting_available, run_charge_cycle
from gateway.sim.cycle_run import ScenarioRow, run_scenario
from gateway.sim.cycle_summary import format_scenario_summary
from gateway.sim.scenario_file import load_scenario

SCENARIO_HINT = "hint: every key, its default and an example are in docs/charge-cycle.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("charge-cycle")
    group.add_argument("--scenario-file", type=Path, metavar="FILE", help="packs, BMSs and inverter to simulate (YAML)")
    group.add_argument(
        "--overshoot", type=float, metavar="K", help="built-in cycle: the inverter takes K × CCL (default 1.0)"
    )
    group.add_argument("--json", action="store_true", help="with --scenario-file: print the summary as one JSON object")
    group.add_argument("--csv", type=Path, metavar="FILE", help="trace to write (CSV)")
    group.add_argument("--plot", type=Path, metavar="FILE", help="PNG plot to write (needs bms-gateway[plot])")


def run(args: argparse.Namespace) -> int:
    if args.scenario_file is not None:
        if args.overshoot is not None:
            print("bms-gateway: error: --overshoot and --scenario-file exclude each other", file=sys.stderr)
            print("hint: set inverter.overshoot in the scenario file", file=sys.stderr)
            return 2
        return _run_scenario(args)
    if args.json:
        print("bms-gateway: error: --json needs --scenario-file", file=sys.stderr)
        return 2
    overshoot = 1.0 if args.overshoot is None else args.overshoot
    if not 0.5 <= overshoot <= 3.0:
        print("bms-gateway: error: --overshoot: expected a factor from 0.5 to 3", file=sys.stderr)
        return 2
    if args.plot is not None and not plotting_available():
        print("bms-gateway: error: --plot needs matplotlib: pip install 'bms-gateway[plot]'", file=sys.stderr)
        return 1
    result = run_charge_cycle(overshoot=overshoot)
    print(format_summary(result.summary))
    for at_s, event in result.events:
        print(f"  {at_s / 60:6.1f} min  {event}")
    if args.csv is not None:
        result.write_csv(args.csv)
        print(f"trace: {args.csv} ({len(result.rows)} rows)")
    if args.plot is not None:
        result.write_plot(args.plot)
        print(f"plot: {args.plot}")
    return 0


def _run_scenario(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario_file)
    except ConfigError as error:
        print(f"bms-gateway: error: {error}", file=sys.stderr)
        print(SCENARIO_HINT, file=sys.stderr)
        return 2
    if args.plot is not None and not plotting_available():
        print("bms-gateway: error: --plot needs matplotlib: pip install 'bms-gateway[plot]'", file=sys.stderr)
        return 1
    result = run_scenario(scenario, keep_rows=args.csv is not None or args.plot is not None)
    if args.csv is not None:
        write_scenario_csv(result.rows, args.csv)
    if args.plot is not None:
        write_scenario_plot(result.rows, args.plot)
    if args.json:
        print(json.dumps(result.summary.to_json()))
        return 0
    print(format_scenario_summary(result.summary))
    if args.csv is not None:
        print(f"trace: {args.csv} ({len(result.rows)} rows)")
    if args.plot is not None:
        print(f"plot: {args.plot}")
    return 0


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
    # Imported here, untyped: matplotlib is optional (not even a dependency of the type check) and slow.
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
