"""``bms-gateway``: the command line. One module per subcommand, each with ``add_parser``.

Every :class:`~gateway.errors.GatewayError` ends as one line on stderr and a non-zero exit status; a
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import gateway
from gateway.errors import ConfigError, GatewayError, ProfileError, error_lines

COMMANDS = (
    "run",
    "check",
    "read",
    "scan",
    "control",
    "status",
    "report",
    "packs",
    "profiles",
    "monitor",
    "export_dbc",
    "decode",
    "simulate",
    "demo",
)
"""Modules of gateway.cli, one per subcommand (``export_dbc`` registers ``export-dbc``)."""

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bms-gateway", description="JK BMS to inverter gateway: read the BMS, derive safe limits, speak CAN."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {gateway.__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"gateway.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = False
    try:
        # Inside the handler: building the parser imports every subcommand (python-can, pymodbus, ...), the
        # slowest part of start-up and where a Ctrl-C most often lands.
        args = build_parser().parse_args(argv)
        debug = args.debug
        level = logging.DEBUG if debug else logging.INFO
        root = logging.getLogger()
        if root.handlers:  # embedded (tests, a host program): keep their handlers, as basicConfig would
            root.setLevel(level)
        else:
            from gateway import logging_setup  # here, not at the top: less start-up before the Ctrl-C handler

            # One line per record, journald-friendly, repeats rate-limited (a dead adapter must not fill the SD card).
            logging_setup.configure(level)
        status: int = args.func(args)
        return status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except GatewayError as exc:
        if debug:
            raise
        message, *hint = error_lines(exc)
        print(f"bms-gateway: error: {message}", *hint, sep="\n", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, ConfigError | ProfileError) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
