"""``bms-gateway run -c FILE``: the service; ``--dry-run`` shows the frames it would send and opens no CAN bus."""

from __future__ import annotations

import argparse
import sys
import threading

from gateway.app import build_gateway
from gateway.app_rs485 import build_rs485_gateway
from gateway.cli.common import (
    add_config_argument,
    add_duration_argument,
    load,
    load_with_profile,
    stop_after,
    stop_on_signals,
    uses_rs485,
)
from gateway.cli.dry_run import run_dry
from gateway.clock import SystemClock
from gateway.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the gateway until SIGTERM or Ctrl-C")
    add_config_argument(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read the BMS and print the frames it would send, decoded; never opens the CAN bus",
    )
    add_duration_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    clock = SystemClock()
    stop = threading.Event()
    config = load(args)
    if uses_rs485(config):
        if args.dry_run:
            raise ConfigError("inverter.profile", "--dry-run shows CAN frames; an RS485 profile only answers polls")
        rs485 = build_rs485_gateway(config, clock)
        with stop_on_signals(stop), stop_after(stop, args.duration):
            rs485.run(stop)
        return 0
    config, profile = load_with_profile(args)
    if args.dry_run:
        with stop_on_signals(stop), stop_after(stop, args.duration):
            run_dry(config, profile, clock, stop, sys.stdout)
        return 0
    gateway = build_gateway(config, clock, profile=profile)
    with stop_on_signals(stop), stop_after(stop, args.duration):
        gateway.run(stop)
    return 0
