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
import json
import sys
from pathlib import Path

from gateway.errors import ConfigError
from gateway.sim.charge_cycle import format_summary, run_charge_cycle
from gateway.sim.cycle_output import plotting_available, write_scenario_csv, write_scenario_plot
from gateway.sim.cycle_run import run_scenario
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
