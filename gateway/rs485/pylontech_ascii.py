"""The Pylontech RS485 ASCII protocol, battery side: pure frame codec and responder (bytes in, bytes out).

A frame is ``~ VER ADR CID1 CID2 LENGTH INFO CHKSUM CR``; every field after ``~`` is ASCII hex (upper case
on the way out; lower case is accepted on the way in, as some clients send it). LENGTH is LCHKSUM (one hex
digit: minus the sum of the other three digits, mod 16) and LENID (three digits: INFO's length in characters).
CHKSUM is minus the sum of the character codes between ``~`` and CHKSUM, mod 65536. In a request CID2 is the
command; in a response it is the return code (:class:`ReturnCode`).

:class:`PylontechResponder` answers one request with the layouts of an RS485 profile
(:mod:`gateway.rs485.profile`), in this order of checks:

* not a frame (no ``~``/CR, header not hex, too short), a CID1 other than 0x46 (not a battery), an address
  that is not ours: **no answer** (other devices share the bus);
* bad CHKSUM: return code 02; bad LCHKSUM: 03; LENID disagreeing with INFO or INFO not hex: 05;
  a VER the profile does not accept: 01; a command the profile does not answer: 04; INFO longer than two bytes
  for a command that reads it: 05. An error answer carries no INFO, so it can never pass for data.
* otherwise the answer built from the battery's values; addresses: each pack's (configured address + index),
  address 0 for commands that allow it (version, manufacturer), and the request's INFO may name a pack or ask
  for every module (FF).

No answer at all while the battery view is None (the fail-safe's silent state).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import FrameError
from gateway.rs485.fields import decode_fields, encode_fields
from gateway.rs485.profile_spec import CommandSpec, PylontechSpec
from gateway.rs485.values import MODULE_SELECTOR, BatteryView

SOI: Final = b"~"
EOI: Final = b"\r"
CID1_BATTERY: Final = 0x46
ALL_MODULES: Final = 0xFF
DEFAULT_VERSION: Final = 0x20
HEADER_CHARS: Final = 12
"""VER, ADR, CID1, CID2 (2 each) and LENGTH (4)."""
MIN_FRAME_BYTES: Final = 1 + HEADER_CHARS + 4 + 1
MAX_INFO_CHARS: Final = 0xFFF
MAX_FRAME_BYTES: Final = MIN_FRAME_BYTES + MAX_INFO_CHARS
_HEX: Final = frozenset(b"0123456789ABCDEFabcdef")


class ReturnCode(enum.IntEnum):
    """CID2 of a response."""

    OK = 0x00
    VERSION_ERROR = 0x01
    CHECKSUM_ERROR = 0x02
    LENGTH_CHECKSUM_ERROR = 0x03
    INVALID_CID2 = 0x04
    COMMAND_FORMAT_ERROR = 0x05
    INVALID_DATA = 0x06


_FAULT_CODES: Final = {
    "bad checksum": ReturnCode.CHECKSUM_ERROR,
    "bad length checksum": ReturnCode.LENGTH_CHECKSUM_ERROR,
    "bad length": ReturnCode.COMMAND_FORMAT_ERROR,
    "bad info": ReturnCode.COMMAND_FORMAT_ERROR,
}


def frame_checksum(body: bytes) -> int:
    """CHKSUM of the characters between ``~`` and CHKSUM: minus their sum, mod 65536."""
    return -sum(body) & 0xFFFF


def length_field(info_chars: int) -> int:
    """LENGTH for an INFO of ``info_chars`` characters: LCHKSUM in the top nibble, LENID below."""
    if not 0 <= info_chars <= MAX_INFO_CHARS:
        raise ValueError(f"INFO of {info_chars} characters does not fit LENID")
    nibbles = (info_chars & 0xF) + (info_chars >> 4 & 0xF) + (info_chars >> 8 & 0xF)
    return (-nibbles & 0xF) << 12 | info_chars


def build_frame(version: int, address: int, cid1: int, cid2: int, info: bytes = b"") -> bytes:
    """A whole frame; ``info`` is binary (sent as upper-case hex)."""
    text = info.hex().upper().encode("ascii")
    body = b"%02X%02X%02X%02X%04X" % (version, address, cid1, cid2, length_field(len(text))) + text
    return SOI + body + b"%04X" % frame_checksum(body) + EOI


def build_request(address: int, cid2: int, info: bytes = b"", *, version: int = DEFAULT_VERSION) -> bytes:
    """What an inverter sends: a command to the battery at ``address``."""
    return build_frame(version, address, CID1_BATTERY, cid2, info)


@dataclass(frozen=True, slots=True)
class Frame:
    """A checked frame: header fields and INFO as binary."""

    version: int
    address: int
    cid1: int
    cid2: int
    """The command (request) or the return code (response)."""
    info: bytes


@dataclass(frozen=True, slots=True)
class _Header:
    """The fields of something shaped like a frame, before any checksum is checked."""

    version: int
    address: int
    cid1: int
    cid2: int
    length: int
    info_text: bytes
    checksum: int
    body: bytes


def _hex(text: bytes) -> int | None:
    return int(text, 16) if text and all(c in _HEX for c in text) else None


def _split(raw: bytes) -> _Header | None:
    """The header of ``raw``, or None when it is not shaped like a frame at all."""
    if len(raw) < MIN_FRAME_BYTES or len(raw) > MAX_FRAME_BYTES or raw[:1] != SOI or raw[-1:] != EOI:
        return None
    body, checksum_text = raw[1:-5], raw[-5:-1]
    fields = [_hex(body[i : i + 2]) for i in range(0, 8, 2)] + [_hex(body[8:12]), _hex(checksum_text)]
    if any(f is None for f in fields):
        return None
    version, address, cid1, cid2, length, checksum = (int(f or 0) for f in fields)
    return _Header(version, address, cid1, cid2, length, body[HEADER_CHARS:], checksum, body)


def _check(header: _Header) -> Frame:
    """Checksums, length and INFO of a split frame. :raises FrameError: naming the first fault."""
    expected = frame_checksum(header.body)
    if header.checksum != expected:
        raise FrameError("bad checksum", f"CHKSUM {header.checksum:04X}, expected {expected:04X}")
    lenid = header.length & 0xFFF
    if length_field(lenid) != header.length:
        raise FrameError("bad length checksum", f"LENGTH {header.length:04X}, expected {length_field(lenid):04X}")
    if lenid != len(header.info_text):
        raise FrameError("bad length", f"LENID says {lenid} characters, INFO has {len(header.info_text)}")
    if len(header.info_text) % 2 or (header.info_text and _hex(header.info_text) is None):
        raise FrameError("bad info", "INFO is not whole hex bytes")
    return Frame(header.version, header.address, header.cid1, header.cid2, bytes.fromhex(header.info_text.decode()))


def parse_frame(raw: bytes) -> Frame:
    """A whole frame, every check done. :raises FrameError: ``not a frame``, ``bad checksum``, ``bad length
    checksum``, ``bad length`` or ``bad info``."""
    header = _split(raw)
    if header is None:
        raise FrameError("not a frame", f"{len(raw)} bytes not shaped like ~ VER ADR CID1 CID2 LENGTH INFO CHKSUM CR")
    return _check(header)


class PylontechResponder:
    """Answers inverter requests for a stack of packs at ``base_address``, ``base_address + 1``, ..."""

    def __init__(self, spec: PylontechSpec, base_address: int) -> None:
        self.spec = spec
        self.base_address = base_address

    def respond(self, raw: bytes, view: BatteryView | None) -> bytes | None:
        """The answer to ``raw``, or None for no answer. Never raises for any ``raw``."""
        if view is None or not view.modules:
            return None
        header = _split(raw)
        if header is None or header.cid1 != CID1_BATTERY:
            return None
        module = header.address - self.base_address
        command = self.spec.commands.get(header.cid2)
        if header.address == 0 and command is not None and "zero" in command.addresses:
            module = 0
        elif not 0 <= module < view.module_count:
            return None  # another device's address (or address 0 for a command that is not ours to answer)
        try:
            frame = _check(header)
        except FrameError as error:
            return self._error(header.address, _FAULT_CODES[error.fault])
        if self.spec.accept_versions is not None and frame.version not in self.spec.accept_versions:
            return self._error(frame.address, ReturnCode.VERSION_ERROR)
        if command is None or not self._serves(command, frame.address):
            return self._error(frame.address, ReturnCode.INVALID_CID2)
        if command.info == "pack" and len(frame.info) > 2:
            return self._error(frame.address, ReturnCode.COMMAND_FORMAT_ERROR)
        return build_frame(
            self.spec.version, frame.address, CID1_BATTERY, ReturnCode.OK, self.info(command, frame.info, module, view)
        )

    def info(self, command: CommandSpec, request_info: bytes, module: int, view: BatteryView) -> bytes:
        """The answer's INFO to ``command`` asked of ``module`` (0-based) with ``request_info``."""
        if command.system:
            return encode_fields(command.fields, {**view.system, MODULE_SELECTOR: view.module_count}, view.modules)
        if command.info == "pack" and request_info:
            wanted = request_info[0]
            if wanted == ALL_MODULES and command.all_modules:
                outer = {**view.system, MODULE_SELECTOR: view.module_count}
                return encode_fields(command.fields, outer, view.modules)
            if 0 <= wanted - self.base_address < view.module_count:
                module = wanted - self.base_address
            # Any other pack byte: the pack the frame was addressed to answers (clients differ in that byte).
        outer = {**view.modules[module], MODULE_SELECTOR: self.base_address + module}
        return encode_fields(command.fields, outer, (view.modules[module],))

    def _serves(self, command: CommandSpec, address: int) -> bool:
        if address == 0:
            return "zero" in command.addresses
        if "pack" in command.addresses:
            return True
        return "master" in command.addresses and address == self.base_address

    def _error(self, address: int, code: ReturnCode) -> bytes:
        return build_frame(self.spec.version, address, CID1_BATTERY, code)


def decode_frame(raw: bytes, spec: PylontechSpec | None = None, *, request_cid2: int | None = None) -> dict[str, Any]:
    """A frame as named fields, for monitors: header, then the INFO by the command's layout when known.

    A frame whose CID2 is a command of ``spec`` is read as a request; otherwise, with ``request_cid2`` (the
    command it answers), as a response with that command's layout.

    :raises FrameError: ``raw`` is not a valid frame, or its INFO does not fit the layout.
    """
    frame = parse_frame(raw)
    out: dict[str, Any] = {
        "version": frame.version,
        "address": frame.address,
        "cid1": frame.cid1,
        "info": frame.info.hex().upper(),
    }
    command = spec.commands.get(frame.cid2) if spec is not None else None
    if command is not None and request_cid2 is None:
        out.update(kind="request", cid2=frame.cid2, command=command.name)
        if frame.info:
            out["pack"] = "all" if frame.info[0] == ALL_MODULES else frame.info[0]
        return out
    out.update(kind="response", return_code=frame.cid2)
    try:
        out["return_name"] = ReturnCode(frame.cid2).name.lower()
    except ValueError:
        out["return_name"] = "unknown"
    answered = spec.commands.get(request_cid2) if spec is not None and request_cid2 is not None else None
    if answered is not None and frame.cid2 == ReturnCode.OK:
        out["command"] = answered.name
        out["fields"] = decode_fields(answered.fields, frame.info)
    return out
