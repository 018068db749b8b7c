"""Writes in the JK wired "NW" protocol, as pure functions: the password frame and the write frame.

Writing a setting takes two frames (``shared/protocols/jk_bms.md``): a password frame (command 0x05), then,
about 150 ms later, a 22-byte write frame (length 0x0014, command 0x02, the register id and one data byte,
record number, 0x68, checksum). Both use the envelope of :func:`gateway.bms.jk_nw.build_frame`. A register
id is the tag of the same setting in the read-all reply, so a write is verified by the next read-all.

**[unverified] The password frame's payload is not documented in our notes.** This module sends the most
plausible layout: the register id 0xB2 (the reply's "parameter password" tag) followed by the password in
that tag's own format, 10 bytes of ASCII, NUL-padded. That layout lives in :func:`password_frame` and
:func:`decode_control_request` only; correct it there once a capture of the JK app settles it.

Nothing here does I/O. A password is a :class:`~gateway.secret.Secret` on both sides; no message here names
one. Encoding a value that does not fit raises :class:`ValueError`; a malformed frame from a wire raises
:class:`~gateway.errors.FrameError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.bms.control import Switch
from gateway.bms.jk_nw import TAG_BY_NAME, TAGS, Command, FrameType, Source, build_frame, parse_envelope
from gateway.errors import FrameError
from gateway.secret import Secret

PASSWORD_TAG: Final = TAG_BY_NAME["password"]
"""0xB2: the settings password, in the read-all reply and (unverified) as the password frame's register."""
PASSWORD_LEN: Final = TAGS[PASSWORD_TAG].length
"""10 bytes, ASCII, NUL-padded."""
WRITE_FRAME_LEN: Final = 22
PASSWORD_GAP_S: Final = 0.15
"""Pause between the password frame and the write frame, s (what the JK tools leave)."""

SWITCH_REGISTERS: Final[Mapping[Switch, int]] = MappingProxyType(
    {
        Switch.CHARGE: TAG_BY_NAME["charge_mos_switch"],  # 0xAB
        Switch.DISCHARGE: TAG_BY_NAME["discharge_mos_switch"],  # 0xAC
        Switch.BALANCER: TAG_BY_NAME["balancer_switch"],  # 0x9D
    }
)
REGISTER_SWITCHES: Final[Mapping[int, Switch]] = MappingProxyType({r: s for s, r in SWITCH_REGISTERS.items()})


def encode_password(password: Secret) -> bytes:
    """The password as tag 0xB2 holds it: ASCII, NUL-padded to 10 bytes.

    :raises ValueError: it does not fit (the message does not show it).
    """
    text = password.reveal()
    if not text.isascii() or not text.isprintable():
        raise ValueError("the password has a character the BMS cannot store (ASCII letters, digits, signs only)")
    data = text.encode("ascii")
    if len(data) > PASSWORD_LEN:
        raise ValueError(f"the password is longer than the {PASSWORD_LEN} characters the BMS stores")
    return data.ljust(PASSWORD_LEN, b"\x00")


WRITE_FRAME_TYPE: Final = FrameType.UPLOAD
"""Byte 10 of a write frame. The notes give 0x02 only as "BMS active upload", but the one captured working
switch frame we know (a user's charge-switch write, ``4E 57 00 14 00 00 00 00 02 03 02 AB 01 … 68 00 00 01 D4``,
diysolarforum thread 66034) carries 0x02 there, and its checksum verifies. [unverified on our own hardware]"""


def password_frame(password: Secret, source: Source = Source.PC) -> bytes:
    """The password frame that must precede a write. [unverified] payload: 0xB2, then the 10-byte password."""
    return build_frame(Command.PASSWORD, source, FrameType.REQUEST, bytes((PASSWORD_TAG,)) + encode_password(password))


def write_frame(register: int, value: int, source: Source = Source.PC) -> bytes:
    """The 22-byte write of one data byte to a one-byte setting.

    :raises ValueError: ``register`` is not a one-byte setting of :data:`~gateway.bms.jk_nw.TAGS`, or
        ``value`` is not a byte.
    """
    spec = TAGS.get(register)
    if spec is None or spec.length != 1:
        raise ValueError(f"0x{register:02X} is not a one-byte setting")
    if not 0 <= value <= 0xFF:
        raise ValueError(f"value {value} is not a byte")
    frame = build_frame(Command.WRITE, source, WRITE_FRAME_TYPE, bytes((register, value)))
    assert len(frame) == WRITE_FRAME_LEN
    return frame


def switch_frame(switch: Switch, on: bool, source: Source = Source.PC) -> bytes:
    """The write frame that turns ``switch`` on or off."""
    return write_frame(SWITCH_REGISTERS[switch], int(on), source)


# --- the BMS's side (the simulator) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordRequest:
    password: Secret


@dataclass(frozen=True, slots=True)
class WriteRequest:
    register: int
    value: int

    @property
    def switch(self) -> Switch | None:
        """The switch this register is, if it is one."""
        return REGISTER_SWITCHES.get(self.register)


def decode_control_request(frame: bytes) -> PasswordRequest | WriteRequest | None:
    """A password or write request; ``None`` for any other valid request (a read).

    :raises FrameError: not a valid frame, not a request, or a password or write frame of the wrong shape.
    """
    envelope = parse_envelope(frame)
    wanted = WRITE_FRAME_TYPE if envelope.command == Command.WRITE else FrameType.REQUEST
    if envelope.frame_type != wanted:
        raise FrameError("not a request", f"frame type 0x{envelope.frame_type:02X}")
    payload = envelope.payload
    if envelope.command == Command.PASSWORD:
        if len(payload) != 1 + PASSWORD_LEN or payload[0] != PASSWORD_TAG:
            raise FrameError("bad password frame", f"payload of {len(payload)} bytes")  # never the bytes themselves
        return PasswordRequest(Secret(payload[1:].rstrip(b"\x00").decode("latin-1")))
    if envelope.command == Command.WRITE:
        if len(frame) != WRITE_FRAME_LEN:
            raise FrameError("bad write frame", f"{len(frame)} bytes, expected {WRITE_FRAME_LEN}")
        return WriteRequest(register=payload[0], value=payload[1])
    return None
