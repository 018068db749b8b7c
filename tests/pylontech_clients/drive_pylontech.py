"""Poll a battery with the PyPI client ``pylontech`` (0.1.3) as an inverter would; write what it parsed as JSON.

Usage: python drive_pylontech.py PORT PACKS OUT.json (the client's directory on PYTHONPATH).

The client sets RTS around each send (adapters with a transmit-enable pin); a pty has no RTS line, as an
adapter with automatic direction control has none to drive. So the port is opened through a pyserial URL
handler ``pty://`` whose RTS is a no-op; the client's own code path for URLs does the rest.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from typing import Any

import serial
from pylontech import PylontechStack


class _PtySerial(serial.Serial):  # type: ignore[misc]
    def open(self) -> None:
        self.port = str(self.port).split("://", 1)[1]
        super().open()

    def _update_rts_state(self) -> None:
        with contextlib.suppress(OSError):  # no RTS line on a pty
            super()._update_rts_state()


def _register_pty_urls() -> None:
    package = types.ModuleType("gw_pty_urls")
    package.__path__ = []
    handler = types.ModuleType("gw_pty_urls.protocol_pty")
    handler.Serial = _PtySerial  # type: ignore[attr-defined]
    sys.modules["gw_pty_urls"] = package
    sys.modules["gw_pty_urls.protocol_pty"] = handler
    serial.protocol_handler_packages.append("gw_pty_urls")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def main() -> None:
    port, packs, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    _register_pty_urls()
    stack = PylontechStack(device=f"pty://{port}", baud=9600, manualBattcountLimit=packs)
    result = dict(stack.update())
    # Commands PylontechStack does not poll by itself, through the same client objects.
    stack.pylon.send(stack.encode.getProtocolVersion())
    stack.decode.decode_header(stack.pylon.receive()[0])
    result["ProtocolVersion"] = dict(stack.decode.decodePotocolVersion())
    stack.pylon.send(stack.encode.getManufacturerInfo())
    stack.decode.decode_header(stack.pylon.receive()[0])
    result["ManufacturerInfo"] = dict(stack.decode.decodeManufacturerInfo())
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(_plain(result), out)


if __name__ == "__main__":
    main()
