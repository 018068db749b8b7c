"""``bms-gateway simulate jk-uart``: a simulated JK BMS on a pseudo-terminal or a given port.

``bms-gateway simulate jk-modbus [--addresses 1 2 3]``: JK-PB inverter BMSs on one RS485 bus (Modbus RTU), one
per address, each running the scenario with small offsets (:func:`gateway.sim.jk_modbus.pack_variant`).

``bms-gateway simulate charge-cycle``: a whole charge cycle in compressed time (:mod:`gateway.cli.charge_cycle`).
"""

from __future__ import annotations

import argparse
import sys
import threading

from gateway.cli import charge_cycle
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.sim.jk_modbus import JkModbusSimulator, SimPack, pack_variant
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.scenarios import SCENARIOS


def _unit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 247:
        raise argparse.ArgumentTypeError(f"{value} is not a Modbus unit address (1–247)")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run a simulated BMS speaking the real wire protocol",
        description="Scenarios: " + "; ".join(f"{s.name}: {s.description}" for s in SCENARIOS.values()),
    )
    parser.add_argument(
        "protocol",
        choices=["jk-uart", "jk-modbus", "charge-cycle"],
        help="which BMS to simulate, or a whole charge cycle",
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="normal-charge")
    parser.add_argument("--port", help="serial port to serve on (default: create a pseudo-terminal)")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--reply-delay", type=float, default=0.0, metavar="S", help="answer late by S seconds")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--addresses",
        type=_unit,
        nargs="+",
        metavar="UNIT",
        help="jk-modbus: the packs' Modbus addresses (default: 1)",
    )
    charge_cycle.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.protocol == "charge-cycle":
        return charge_cycle.run(args)
    simulator: JkUartSimulator | JkModbusSimulator
    if args.protocol == "jk-modbus":
        addresses = list(dict.fromkeys(args.addresses or [1]))
        scenario = SCENARIOS[args.scenario]
        simulator = JkModbusSimulator(
            {unit: SimPack(pack_variant(scenario, index)) for index, unit in enumerate(addresses)},
            SystemClock(),
            port=args.port,
            baudrate=args.baudrate,
            reply_delay_s=args.reply_delay,
        )
        what = f"JK-PB BMS at address{'es' if len(addresses) > 1 else ''} {', '.join(map(str, addresses))}"
    else:
        if args.addresses is not None:
            raise ConfigError("--addresses", "only for jk-modbus")
        simulator = JkUartSimulator(
            SCENARIOS[args.scenario],
            SystemClock(),
            port=args.port,
            baudrate=args.baudrate,
            reply_delay_s=args.reply_delay,
        )
        what = "JK BMS"
    simulator.open()  # a port that cannot be opened is an error now, not a silent retry loop
    print(simulator.path, flush=True)
    print(f"simulating a {what} ({args.scenario}) on {simulator.path}; Ctrl-C to stop", file=sys.stderr)
    simulator.start()
    try:
        threading.Event().wait(args.duration)
    finally:
        simulator.stop()
    return 0
