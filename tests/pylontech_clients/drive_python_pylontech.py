"""Poll a battery with the PyPI client ``python-pylontech`` (0.3.3) as an inverter would; write JSON.

Usage: python drive_python_pylontech.py PORT OUT.json (the client's directory on PYTHONPATH).

The client reads each answer with ``readline()``, which waits for a newline that Pylontech frames never
send, so every read lasts the port's timeout; it is shortened from the client's 2 s to keep the test quick.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pylontech


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def main() -> None:
    port, out_path = sys.argv[1], sys.argv[2]
    client = pylontech.Pylontech(serial_port=port, baudrate=9600)
    client.s.timeout = 0.4
    result = {
        "protocol_version": client.get_protocol_version(),
        "manufacturer_info": client.get_manufacturer_info(),
        "system_parameters": client.get_system_parameters(),
        "management_info": client.get_management_info(2),
        "serial_number": client.get_module_serial_number(2),
        "values": client.get_values(),
        "values_single": client.get_values_single(3),
    }
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(_plain(result), out)


if __name__ == "__main__":
    main()
