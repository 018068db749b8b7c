"""``bms-gateway demo``: the whole chain on simulated hardware, live.

A simulated JK BMS speaks the real wire protocol on one end of a null-modem (two pseudo-terminals), the gateway
polls it through the other end exactly as it would a USB adapter, derives limits, and sends the profile's CAN
frames on a python-can ``virtual`` bus, where a simulated inverter decodes them and answers with its
heartbeat. That inverter obeys what it hears (``--inverter disobeys``: it does not), and the current it lets flow
is what the simulated BMS reports (:mod:`gateway.sim.demo_plant`). The screen shows what the BMS says next to what
the inverter hears. The demo's config is package data, so ``bms-gateway demo`` runs from any directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.resources
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import can

from gateway.app import build_gateway
from gateway.cli.render import render_cells, render_limits
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.runtime import FailsafeState, Snapshot
from gateway.sim.cycle_run import INVERTER_TIMEOUT_S
from gateway.sim.demo_plant import INVERTERS, DemoPlant, InverterBehaviour
from gateway.sim.inverter import InverterSimulator
from gateway.sim.inverter_model import Heard
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.values import Value

DEMO_CONFIG_RESOURCE = "demo.yaml"
"""The demo's config, package data beside this module (read through importlib.resources, not the working
directory)."""
_LIMIT_NAMES = (
    "charge_voltage_limit_v",
    "charge_current_limit_a",
    "discharge_current_limit_a",
    "discharge_voltage_limit_v",
    "charge_enable",
    "discharge_enable",
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run the whole chain on simulated hardware and show it live")
    parser.add_argument(
        "-c", "--config", type=Path, metavar="FILE", help="a config of your own (default: the demo's, built in)"
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="normal-charge")
    parser.add_argument(
        "--inverter",
        choices=[b.value for b in InverterBehaviour],
        default=InverterBehaviour.OBEYS.value,
        help="whether the simulated inverter follows the limits it hears (default: obeys; disobeys ignores every "
        "limit and both enable bits: CVL falls to the pack voltage as the second lever, then the BMS's own "
        "protection trips; an inverter taking more than CCL is enforced: simulate charge-cycle --overshoot 1.2)",
    )
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    parser.set_defaults(func=run)


def _flag(values: dict[str, Value], name: str) -> str:
    return {True: "yes", False: "NO"}.get(bool(values[name])) if name in values else "?"  # type: ignore[return-value]


def _fmt(values: dict[str, Value], name: str, fmt: str, unit: str) -> str:
    value = values.get(name)
    return "–" if value is None or isinstance(value, str) else f"{value:{fmt}} {unit}"


def _on(flag: bool) -> str:
    return "on" if flag else "OFF"


def stale_mark(snapshot: Snapshot) -> str:
    """`` [STALE, 12.3 s old]`` while the fail-safe no longer trusts the reading shown (stale or silent), else
    empty: the values on screen are then the last ones the BMS sent, not the pack's now."""
    if snapshot.state not in (FailsafeState.STALE, FailsafeState.SILENT) or snapshot.reading is None:
        return ""
    age = "" if snapshot.reading_age_s is None else f", {snapshot.reading_age_s:.1f} s old"
    return f"  [STALE{age}]"


def render(
    snapshot: Snapshot, heard: dict[str, Value], heard_age_s: float | None, scenario: str, inverter: str = "obeys"
) -> str:
    lines = [
        f"bms-gateway demo · scenario {scenario} · inverter {inverter} · {time.strftime('%H:%M:%S')} · Ctrl-C to stop",
        "",
    ]
    reading = snapshot.reading
    if reading is None:
        lines.append(f"BMS       waiting for the first reading ({snapshot.last_error or 'polling'})")
    else:
        s = reading.state
        stale = stale_mark(snapshot)
        temps = "/".join("–" if t is None else f"{t:.0f}" for t in s.battery_temperatures_c)
        cells, *rows = render_cells(reading).split("\n")
        lines += [
            "BMS       " + cells + stale,
            *(f"          {row}" for row in rows),
            f"          {s.pack_voltage_v:.2f} V  {s.current_a:+.1f} A  SOC {s.soc_pct:.0f} %  T {temps} °C"
            f"  MOS {s.mos_temperature_c:.0f} °C",
            f"          MOS charge {_on(s.charge_mos_on)}  discharge {_on(s.discharge_mos_on)}"
            f"  balancer {'on' if s.balancer_on else 'off'}  alarms: {', '.join(sorted(s.alarms)) or 'none'}",
        ]
        if stale:
            lines[-2] += stale
    lines.append("")
    lines.append(
        "INVERTER  hears: CVL "
        + _fmt(heard, "charge_voltage_limit_v", ".1f", "V")
        + "  CCL "
        + _fmt(heard, "charge_current_limit_a", ".1f", "A")
        + "  DCL "
        + _fmt(heard, "discharge_current_limit_a", ".1f", "A")
        + "  DVL "
        + _fmt(heard, "discharge_voltage_limit_v", ".1f", "V")
    )
    lines.append(
        f"          charge enable {_flag(heard, 'charge_enable')}  discharge enable {_flag(heard, 'discharge_enable')}"
        f"  comm alarm {_flag(heard, 'comm_alarm')}  SOC {_fmt(heard, 'soc_pct', '.0f', '%')}"
        f"  last frame {'–' if heard_age_s is None else f'{heard_age_s:.1f} s'} ago"
    )
    limits = snapshot.limits
    if limits is not None:
        lines += ["", "LIMITS    why:", render_limits(limits, indent="          ")]
    age = "–" if snapshot.reading_age_s is None else f"{snapshot.reading_age_s:.1f} s"
    heartbeat = "–" if snapshot.heartbeat_age_s is None else f"{snapshot.heartbeat_age_s:.1f} s"
    lines += [
        "",
        f"GATEWAY   fail-safe {snapshot.state.value.upper()}  BMS data age {age}"
        f"  inverter {snapshot.inverter_state.value} (heartbeat age {heartbeat})  frames sent {snapshot.frames_sent}",
    ]
    if snapshot.inverter_values:
        measured = "  ".join(
            f"{name.removeprefix('inverter_')} {v.value}" for name, v in snapshot.inverter_values.items()
        )
        lines.append(f"          the inverter measures: {measured}")
    if snapshot.last_error:
        lines.append(f"          last BMS error: {snapshot.last_error}")
    return "\n".join(lines)


def heard_limits(inverter: InverterSimulator) -> Heard | None:
    """The limits the simulated inverter hears; None before the first frames or once it has heard none for
    :data:`INVERTER_TIMEOUT_S` (it has lost the battery)."""
    age_s = inverter.last_heard_age_s()
    values = inverter.values()
    if age_s is None or age_s > INVERTER_TIMEOUT_S or not all(name in values for name in _LIMIT_NAMES):
        return None
    return Heard.of(values)


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        path = args.config or stack.enter_context(
            importlib.resources.as_file(importlib.resources.files(__package__) / DEMO_CONFIG_RESOURCE)
        )
        config = load_config(path)
    if not args.debug:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("can").setLevel(logging.CRITICAL)
    clock = SystemClock()
    with (
        tempfile.TemporaryDirectory(prefix="bms-gateway-demo-") as tmp,
        NullModem(Path(tmp), names=("bms", "gateway")) as modem,
    ):
        config = dataclasses.replace(config, bms=dataclasses.replace(config.bms, port=str(modem.b_path)))
        plant = DemoPlant(SCENARIOS[args.scenario], INVERTERS[InverterBehaviour(args.inverter)], clock)
        simulator = JkUartSimulator(plant.scenario, clock, port=str(modem.a_path))
        gateway = build_gateway(config, clock)
        assert config.inverter.can is not None
        inverter_bus = can.Bus(
            interface=config.inverter.can.interface, channel=config.inverter.can.channel, ignore_config=True
        )
        inverter = InverterSimulator(gateway.profile, inverter_bus)
        stop = threading.Event()
        runner = threading.Thread(target=gateway.run, args=(stop,), name="gateway", daemon=True)
        dc_side = threading.Thread(
            target=plant.run, args=(stop, lambda: heard_limits(inverter)), name="demo-plant", daemon=True
        )
        simulator.start()
        inverter.start()
        runner.start()
        dc_side.start()
        interactive = sys.stdout.isatty()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                screen = render(
                    gateway.loop.snapshot(),
                    inverter.values(),
                    inverter.last_heard_age_s(),
                    args.scenario,
                    args.inverter,
                )
                print(("\033[H\033[J" if interactive else "\n") + screen, flush=True)
                time.sleep(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            runner.join(timeout=5)
            dc_side.join(timeout=5)
            inverter.stop()
            inverter_bus.shutdown()
            simulator.stop()
    return 0
