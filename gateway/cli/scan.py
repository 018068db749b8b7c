"""``bms-gateway scan --port P [--baudrate B] [--addresses 1-15]``: which JK-PB addresses answer on a bus.

Prints one line per pack that answers (unit, model, firmware, hardware, serial, how it answered) and the
``bms.addresses`` line for the config; warns about a pack at address 0 (the bus master, which collides with
the gateway's polls) and about foreign traffic on the bus. Exit status 0 when packs answered without warnings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from gateway.bms.jk_modbus_scan import DEFAULT_SCAN_ADDRESSES, Found, ScanResult, scan, scan_warnings

_MAX_UNIT = 247


def parse_addresses(text: str) -> tuple[int, ...]:
    """``1-4,7,9-10`` → (1, 2, 3, 4, 7, 9, 10): Modbus units 1–247, each once, in the given order."""
    units: list[int] = []
    for part in text.split(","):
        low_text, dash, high_text = part.strip().partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected units such as 1-15 or 1,3,5, got {text!r}") from None
        if not 1 <= low <= high <= _MAX_UNIT:
            raise argparse.ArgumentTypeError(f"units must be from 1 to {_MAX_UNIT}, low before high, got {part!r}")
        units.extend(u for u in range(low, high + 1) if u not in units)
    return tuple(units)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"expected 0 to 60 seconds, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="list the JK-PB addresses that answer on an RS485 bus",
        description="Poll each unit address for device info (reads only) and warn about a pack at address 0.",
    )
    parser.add_argument("--port", required=True, help="serial port of the RS485 bus")
    parser.add_argument("--baudrate", type=int, default=115200, help="bits per second (default 115200)")
    parser.add_argument(
        "--addresses",
        type=parse_addresses,
        default=DEFAULT_SCAN_ADDRESSES,
        metavar="UNITS",
        help="units to poll, e.g. 1-15 or 1,3,5 (default 1-15, what the DIP switches set besides 0)",
    )
    parser.add_argument("--timeout", type=_seconds, default=0.3, metavar="S", help="wait per reply (default 0.3)")
    parser.add_argument(
        "--listen", type=_seconds, default=1.0, metavar="S", help="listen for another master first (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


_WIDTHS = (4, 16, 9, 8, 12, 7)
_HEADER = ("unit", "model", "firmware", "hardware", "serial", "read by")


def _line(cells: tuple[str, ...]) -> str:
    return "  ".join(f"{cell:<{width}}" for cell, width in zip(cells, _WIDTHS, strict=True)).rstrip()


def _row(pack: Found) -> str:
    device = pack.device
    return _line(
        (
            str(pack.address),
            device.model or "?",
            device.software_version or "?",
            device.hardware_version or "?",
            device.serial_number or "-",
            pack.method,
        )
    )


def _to_json(result: ScanResult, warnings: list[str]) -> dict[str, Any]:
    return {
        "port": result.port,
        "addresses_polled": list(result.addresses),
        "found": [
            {
                "address": p.address,
                "device": p.device.to_json(),
                "method": p.method,
                "reported_address": p.reported_address,
            }
            for p in result.found
        ],
        "foreign_bytes": result.foreign_bytes,
        "warnings": warnings,
    }


def run(args: argparse.Namespace) -> int:
    if not args.debug:
        logging.getLogger("gateway.bms").setLevel(logging.ERROR)  # a silent address is the normal case here
    if not args.json:
        print(f"scanning {args.port} at {args.baudrate} bit/s, {len(args.addresses)} units", file=sys.stderr)
    result = scan(
        args.port,
        baudrate=args.baudrate,
        addresses=args.addresses,
        timeout_s=args.timeout,
        listen_s=args.listen,
    )
    warnings = scan_warnings(result)
    if args.json:
        print(json.dumps(_to_json(result, warnings), indent=2, ensure_ascii=False))
    else:
        if result.found:
            print(_line(_HEADER))
            for pack in result.found:
                print(_row(pack))
            print(f"bms.addresses: [{', '.join(str(p.address) for p in result.found)}]")
        for warning in warnings:
            print(f"bms-gateway: warning: {warning}", file=sys.stderr)
    return 0 if result.found and not warnings else 1
