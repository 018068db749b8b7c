"""``bms-gateway monitor``: the traffic on a CAN bus, decoded with a profile (what the inverter sees).

With an RS485 profile it listens to (or, with ``--poll``, polls as an inverter would) a serial line or a Modbus
TCP server instead: :mod:`gateway.cli.monitor_rs485`.

Every frame is one line: seconds since start, who sends it by the profile (``bat`` the battery frames, ``inv``
the inverter's, ``---`` an id the profile does not know, shown raw), and its fields with units. The bus comes
from the config (``-c FILE``) or from ``--interface/--channel [--bitrate]``, the profile from the config or
``--profile``. It only listens: nothing is ever sent. ``--log FILE`` and ``--hex FILE`` decode recorded traffic
instead (:mod:`gateway.cli.monitor_offline`).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Final

import can

from gateway import app
from gateway.cli import monitor_offline, monitor_rs485
from gateway.cli.common import DEFAULT_CONFIG, add_duration_argument, detach_stdout, stop_after, stop_on_signals
from gateway.cli.frames import FrameMonitor
from gateway.config import load_config
from gateway.effective import load_config_profile, resolve
from gateway.errors import ConfigError, LinkError
from gateway.profiles import Profile, load_profile
from gateway.rs485.profile import is_rs485_profile
from gateway.rs485.server import load_output_profile
from gateway.transport.can_link import CanSettings

RECV_TIMEOUT_S: Final = 0.2
"""Longest one ``recv`` blocks, s: bounds how late a stop or the end of ``--duration`` is noticed."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="decode the frames on a CAN bus or an RS485 line with a profile (RS485: or poll with --poll), "
        "or those in a CAN log (--log) or a file of RS485 frames (--hex)",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help=f"take bus and profile from this config (default {DEFAULT_CONFIG})",
    )
    parser.add_argument("--profile", metavar="NAME", help="profile name or file (default: the config's)")
    parser.add_argument("--interface", metavar="I", help="python-can interface, e.g. socketcan (instead of -c)")
    parser.add_argument("--channel", metavar="C", help="python-can channel, e.g. can0 (with --interface)")
    parser.add_argument("--bitrate", type=int, metavar="B", help="bit/s (default: the config's, else the profile's)")
    parser.add_argument("--changes", action="store_true", help="show a frame only when its payload changed")
    add_duration_argument(parser)
    monitor_rs485.add_arguments(parser)
    monitor_offline.add_arguments(parser)
    parser.set_defaults(func=run)


def _bus_and_profile(args: argparse.Namespace) -> tuple[CanSettings, Profile]:
    if args.interface is None:
        for flag, given in (("--channel", args.channel), ("--bitrate", args.bitrate)):
            if given is not None:
                raise ConfigError("", f"{flag} goes with --interface (without it, the bus comes from -c FILE)")
        if args.config is None:
            args.config = DEFAULT_CONFIG
        config = load_config(args.config)
        profile = load_config_profile(config) if args.profile is None else load_profile(args.profile)
        can_config = config.inverter.can
        effective = resolve(config, profile)  # raises when the config names no CAN adapter
        assert can_config is not None
        settings = CanSettings(
            interface=can_config.interface,
            channel=can_config.channel,
            bitrate=effective.can_bitrate.value,
            extra=can_config.extra,
        )
        return settings, profile
    if args.config is not None:
        raise ConfigError("", "give either -c FILE or --interface/--channel, not both")
    if args.channel is None or args.profile is None:
        raise ConfigError("", "--interface needs --channel and --profile")
    if args.bitrate is not None and args.bitrate <= 0:
        raise ConfigError("", f"--bitrate must be a positive number of bit/s, got {args.bitrate}")
    profile = load_profile(args.profile)
    bitrate = profile.bitrate if args.bitrate is None else args.bitrate
    return CanSettings(interface=args.interface, channel=args.channel, bitrate=bitrate), profile


def open_bus(settings: CanSettings) -> can.BusABC:
    """The bus, or one line saying why not. :raises ConfigError: unknown interface. :raises LinkError:"""
    try:
        return app.can_bus(**settings.bus_kwargs())
    except NotImplementedError as error:  # python-can: unknown interface name, or one this platform lacks
        raise ConfigError("", f"CAN: {error}") from None
    except (can.CanError, OSError, ValueError, ImportError) as error:
        raise LinkError(f"CAN: cannot open {settings.describe()}: {error}") from None


def _rs485_setup(args: argparse.Namespace) -> monitor_rs485.Rs485Setup | None:
    """The RS485 setup when the profile (``--profile``, else the config's) is an RS485 one, else None."""
    if args.profile is not None:
        if not is_rs485_profile(args.profile):
            return None
        config = None if args.config is None else load_config(args.config)
        return monitor_rs485.rs485_setup(args, load_output_profile(args.profile, "--profile"), config)
    if args.interface is not None or args.channel is not None or args.bitrate is not None:
        return None  # CAN options: the CAN path says what is wrong with them
    config = load_config(args.config or DEFAULT_CONFIG)
    if not is_rs485_profile(config.inverter.profile):
        return None
    profile = load_output_profile(config.inverter.profile, "inverter.profile")
    return monitor_rs485.rs485_setup(args, profile, config)


def run(args: argparse.Namespace) -> int:
    if monitor_offline.wanted(args):
        return monitor_offline.run_offline(args)
    setup = _rs485_setup(args)
    if setup is not None:
        return monitor_rs485.run_rs485(setup, args.duration)
    for flag in monitor_rs485.RS485_FLAGS:
        if getattr(args, flag) not in (None, False):
            raise ConfigError("", f"--{flag.replace('_', '-')} goes with an RS485 profile (this one is CAN)")
    settings, profile = _bus_and_profile(args)
    bus = open_bus(settings)
    monitor = FrameMonitor(profile, sys.stdout, changes_only=args.changes)
    stop = threading.Event()
    started_s = time.monotonic()
    print(
        f"monitor: profile {profile.name} on {settings.describe()} at {settings.bitrate} bit/s; listening only",
        file=sys.stderr,
        flush=True,
    )
    try:
        with stop_on_signals(stop), stop_after(stop, args.duration):
            while not stop.is_set():
                try:
                    message = bus.recv(timeout=RECV_TIMEOUT_S)
                except can.CanError as error:
                    raise LinkError(f"CAN: receive failed on {settings.describe()}: {error}") from None
                if message is not None:
                    monitor.show(message, time.monotonic() - started_s)
    except BrokenPipeError:  # `monitor | head` has all it wanted
        detach_stdout()
    finally:
        bus.shutdown()
    return 0
