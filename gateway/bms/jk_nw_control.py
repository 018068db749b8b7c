"""Writes in the JK wired "NW" protocol, as pure functions: the password frame and the write frame.

Writing a setting takes two frames (``shared/protocols/jk_bms.md``): a password frame (command 0x05), then,
about 150 ms later, a 22-byte write frame (length 0x0014, command 0x02, the register id and one data byte,
record number, 0x68, checksum). Both use the envelope of :func:`gateway.bms.jk_nw.build_frame`. A register
id is the tag of the same setting in the read-all reply, so a write is verified by the next read-all.

Two layouts of those frames are in use, and the gateway tries them in the order of :class:`WriteForm`:

1. :attr:`WriteForm.ESPHOME`: syssi/esphome-jk-bms ``components/jk_modbus/jk_modbus.cpp`` (at 2fa4323:
   ``send()`` and ``authenticate_()``), whose switches users report working: both frames are 22 bytes, source
   0x02 (GPS), frame type 0x00; the password frame is ``send(0x05, 0x00, 0x00)``: register 0, data 0, no password.
2. :attr:`WriteForm.CAPTURE`: the write frame of the one public capture of a working switch write
   (diysolarforum thread 66034: source 0x03, frame type 0x02), after a password frame carrying register 0xB2 and
   the password as tag 0xB2 holds it (10 bytes ASCII, NUL-padded). [unverified] That password layout is our
   own guess; no capture shows it.

unverified: we have no capture of either pair against a real BMS of ours; the second form is sent only when a
read back shows the BMS ignored the first (:mod:`gateway.control`). The BMS's own password check is not relied
on either way: the gateway compares ``control.password`` with the password the BMS reports before any write.

Nothing here does I/O. A password is a :class:`~gateway.secret.Secret` on both sides; no message here names
one. Encoding a value that does not fit raises :class:`ValueError`; a malformed frame from a wire raises
:class:`~gateway.errors.FrameError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.bms.control import Switch
from gateway.bms.jk_nw_frame import Command, FrameType, Source, build_frame, parse_envelope
from gateway.bms.jk_nw_tags import TAG_BY_NAME, TAGS
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


class WriteForm(enum.Enum):
    """A layout of the password and write frames, in the order they are tried (see the module docstring)."""

    ESPHOME = "esphome-jk-bms"
    """22-byte password frame (register 0, no password), write frame type 0x00, source 0x02 (GPS)."""
    CAPTURE = "diysolarforum capture"
    """Password frame 0xB2 + password [unverified], write frame type 0x02, source 0x03 (PC), as captured."""


WRITE_FORMS: Final[tuple[WriteForm, ...]] = tuple(WriteForm)
"""Every form, first to try first."""

_SOURCE: Final[Mapping[WriteForm, Source]] = MappingProxyType(
    {WriteForm.ESPHOME: Source.GPS, WriteForm.CAPTURE: Source.PC}
)
WRITE_FRAME_TYPES: Final[Mapping[WriteForm, FrameType]] = MappingProxyType(
    {
        # esphome-jk-bms jk_modbus.cpp send(): frame[10] = 0x00.
        WriteForm.ESPHOME: FrameType.REQUEST,
        # The captured working frame 4E 57 00 14 00 00 00 00 02 03 02 AB 01 … 68 00 00 01 D4 (diysolarforum
        # thread 66034) carries 0x02 there, and its checksum verifies; the notes give 0x02 only as "active upload".
        WriteForm.CAPTURE: FrameType.UPLOAD,
    }
)
"""Byte 10 of a write frame, by form."""
ESPHOME_PASSWORD_PAYLOAD: Final = b"\x00\x00"
"""esphome-jk-bms ``authenticate_()``: ``send(FUNCTION_PASSWORD, 0x00, 0x00)``, register 0 and data 0."""


def password_frame(password: Secret, form: WriteForm = WriteForm.ESPHOME) -> bytes:
    """The password frame that must precede a write, in ``form``'s layout (the ESPHOME form carries no password).

    :raises ValueError: the CAPTURE form, and the BMS cannot store ``password`` (the message does not show it).
    """
    if form is WriteForm.ESPHOME:
        payload = ESPHOME_PASSWORD_PAYLOAD
    else:
        payload = bytes((PASSWORD_TAG,)) + encode_password(password)
    return build_frame(Command.PASSWORD, _SOURCE[form], FrameType.REQUEST, payload)


def write_frame(register: int, value: int, form: WriteForm = WriteForm.ESPHOME) -> bytes:
    """The 22-byte write of one data byte to a one-byte setting, in ``form``'s layout.

    :raises ValueError: ``register`` is not a one-byte setting of :data:`~gateway.bms.jk_nw.TAGS`, or
        ``value`` is not a byte.
    """
    spec = TAGS.get(register)
    if spec is None or spec.length != 1:
        raise ValueError(f"0x{register:02X} is not a one-byte setting")
    if not 0 <= value <= 0xFF:
        raise ValueError(f"value {value} is not a byte")
    frame = build_frame(Command.WRITE, _SOURCE[form], WRITE_FRAME_TYPES[form], bytes((register, value)))
    assert len(frame) == WRITE_FRAME_LEN
    return frame


def switch_frame(switch: Switch, on: bool, form: WriteForm = WriteForm.ESPHOME) -> bytes:
    """The write frame that turns ``switch`` on or off."""
    return write_frame(SWITCH_REGISTERS[switch], int(on), form)


BALANCER_WRITE_NOTE: Final = (
    "some JK firmware refuses balancer writes (esphome-jk-bms notes that v11 does not accept register 0x9D): "
    "switch the balancer in the JK app"
)
"""Added to a balancer write that reads back unchanged. Source: syssi/esphome-jk-bms
``components/jk_bms/switch/__init__.py`` ("The BMS (v11) doesn't accept updates of register 0x9D")."""


# --- the BMS's side (the simulator) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordRequest:
    password: Secret | None
    """``None`` in the ESPHOME form, which carries none."""
    form: WriteForm


@dataclass(frozen=True, slots=True)
class WriteRequest:
    register: int
    value: int
    form: WriteForm

    @property
    def switch(self) -> Switch | None:
        """The switch this register is, if it is one."""
        return REGISTER_SWITCHES.get(self.register)


_FORM_BY_WRITE_TYPE: Final[Mapping[int, WriteForm]] = MappingProxyType({t: f for f, t in WRITE_FRAME_TYPES.items()})


def decode_control_request(frame: bytes) -> PasswordRequest | WriteRequest | None:
    """A password or write request, in either form; ``None`` for any other valid request (a read).

    :raises FrameError: not a valid frame, not a request, or a password or write frame of the wrong shape.
    """
    envelope = parse_envelope(frame)
    payload = envelope.payload
    if envelope.command == Command.WRITE:
        form = _FORM_BY_WRITE_TYPE.get(envelope.frame_type)
        if form is None:
            raise FrameError("not a request", f"frame type 0x{envelope.frame_type:02X}")
        if len(frame) != WRITE_FRAME_LEN:
            raise FrameError("bad write frame", f"{len(frame)} bytes, expected {WRITE_FRAME_LEN}")
        return WriteRequest(register=payload[0], value=payload[1], form=form)
    if envelope.frame_type != FrameType.REQUEST:
        raise FrameError("not a request", f"frame type 0x{envelope.frame_type:02X}")
    if envelope.command == Command.PASSWORD:
        if payload == ESPHOME_PASSWORD_PAYLOAD:
            return PasswordRequest(None, WriteForm.ESPHOME)
        if len(payload) != 1 + PASSWORD_LEN or payload[0] != PASSWORD_TAG:
            raise FrameError("bad password frame", f"payload of {len(payload)} bytes")  # never the bytes themselves
        return PasswordRequest(Secret(payload[1:].rstrip(b"\x00").decode("latin-1")), WriteForm.CAPTURE)
    return None
