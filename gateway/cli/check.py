"""``bms-gateway check -c FILE``: validate the config and profile; show each value in force and its origin."""

from __future__ import annotations

import argparse
import json

from gateway.app import limits_settings, open_driver
from gateway.cli import EXIT_FAILURE
from gateway.cli.common import add_config_argument, load
from gateway.cli.render import render_thresholds
from gateway.cli.service_reading import announce, ask_service
from gateway.clock import SystemClock
from gateway.commissioning import Severity, review, verdict
from gateway.config import Config
from gateway.limits import Thresholds, derive_thresholds
from gateway.model import PackReading
from gateway.output_in_force import output_in_force
from gateway.sim.scenarios import SCENARIOS
from gateway.transport.port_lock import PortInUse

EXIT_NOT_READY = EXIT_FAILURE
"""The config is valid, but this machine is not ready for it (a serial port it names is missing)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a config file and this machine for it (exit status 2 when invalid, 1 when not ready here)",
    )
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the validated config as JSON")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--bms", action="store_true", help="also poll the BMS once and show the limit thresholds derived from it"
    )
    source.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        help="show the limit thresholds derived for a simulated BMS (no hardware needed)",
    )
    parser.set_defaults(func=run)


def _bms_reading(args: argparse.Namespace, config: Config) -> PackReading | None:
    if args.scenario:
        return SCENARIOS[args.scenario].step(0.0).reading
    if not args.bms:
        return None
    driver = open_driver(config.bms, SystemClock())
    try:
        return driver.read()[0]
    except PortInUse as busy:  # the service polls the BMS: its last reading (gateway.cli.service_reading)
        service = ask_service(busy, args.config)
        announce(service)
        return service.readings[0]
    finally:
        driver.close()


def _thresholds(reading: PackReading, config: Config) -> Thresholds:
    cells = reading.settings.cell_count or reading.state.cell_count
    return derive_thresholds(reading.settings, cells, limits_settings(config))


def describe_control(config: Config) -> str:
    """What may write to the BMS, for the ``control:`` line (MQTT control's safety rules are config errors)."""
    control, mqtt = config.control, config.mqtt
    if not control.enabled:
        return "off (nothing writes to the BMS)"
    if not (control.mqtt and mqtt.enabled):
        return "bms-gateway control only (Home Assistant switches need control.mqtt: true and mqtt.enabled)"
    transport = "TLS" if mqtt.tls.enabled else "loopback"
    return (
        f"bms-gateway control and Home Assistant switches (broker {mqtt.host}:{mqtt.port} as {mqtt.username}, "
        f"{transport}): the broker's ACL decides who may publish to {mqtt.topic_prefix}/+/control/+/set"
    )


def run(args: argparse.Namespace) -> int:
    config = load(args)  # a CAN or an RS485 profile
    output = output_in_force(config)
    failsafe = output.failsafe
    findings = review(config)  # ports, speeds, CAN options: what this machine shows without the BMS
    not_ready = any(finding.severity is Severity.PROBLEM for finding in findings)
    reading = None if not_ready and args.bms else _bms_reading(args, config)  # a poll could only fail
    thresholds = None if reading is None else _thresholds(reading, config)
    if args.json:
        out = {
            "config": config.to_json(),
            "profile": {"name": output.profile, "path": output.path},
            "effective": {key: {"value": value, "origin": origin} for key, value, origin in output.rows},
            "thresholds": None if thresholds is None else thresholds.to_json(),
            "findings": [finding.to_json() for finding in findings],
            "failsafe": failsafe.to_json(),
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return EXIT_NOT_READY if not_ready else 0
    print(f"{args.config}: {verdict(findings)}")
    for finding in findings:
        print("\n".join(finding.lines()))
    print(f"profile {output.profile} ({output.path}): {', '.join(output.inverters)}")
    print(f"control: {describe_control(config)}")
    width = max(len(key) for key, _, _ in output.rows)
    for key, value, origin in output.rows:
        print(f"  {key:<{width}}  {value!s:<8}  from {origin}{failsafe.row_note(key)}")
    print("\n".join(failsafe.lines()))
    if thresholds is not None and reading is not None:
        print(f"limit thresholds for {reading.pack_id} ({thresholds.cell_count} cells), per cell:")
        print(render_thresholds(thresholds))
    return EXIT_NOT_READY if not_ready else 0
