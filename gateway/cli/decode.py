"""``bms-gateway decode jk-uart HEX``: decode one captured frame to JSON (the password stays redacted)."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.bms import jk_nw
from gateway.errors import FrameError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("decode", help="decode a captured BMS frame (hex) to JSON")
    parser.add_argument("protocol", choices=["jk-uart"], help="the frame's protocol")
    parser.add_argument("hex", nargs="+", help="the frame as hex; spaces allowed")
    parser.set_defaults(func=run)


def parse_hex(words: list[str]) -> bytes:
    text = "".join(words).replace(":", "").replace("0x", "")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise FrameError("not hex", "expected pairs of hex digits, e.g. '4E 57 01 1B ...'") from None


def run(args: argparse.Namespace) -> int:
    reply = jk_nw.decode_reply(parse_hex(args.hex))
    reading = jk_nw.to_reading(reply, measured_at_s=0.0, pack_id="decoded")
    out = {
        "device": reading.device.to_json(),
        "state": reading.state.to_json(),
        "settings": reading.settings.to_json(),
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if not reply.protocol_version_stated:
        print(
            f"note: no protocol version (tag 0xC0) in the frame: current read as version {reply.protocol_version}, "
            "the vendor's default",
            file=sys.stderr,
        )
    return 0
