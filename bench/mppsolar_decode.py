"""Run by the bench venv's interpreter (mppsolar installed there, never in .venv): mppsolar's JK decoder's rate.

Usage: ``python bench/mppsolar_decode.py FRAME_HEX SECONDS``; prints one JSON object.
"""

import json
import sys
import time
from importlib.metadata import version

from mppsolar.protocols.jkserial import jkserial  # type: ignore[import-not-found]

COMMAND = "getBalancerData"  # jkserial's read-all: the whole NW frame, decoded positionally


def main() -> None:
    frame = bytes.fromhex(sys.argv[1])
    seconds = float(sys.argv[2])
    protocol = jkserial()
    protocol.get_full_command(COMMAND)  # sets the command definition decode() uses
    decoded = protocol.decode(frame, COMMAND)
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            protocol.decode(frame, COMMAND)
        count += 100
    cells = [decoded[f"Voltage_Cell{i:02d}"][0] for i in range(1, 17)]
    print(json.dumps({"rate_per_s": count / elapsed, "cells_v": cells, "version": version("mppsolar")}))


if __name__ == "__main__":
    main()
