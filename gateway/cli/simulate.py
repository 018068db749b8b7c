"""``bms-gateway simulate jk-uart``: a simulated JK BMS on a pseudo-terminal or a given port.

``bms-gateway simulate charge-cycle``: a whole charge cycle in compressed time (:mod:`gateway.cli.charge_cycle`).
"""

from __future__ import annotations

import argparse
import sys
import threading

from gateway.cli import charge_cycle
from gateway.clock import SystemClock
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.scenarios import SCENARIOS


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run a simulated BMS speaking the real wire protocol",
        description="Scenarios: " + "; ".join(f"{s.name}: {s.description}" for s in SCENARIOS.values()),
    )
    parser.add_argument(
        "protocol", choices=["jk-uart", "charge-cycle"], help="which BMS to simulate, or a whole charge cycle"
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="normal-charge")
    parser.add_argument("--port", help="serial port to serve on (default: create a pseudo-terminal)")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--reply-delay", type=float, default=0.0, metavar="S", help="answer late by S seconds")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    charge_cycle.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.protocol == "charge-cycle":
        return charge_cycle.run(args)
    simulator = JkUartSimulator(
        SCENARIOS[args.scenario],
        SystemClock(),
        port=args.port,
        baudrate=args.baudrate,
        reply_delay_s=args.reply_delay,
    )
    simulator.open()  # a port that cannot be opened is an error now, not a silent retry loop
    print(simulator.path, flush=True)
    print(f"simulating a JK BMS ({args.scenario}) on {simulator.path}; Ctrl-C to stop", file=sys.stderr)
    simulator.start()
    try:
        threading.Event().wait(args.duration)
    finally:
        simulator.stop()
    return 0
