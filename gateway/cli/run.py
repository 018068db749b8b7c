"""``bms-gateway run -c FILE``: the service."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from gateway.app import build_gateway
from gateway.cli.common import add_config_argument, load_with_profile
from gateway.clock import SystemClock


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the gateway until SIGTERM or Ctrl-C")
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, profile = load_with_profile(args)
    gateway = build_gateway(config, SystemClock(), profile=profile)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    gateway.run(stop)
    return 0
