"""``bms-gateway simulate charge-cycle``: a whole charge and discharge cycle in compressed time.

The simulated BMS (cells that diverge, the balancer at its maximum current) is driven by a simulated inverter
that follows CVL and CCL, or overshoots CCL (``--overshoot 1.2``), from 20 % SOC through absorption to float
and down to the discharge cut-off. Writes a CSV trace, and a PNG plot when the ``plot`` extra is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.sim.charge_cycle import format_summary, run_charge_cycle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("charge-cycle")
    group.add_argument(
        "--overshoot", type=float, default=1.0, metavar="K", help="the inverter takes K × CCL (default 1.0)"
    )
    group.add_argument("--csv", type=Path, default=Path("charge-cycle.csv"), metavar="FILE", help="trace to write")
    group.add_argument("--plot", type=Path, metavar="FILE", help="PNG plot to write (needs bms-gateway[plot])")


def run(args: argparse.Namespace) -> int:
    if not 0.5 <= args.overshoot <= 3.0:
        print("bms-gateway: error: --overshoot: expected a factor from 0.5 to 3", file=sys.stderr)
        return 2
    result = run_charge_cycle(overshoot=args.overshoot)
    result.write_csv(args.csv)
    print(format_summary(result.summary))
    for at_s, event in result.events:
        print(f"  {at_s / 60:6.1f} min  {event}")
    print(f"trace: {args.csv} ({len(result.rows)} rows)")
    if args.plot is not None:
        if result.write_plot(args.plot):
            print(f"plot: {args.plot}")
        else:
            print("bms-gateway: error: --plot needs matplotlib: pip install 'bms-gateway[plot]'", file=sys.stderr)
            return 1
    return 0
