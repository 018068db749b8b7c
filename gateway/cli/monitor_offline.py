"""``bms-gateway monitor --log FILE`` and ``--hex FILE``: recorded traffic decoded as ``monitor`` shows it live.

* ``--log FILE``: a CAN log in any format python-can's :class:`can.LogReader` reads (it picks the reader by the
  file's extension: candump ``-l`` ``.log``, Vector ``.asc`` and ``.blf``, ``.csv``, PCAN ``.trc``, ...; also
  gzipped). Every frame becomes the line the live CAN monitor prints (:class:`gateway.cli.frames.FrameMonitor`),
  its time the log's timestamp counted from the log's first frame. ``--changes`` as live.
* ``--hex FILE``: RS485 frames, one per line as hex bytes (``#`` starts a comment); a Pylontech ASCII frame may
  also be written as the text it is on the wire (``~20024600...``). Pylontech frames become the lines of the live
  RS485 monitor (:class:`gateway.cli.monitor_rs485.PylontechMonitor`), a response decoded by the request before
  it; Modbus RTU frames (Growatt, Voltronic, modbus-battery) the lines ``monitor --poll`` prints for an answer,
  a response decoded by the read request before it. The time column is the file's line (``L12``).

After the frames, one line on stderr counts them and those that could not be decoded: a capture decoded with
the wrong profile shows at once.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Final, TextIO

import can

from gateway.bms.jk_modbus_frames import crc16
from gateway.cli.common import DEFAULT_CONFIG, detach_stdout
from gateway.cli.frames import FrameMonitor
from gateway.cli.monitor_rs485 import (
    FrameSplitter,
    PylontechMonitor,
    RegisterRead,
    decode_read,
    format_read,
    format_when,
)
from gateway.config import load_config
from gateway.errors import ConfigError, ProfileNotFoundError
from gateway.profiles import Profile, load_profile
from gateway.rs485.profile import is_rs485_profile
from gateway.rs485.profile_spec import RegisterMapSpec, RegisterSpec, Rs485Profile
from gateway.rs485.pylontech_ascii import EOI, SOI
from gateway.rs485.server import load_output_profile

LIVE_FLAGS: Final = (
    "interface",
    "channel",
    "bitrate",
    "duration",
    "port",
    "baudrate",
    "poll",
    "host",
    "tcp_port",
    "address",
    "count",
)
"""Options of a live bus or port (argparse destinations): meaningless with a file."""
LOG_FORMATS: Final = {
    ".log": "candump -l's format, lines like '(1700000000.123456) can0 351#1402740E' (candump's screen output "
    "is not a log: record with candump -l or -L)",
    ".asc": "a Vector ASC log",
    ".blf": "a Vector BLF log",
    ".csv": "python-can's CSV (timestamp,arbitration_id,extended,remote,error,dlc,data)",
    ".trc": "a PCAN TRC trace",
}
LOG_HINT: Final = (
    "python-can picks the reader by the file's extension: .log (candump -l), .asc, .blf, .csv, .trc, .mf4, .db, "
    "each also gzipped (.log.gz)"
)
HEX_HINT: Final = (
    "one frame per line as hex bytes ('7E 32 30 ...', ':' or spaces between them allowed), '#' starts a comment; "
    "a Pylontech frame also as its text ~20024600..."
)
READ_FUNCTIONS: Final = (3, 4)
"""Modbus read functions: holding and input registers."""
MODBUS_EXCEPTION_LEN: Final = 5
MODBUS_REQUEST_LEN: Final = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recorded traffic (instead of a bus or a port; with --profile or -c)")
    group.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="decode a CAN log: any format python-can reads, chosen by the extension (candump -l .log, .asc, .blf, "
        ".csv, .trc; also .gz); times are the log's, from its first frame",
    )
    group.add_argument(
        "--hex",
        type=Path,
        metavar="FILE",
        help="decode RS485 frames with an RS485 profile: one frame per line as hex bytes, '#' starts a comment; "
        "Pylontech frames also as text (~20024600..., the CR may be left out); a response is decoded by the "
        "request before it; Modbus: RTU frames with their CRC; times are the file's lines (L12)",
    )


def wanted(args: argparse.Namespace) -> bool:
    """True when the arguments ask for a file (``--log`` or ``--hex``) instead of a bus or a port."""
    return args.log is not None or args.hex is not None


def run_offline(args: argparse.Namespace) -> int:
    """Decode ``--log`` or ``--hex``. :raises ConfigError: one line (and a hint) on any input it cannot use."""
    if args.log is not None and args.hex is not None:
        raise ConfigError("", "give either --log FILE (a CAN log) or --hex FILE (RS485 frames), not both")
    option = "--log" if args.log is not None else "--hex"
    for flag in LIVE_FLAGS:
        if getattr(args, flag) not in (None, False):
            raise ConfigError("", f"--{flag.replace('_', '-')} is for a live bus or port; {option} reads a file")
    name, key = _profile_name(args)
    rs485 = is_rs485_profile(name)
    try:
        if args.log is not None:
            if rs485:
                raise ConfigError(key, f"{name} is an RS485 profile: --log decodes CAN logs; use --hex FILE")
            return _decode_log(args.log, _can_profile(name, key), changes_only=args.changes)
        if not rs485:
            raise ConfigError(key, f"{name} is a CAN profile: --hex decodes RS485 frames; use --log FILE")
        if args.changes:
            raise ConfigError("", "--changes is for CAN profiles; --hex shows every frame")
        return _decode_hex(args.hex, load_output_profile(name, key))
    except BrokenPipeError:  # `monitor --log x | head` has all it wanted
        detach_stdout()
        return 0


def _profile_name(args: argparse.Namespace) -> tuple[str, str]:
    """The profile to decode with and the option or key that named it: ``--profile``, else the config's."""
    if args.profile is not None:
        return args.profile, "--profile"
    return load_config(args.config or DEFAULT_CONFIG).inverter.profile, "inverter.profile"


def _can_profile(name: str, key: str) -> Profile:
    try:
        return load_profile(name)
    except ProfileNotFoundError as error:
        raise ConfigError(key, str(error)) from None


# --- CAN logs --------------------------------------------------------------------------------------------------


def _format_hint(path: Path) -> str:
    suffixes = [suffix for suffix in path.suffixes if suffix != ".gz"]
    expected = LOG_FORMATS.get(suffixes[-1].lower()) if suffixes else None
    return f"a {''.join(path.suffixes)} file must hold {expected}; {LOG_HINT}" if expected else LOG_HINT


def _open_log(path: Path) -> can.io.generic.MessageReader:
    if path.is_dir():
        raise ConfigError("--log", f"{path} is a directory, not a CAN log")
    try:
        return can.LogReader(path)
    except OSError as error:
        raise ConfigError("--log", f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # a reader that checks the file when it opens it (BLF): see _decode_log
        suffixes = [suffix.lower() for suffix in path.suffixes if suffix.lower() != ".gz"]
        if isinstance(error, ValueError) and (not suffixes or suffixes[-1] not in can.io.player.MESSAGE_READERS):
            extension = "".join(path.suffixes) or "(none)"
            message = f"{path}: python-can reads no log with the extension {extension}"
            raise ConfigError("--log", message, hint=LOG_HINT) from None
        message = f"{path} is not a log python-can reads: {error}"
        raise ConfigError("--log", message, hint=_format_hint(path)) from None


def _decode_log(path: Path, profile: Profile, *, changes_only: bool, out: TextIO | None = None) -> int:
    reader = _open_log(path)
    reader_name = type(reader).__name__
    monitor = FrameMonitor(profile, out or sys.stdout, changes_only=changes_only)
    print(f"monitor: profile {profile.name}, {reader_name} on {path}; times from its first frame", file=sys.stderr)
    read = 0
    first_s: float | None = None
    with reader:
        frames = iter(reader)
        while True:
            try:
                message = next(frames)
            except StopIteration:
                break
            # python-can's readers raise what their parsers meet (ValueError, struct.error, BLFParseError,
            # UnicodeDecodeError, zlib.error, ...) on a file that is not their format: each is the same to the user.
            except Exception as error:
                raise ConfigError(
                    "--log",
                    f"{path} is not a log python-can's {reader_name} reads (after {read} frames): {error}",
                    hint=_format_hint(path),
                ) from None
            first_s = message.timestamp if first_s is None else first_s
            read += 1
            monitor.show(message, message.timestamp - first_s)
    if read == 0:
        raise ConfigError("--log", f"{path}: no CAN frame in it ({reader_name} found none)", hint=_format_hint(path))
    unchanged = f"; {read - monitor.frames} unchanged not shown" if changes_only else ""
    print(
        f"monitor: {path}: {read} frames, {monitor.unknown} with an id the profile does not know, "
        f"{monitor.undecodable} not decodable, {monitor.error_frames} error frames{unchanged}",
        file=sys.stderr,
    )
    return 0


# --- RS485 frames ----------------------------------------------------------------------------------------------


def read_hex_frames(path: Path, *, pylontech: bool) -> list[tuple[int, bytes]]:
    """``(line number, frame)`` for every frame in ``path``. :raises ConfigError: naming the line, with a hint."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("--hex", f"{path} is not a text file", hint=HEX_HINT) from None
    except OSError as error:
        raise ConfigError("--hex", f"cannot read {path}: {error.strerror or error}") from None
    frames: list[tuple[int, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        if pylontech and content.startswith(SOI.decode()) and content.isascii():
            raw = content.encode("ascii")
        else:
            digits = re.sub(r"\b0[xX]|[\s:,]", "", content)
            try:
                raw = bytes.fromhex(digits)
            except ValueError:
                excerpt = content if len(content) <= 40 else content[:37] + "..."
                raise ConfigError("--hex", f"{path} line {number}: not hex: {excerpt!r}", hint=HEX_HINT) from None
        if pylontech and raw.startswith(SOI) and not raw.endswith(EOI):
            raw += EOI  # one frame per line: the line's end is the frame's
        frames.append((number, raw))
    if not frames:
        raise ConfigError("--hex", f"{path}: no frame in it", hint=HEX_HINT)
    return frames


def _decode_hex(path: Path, profile: Rs485Profile, out: TextIO | None = None) -> int:
    frames = read_hex_frames(path, pylontech=profile.pylontech is not None)
    out = out or sys.stdout
    print(f"monitor: profile {profile.name}, RS485 frames in {path}; times are its lines", file=sys.stderr)
    monitor: PylontechMonitor | ModbusRtuMonitor
    if profile.pylontech is not None:
        monitor = PylontechMonitor(profile.pylontech, out)
        for number, raw in frames:
            splitter = FrameSplitter()  # the live monitor's: garbage around a frame is shown raw, as on a line
            pieces = splitter.feed(raw)
            rest = splitter.flush()
            for is_frame, piece in [*pieces, *([(False, rest)] if rest else [])]:
                monitor.show(is_frame, piece, f"L{number}")
    else:
        assert profile.registers is not None
        monitor = ModbusRtuMonitor(profile.registers, out)
        for number, raw in frames:
            monitor.show(raw, f"L{number}")
    print(f"monitor: {path}: {monitor.frames} frames, {monitor.undecoded} not decoded", file=sys.stderr)
    return 0


class ModbusRtuMonitor:
    """Modbus RTU frames to lines: a read request, and its answer decoded as ``monitor --poll`` shows it.

    ``frames`` counts the lines; ``undecoded`` those that are no valid frame (length, CRC), not a read, or an
    answer without the request before it (an answer carries no register address).
    """

    def __init__(self, spec: RegisterMapSpec, out: TextIO) -> None:
        self._registers: list[tuple[str, RegisterSpec]] = [("", register) for register in spec.registers]
        if spec.modules is not None:
            block = spec.modules
            for module in range(block.count):
                base = block.base + module * block.stride
                self._registers += [
                    (f"[module {module + 1}] ", RegisterSpec(base + register.address, register.field))
                    for register in block.registers
                ]
        self._out = out
        self._request: tuple[int, int, int, int] | None = None
        """Unit, function, start, count of the last read request."""
        self.frames = 0
        self.undecoded = 0

    def show(self, raw: bytes, when: float | str) -> None:
        stamp = format_when(when)
        self.frames += 1
        raw_hex = f"[{len(raw)}] " + raw.hex(" ").upper()
        if len(raw) < 4 or crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
            self._undecoded(f"{stamp} --- {'short frame' if len(raw) < 4 else 'bad CRC'} {raw_hex}")
            return
        unit, function = raw[0], raw[1]
        if function & 0x80 and len(raw) == MODBUS_EXCEPTION_LEN:
            head = self._answer_head(unit, function & 0x7F)
            self._print(f"{stamp} bat {head} exception {raw[2]}")
            return
        if function not in READ_FUNCTIONS:
            self._undecoded(f"{stamp} --- unit {unit} fc{function} (not a read) {raw_hex}")
            return
        if len(raw) == 5 + raw[2] and raw[2] % 2 == 0:  # an answer: unit, function, byte count, registers, CRC
            self._answer(stamp, unit, function, raw[3:-2], raw_hex)
        elif len(raw) == MODBUS_REQUEST_LEN:
            start, count = int.from_bytes(raw[2:4], "big"), int.from_bytes(raw[4:6], "big")
            self._request = (unit, function, start, count)
            self._print(f"{stamp} inv unit {unit} fc{function} {start}+{count} request")
        else:
            self._undecoded(f"{stamp} --- unit {unit} fc{function} length does not fit {raw_hex}")

    def _answer_head(self, unit: int, function: int) -> str:
        request = self._request
        if request is None or request[:2] != (unit, function):
            return f"unit {unit} fc{function}"
        return f"unit {unit} fc{function} {request[2]}+{request[3]}"

    def _answer(self, stamp: str, unit: int, function: int, data: bytes, raw_hex: str) -> None:
        request = self._request
        if request is None or request[:2] != (unit, function) or request[3] != len(data) // 2:
            self._undecoded(
                f"{stamp} bat unit {unit} fc{function} {raw_hex} (no read request of this length before it)"
            )
            return
        _, _, start, count = request
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        parts: list[str] = []
        for label in dict.fromkeys(label for label, _ in self._registers):
            inside = tuple(
                register
                for each_label, register in self._registers
                if each_label == label
                and start <= register.address
                and register.address + register.words <= start + count
            )
            if inside:
                read = RegisterRead(start, count, inside, label)
                parts.append(format_read(read, decode_read(read, words)))
        if not parts:
            self._undecoded(
                f"{stamp} bat unit {unit} fc{function} {start}+{count} {raw_hex} (no register of the profile)"
            )
            return
        self._print(f"{stamp} bat unit {unit} fc{function} {start}+{count} {' '.join(parts)}")

    def _undecoded(self, line: str) -> None:
        self.undecoded += 1
        self._print(line)

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)
