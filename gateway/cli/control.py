"""``bms-gateway control -c FILE charge|discharge|balancer on|off``: set one BMS switch, then verify it.

Opt-in: refused (exit 1, nothing sent to the BMS) unless the config has ``control.enabled: true`` and
``control.password``. When the service runs, the request goes to it over its control socket
(:mod:`gateway.control_socket`) and its answer is printed: it owns the port and the writes. Without a running
service this command takes the port itself (locked: exclusive), under the same write budget record
(:mod:`gateway.control_budget`). Exit 0 once the BMS's read back shows the switch as asked (or it already was),
1 on a refusal or failure, 2 on bad arguments or config. Every rule is :mod:`gateway.control`'s.
"""

from __future__ import annotations

import argparse
import logging

from gateway.app import open_driver
from gateway.bms.control import Switch
from gateway.cli.common import add_config_argument, load
from gateway.clock import SystemClock
from gateway.control import open_controller, require_control
from gateway.control_socket import ask_service, socket_candidates


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "control", help="set the BMS's charge, discharge or balancer switch (only with control.enabled)"
    )
    add_config_argument(parser)
    parser.add_argument("switch", choices=[s.value for s in Switch], help="which switch")
    parser.add_argument("state", choices=("on", "off"), help="what to set it to")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    require_control(config)  # this config must allow writes too, before anything is asked or opened
    switch, on = Switch(args.switch), args.state == "on"
    answer = ask_service(switch, on, socket_candidates(config.state_dir))
    if answer is not None:
        print(answer)
        return 0
    if not args.debug:
        # The outcome is this command's one line; the link's "port lost" info would repeat an error.
        for name in ("gateway.transport", "gateway.bms"):
            logging.getLogger(name).setLevel(logging.ERROR)
    clock = SystemClock()
    # Opens nothing yet (the first read does, after the checks); locked, so never beside a service's polls.
    driver = open_driver(config.bms, clock, exclusive=True)
    try:
        controller = open_controller(config, driver, clock)
        result = controller.set_switch(switch, on, source="cli")
    finally:
        driver.close()
    print(result.describe())
    return 0
