"""``bms-gateway demo``: the whole chain on simulated hardware, live.

A simulated JK BMS speaks the real wire protocol on one end of a null-modem (two pseudo-terminals), the gateway
polls it through the other end exactly as it would a USB adapter, derives limits, and sends the profile's CAN
frames on a python-can ``virtual`` bus, where a simulated inverter decodes them and answers with its
heartbeat. The screen shows what the BMS says next to what the inverter hears.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from gateway.runtime import Snapshot
from gateway.sim.inverter import InverterSimulator
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.values import Value

DEFAULT_DEMO_CONFIG = Path("config/demo.yaml")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run the whole chain on simulated hardware and show it live")
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_DEMO_CONFIG, metavar="FILE")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="normal-charge")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    parser.set_defaults(func=run)


def _flag(values: dict[str, Value], name: str) -> str:
    return {True: "yes", False: "NO"}.get(bool(values[name])) if name in values else "?"  # type: ignore[return-value]


def _fmt(values: dict[str, Value], name: str, fmt: str, unit: str) -> str:
    value = values.get(name)
    return "–" if value is None or isinstance(value, str) else f"{value:{fmt}} {unit}"


def _on(flag: bool) -> str:
    return "on" if flag else "OFF"


def render(snapshot: Snapshot, heard: dict[str, Value], heard_age_s: float | None, scenario: str) -> str:
    lines = [f"bms-gateway demo · scenario {scenario} · {time.strftime('%H:%M:%S')} · Ctrl-C to stop", ""]
    reading = snapshot.reading
    if reading is None:
        lines.append(f"BMS       waiting for the first reading ({snapshot.last_error or 'polling'})")
    else:
        s = reading.state
        temps = "/".join("–" if t is None else f"{t:.0f}" for t in s.battery_temperatures_c)
        lines += [
            "BMS       " + render_cells(reading).replace("\n", "\n          "),
            f"          {s.pack_voltage_v:.2f} V  {s.current_a:+.1f} A  SOC {s.soc_pct:.0f} %  T {temps} °C"
            f"  MOS {s.mos_temperature_c:.0f} °C",
            f"          MOS charge {_on(s.charge_mos_on)}  discharge {_on(s.discharge_mos_on)}"
            f"  balancer {'on' if s.balancer_on else 'off'}  alarms: {', '.join(sorted(s.alarms)) or 'none'}",
        ]
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


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not args.debug:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("can").setLevel(logging.CRITICAL)
    clock = SystemClock()
    with (
        tempfile.TemporaryDirectory(prefix="bms-gateway-demo-") as tmp,
        NullModem(Path(tmp), names=("bms", "gateway")) as modem,
    ):
        config = dataclasses.replace(config, bms=dataclasses.replace(config.bms, port=str(modem.b_path)))
        simulator = JkUartSimulator(SCENARIOS[args.scenario], clock, port=str(modem.a_path))
        gateway = build_gateway(config, clock)
        assert config.inverter.can is not None
        inverter_bus = can.Bus(
            interface=config.inverter.can.interface, channel=config.inverter.can.channel, ignore_config=True
        )
        inverter = InverterSimulator(gateway.profile, inverter_bus)
        stop = threading.Event()
        runner = threading.Thread(target=gateway.run, args=(stop,), name="gateway", daemon=True)
        simulator.start()
        inverter.start()
        runner.start()
        interactive = sys.stdout.isatty()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                screen = render(gateway.loop.snapshot(), inverter.values(), inverter.last_heard_age_s(), args.scenario)
                print(("\033[H\033[J" if interactive else "\n") + screen, flush=True)
                time.sleep(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            runner.join(timeout=5)
            inverter.stop()
            inverter_bus.shutdown()
            simulator.stop()
    return 0
