"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gateway.config import Config, load_config

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


def load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if not args.debug:
        logging.getLogger().setLevel(config.logging.level.upper())
        # python-can logs every failed open on its own; we log one line per episode instead.
        logging.getLogger("can").setLevel(logging.CRITICAL)
    return config
