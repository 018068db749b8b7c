"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gateway.config import Config, load_config
from gateway.effective import load_config_profile
from gateway.profiles import Profile

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


def load_with_profile(args: argparse.Namespace) -> tuple[Config, Profile]:
    """The config ``--config`` names and the profile it names; set the log level from the config.

    :raises ConfigError: bad config, or ``inverter.profile`` names no loadable profile.
    :raises ProfileError: the profile file is invalid.
    """
    config = load_config(args.config)
    profile = load_config_profile(config)
    if not args.debug:
        logging.getLogger().setLevel(config.logging.level.upper())
        # python-can logs every failed open on its own; we log one line per episode instead.
        logging.getLogger("can").setLevel(logging.CRITICAL)
    return config, profile


def load(args: argparse.Namespace) -> Config:
    """The config, for commands that do not use the profile. The profile is loaded all the same: a config whose
    ``inverter.profile`` is unusable is rejected by every command, with the same error line."""
    return load_with_profile(args)[0]
