"""``bms-gateway read -c FILE [--json]``: poll the BMS once and print what it says.

While the service runs (it holds the port), its last reading instead, said so in one line on stderr.

Several packs: each pack (``P1``, ``P2``, ... in polling order, its cells ``P2 C07``) with its own limits, then
the battery they make (its total current, SOC and power, where its extreme cells are) with the limits the
inverter would be told. With ``--json`` one document per pack, then one for the battery (``pack_id``
``battery``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Final

from gateway.app import limits_settings, open_battery
from gateway.battery import aggregate, pack_labels
from gateway.bms.driver import MultiPackDriver
from gateway.cli.common import add_config_argument, load
from gateway.cli.render import render_battery, render_limits, render_reading, render_thresholds
from gateway.cli.service_reading import announce, ask_service
from gateway.clock import SystemClock
from gateway.config import Config
from gateway.limits import LimitsSettings, compute_limits
from gateway.limits.engine import EngineResult
from gateway.limits.settings import AUTO_CAPACITY_SPREAD, CurrentSharing
from gateway.limits.system import PackLimits, sharing_in_force, system_limits
from gateway.model import Limits, PackReading
from gateway.plausibility import implausibility
from gateway.poll_rate import PackThresholds, PollRate, decide_poll_rate
from gateway.transport.port_lock import PortInUse

LIMITS_TOLD: Final = "limits (what the inverter would be told):"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("read", help="poll the BMS once and print state and settings")
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON (password never included)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    if not args.debug:
        # One poll: a failure is the one error line main() prints; the link's "port lost" warning would repeat it.
        for name in ("gateway.transport", "gateway.bms"):
            logging.getLogger(name).setLevel(logging.ERROR)
    driver = open_battery(config, SystemClock())
    try:
        readings = driver.read()
        pack_errors = {k: str(e) for k, e in driver.pack_errors.items()} if isinstance(driver, MultiPackDriver) else {}
    except PortInUse as busy:  # the service polls the BMS: show its last reading (gateway.cli.service_reading)
        service = ask_service(busy, args.config)
        announce(service)
        readings, pack_errors = service.readings, dict(service.pack_errors)
    finally:
        driver.close()
    for pack_id, why in pack_errors.items():  # the packs that answered are printed below
        print(f"bms-gateway: warning: pack {pack_id}: {why}", file=sys.stderr)
    tuning = limits_settings(config)
    results = [
        # What the gateway would send for this one reading, as at start-up (no history).
        compute_limits(reading, tuning, None, reading.measured_at_s, max_age_s=config.failsafe.bms_timeout_s)
        for reading in readings
    ]
    labels = pack_labels([r.pack_id for r in readings])
    packs = [PackLimits(labels[r.pack_id], r, result.limits) for r, result in zip(readings, results, strict=True)]
    sharing = sharing_in_force(packs, tuning)
    several = len(readings) > 1
    # The battery the inverter is told about: the packs' own limits combined (gateway.limits.system), as the
    # gateway would send them at start-up.
    limits = system_limits(packs, tuning) if several else results[0].limits
    rate = poll_rate_for(config, readings, results, limits)
    for number, (reading, result) in enumerate(zip(readings, results, strict=True), start=1):
        problem = implausibility(reading)
        if args.json:
            out = reading.to_json()
            if several:
                out["current_sharing"] = sharing.value
            out["implausible"] = problem
            out["limits"] = result.limits.to_json()
            out["thresholds"] = None if result.thresholds is None else result.thresholds.to_json()
            if not several:
                out["poll_rate"] = rate.to_json()
            print(json.dumps(out, indent=2, ensure_ascii=False))
        else:
            label = f"P{number}" if several else None
            print(render_reading(reading, label))
            if problem:
                print(f"IMPLAUSIBLE (the gateway would not use this reading): {problem}")
            print(f"{label}'s own limits (the battery's are below):" if several else LIMITS_TOLD)
            print(render_limits(result.limits))
            if result.thresholds is not None:
                print("thresholds:")
                print(render_thresholds(result.thresholds))
    if not several:
        if not args.json:
            print(render_poll_rate(rate))
        return 0
    battery = aggregate(readings)
    if args.json:
        out = battery.reading.to_json()
        out.update(
            packs=list(battery.online), current_sharing=sharing.value, limits=limits.to_json(), poll_rate=rate.to_json()
        )
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(render_battery(battery))
        print("battery limits (what the inverter would be told, from every pack's own):")
        print(render_limits(limits))
        print(f"current shared among the {len(readings)} packs by {sharing.value} ({_why(sharing, tuning)})")
        print(render_poll_rate(rate))
    return 0


def poll_rate_for(
    config: Config, readings: Sequence[PackReading], results: Sequence[EngineResult], limits: Limits
) -> PollRate:
    """The rate the service would poll at after this reading (adaptive polling, :mod:`gateway.poll_rate`)."""
    margin_c = limits_settings(config).temperature_margin_c
    return decide_poll_rate(
        [PackThresholds(r, result.thresholds, margin_c) for r, result in zip(readings, results, strict=True)],
        limits,
        True,
        "normal",
        PollRate(config.bms.poll_interval_s, False, "slow"),
        max(r.measured_at_s for r in readings),
        slow_interval_s=config.bms.poll_interval_s,
        fast_interval_s=config.bms.fast_poll_interval_s,
    )


def render_poll_rate(rate: PollRate) -> str:
    """One line: ``poll rate: every 0.2 s (fast: cell 7 past the charge knee 3.400 V (3.420 V))``."""
    return f"poll rate: every {rate.interval_s:g} s ({rate.why})"


def _why(sharing: CurrentSharing, tuning: LimitsSettings) -> str:
    if tuning.current_sharing is not CurrentSharing.AUTO:
        return "limits.current_sharing"
    spread = f"{AUTO_CAPACITY_SPREAD:.0%}"
    if sharing is CurrentSharing.CAPACITY:
        return f"auto: capacities differ by more than {spread}"
    return f"auto: capacities within {spread}, or not all reported"
