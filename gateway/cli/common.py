"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from gateway.config import Config, load_config
from gateway.effective import load_config_profile
from gateway.errors import ConfigError
from gateway.profiles import Profile
from gateway.rs485.profile import is_rs485_profile
from gateway.rs485.server import load_output_profile

DEFAULT_CONFIG = Path("/etc/bms-gateway/config.yaml")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"config file (default {DEFAULT_CONFIG})",
    )


def _configure_logging(args: argparse.Namespace, config: Config) -> None:
    if not args.debug:
        logging.getLogger().setLevel(config.logging.level.upper())
        # python-can logs every failed open on its own; we log one line per episode instead.
        logging.getLogger("can").setLevel(logging.CRITICAL)


def load_with_profile(args: argparse.Namespace) -> tuple[Config, Profile]:
    """The config ``--config`` names and the CAN profile it names; set the log level from the config.

    :raises ConfigError: bad config, or ``inverter.profile`` names no loadable profile (an RS485 profile
        included: the caller wants a CAN one).
    :raises ProfileError: the profile file is invalid.
    """
    config = load_config(args.config)
    if is_rs485_profile(config.inverter.profile):
        raise ConfigError(
            "inverter.profile", f"{config.inverter.profile} is an RS485 profile; this command needs a CAN profile"
        )
    profile = load_config_profile(config)
    _configure_logging(args, config)
    return config, profile


def uses_rs485(config: Config) -> bool:
    """The inverter output is an RS485 profile (the inverter polls us)."""
    return is_rs485_profile(config.inverter.profile)


def load(args: argparse.Namespace) -> Config:
    """The config, for commands that do not use the profile. The profile is loaded all the same (CAN or RS485):
    a config whose ``inverter.profile`` is unusable is rejected by every command, with the same error line."""
    config = load_config(args.config)
    if uses_rs485(config):
        load_output_profile(config.inverter.profile, "inverter.profile")
        _configure_logging(args, config)
        return config
    return load_with_profile(args)[0]


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_duration_argument(parser: argparse.ArgumentParser) -> None:
    """``--duration S``: stop by itself after S seconds (for scripts and tests)."""
    parser.add_argument(
        "--duration", type=_positive_seconds, metavar="S", help="stop after S seconds (default: until Ctrl-C)"
    )


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM and SIGINT while inside; the previous handlers come back afterwards.

    Only the main thread may install handlers; elsewhere (a test calling ``main`` in a thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def stop_after(stop: threading.Event, duration_s: float | None) -> Iterator[None]:
    """Set ``stop`` after ``duration_s`` (None: never) while inside."""
    if duration_s is None:
        yield
        return
    timer = threading.Timer(duration_s, stop.set)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def detach_stdout() -> None:
    """After a BrokenPipeError (``... | head`` closed the pipe): point stdout at /dev/null, so the exit's flush
    of the remaining buffer cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
