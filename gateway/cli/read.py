"""``bms-gateway read -c FILE [--json]``: poll the BMS once and print what it says."""

from __future__ import annotations

import argparse
import json
import logging

from gateway.app import open_driver
from gateway.cli.common import add_config_argument, load
from gateway.cli.render import render_reading
from gateway.clock import SystemClock
from gateway.plausibility import implausibility


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("read", help="poll the BMS once and print state and settings")
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON (password never included)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    if not args.debug:
        # One poll: a failure is the one error line main() prints; the link's "port lost" warning would repeat it.
        logging.getLogger("gateway.transport").setLevel(logging.ERROR)
    driver = open_driver(config.bms, SystemClock())
    try:
        readings = driver.read()
    finally:
        driver.close()
    for reading in readings:
        problem = implausibility(reading)
        if args.json:
            out = reading.to_json()
            out["implausible"] = problem
            print(json.dumps(out, indent=2, ensure_ascii=False))
        else:
            print(render_reading(reading))
            if problem:
                print(f"IMPLAUSIBLE (the gateway would not use this reading): {problem}")
    return 0
