"""Writes of a JK-PB's charge, discharge and balancer switches over Modbus RTU, as pure functions.

The three switches are u32 settings of the settings block (:data:`~gateway.bms.jk_modbus.SETTINGS`, which
holds their addresses): charge 0x1070, discharge 0x1074, balancer 0x1078; 1 = on, 0 = off. A write is an
FC 0x10 of the whole u32, two registers, high word first; the BMS answers with the usual FC 0x10 echo of
address and count::

    01 10 10 70 00 02 04 00 00 00 01 F8 8B    unit 1, charge switch on
    01 10 10 70 00 02 44 D3                   its acknowledgement

Sources: ``shared/protocols/jk_bms.md`` (settings table: "charge enable / discharge enable / balance enable,
1 = on"); syssi/esphome-jk-bms ``esp32-jk-pb-modbus-example.yaml`` (the three as Modbus selects at 0x1070 /
0x1074 / 0x1078, ``U_DWORD``, Off 0 / On 1); a Rust JK-PB client's tests with the same bytes and CRCs.
[unverified on our own hardware] A JK-PB has no password on the wire: the settings password is compared by
the gateway before any write (:mod:`gateway.control`).

These requests are never sent by the polling path, whose guard
(:func:`~gateway.bms.jk_modbus.is_permitted_request`) refuses them: they go out only through
:meth:`~gateway.bms.jk_modbus_driver.RtuBus.write_switch`, guarded by :func:`is_permitted_switch_request`,
which approves exactly these three registers with the values 0 and 1. Nothing here does I/O; a malformed frame
raises :class:`~gateway.errors.FrameError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.bms.control import Switch
from gateway.bms.jk_modbus_frames import WRITE_MULTIPLE_REGISTERS, with_crc
from gateway.bms.jk_modbus_tables import SETTINGS, Field, Kind
from gateway.errors import FrameError

SWITCH_FIELDS: Final[Mapping[Switch, Field]] = MappingProxyType(
    {
        Switch.CHARGE: SETTINGS.by_name["charge_switch"],
        Switch.DISCHARGE: SETTINGS.by_name["discharge_switch"],
        Switch.BALANCER: SETTINGS.by_name["balancer_switch"],
    }
)
SWITCH_REGISTERS: Final[Mapping[Switch, int]] = MappingProxyType(
    {switch: SETTINGS.base + spec.offset for switch, spec in SWITCH_FIELDS.items()}
)
"""0x1070, 0x1074, 0x1078: the only registers a switch write may name."""
REGISTER_SWITCHES: Final[Mapping[int, Switch]] = MappingProxyType({r: s for s, r in SWITCH_REGISTERS.items()})
assert all(spec.kind is Kind.U32 for spec in SWITCH_FIELDS.values())
SWITCH_WORDS: Final = 2
"""Registers per switch write: the whole u32."""
REQUEST_LEN: Final = 7 + 2 * SWITCH_WORDS + 2
"""13 bytes: unit, function, address, count, byte count, data, CRC."""
ACK_LEN: Final = 8
EXCEPTION_LEN: Final = 5
_EXCEPTION_FLAG: Final = 0x80


@dataclass(frozen=True, slots=True)
class SwitchWrite:
    """One switch write: set ``switch`` of unit ``unit`` on or off."""

    unit: int
    switch: Switch
    on: bool

    def describe(self) -> str:
        return f"unit {self.unit} {self.switch} switch {'on' if self.on else 'off'}"


def _words(on: bool) -> tuple[int, int]:
    return 0, int(on)  # u32, high word first


def switch_request(write: SwitchWrite) -> bytes:
    """The 13-byte FC 0x10 request for ``write``. :raises ValueError: the unit is outside 1–247."""
    if not 1 <= write.unit <= 247:
        raise ValueError(f"Modbus unit {write.unit} outside 1–247")
    data = b"".join(word.to_bytes(2, "big") for word in _words(write.on))
    body = (
        bytes((write.unit, WRITE_MULTIPLE_REGISTERS))
        + SWITCH_REGISTERS[write.switch].to_bytes(2, "big")
        + SWITCH_WORDS.to_bytes(2, "big")
        + bytes((len(data),))
        + data
    )
    return with_crc(body)


def switch_ack(write: SwitchWrite) -> bytes:
    """The 8-byte acknowledgement the BMS sends for ``write`` (the simulator's side, and tests)."""
    return with_crc(
        bytes((write.unit, WRITE_MULTIPLE_REGISTERS))
        + SWITCH_REGISTERS[write.switch].to_bytes(2, "big")
        + SWITCH_WORDS.to_bytes(2, "big")
    )


def switch_of(address: int, words: Sequence[int]) -> tuple[Switch, bool] | None:
    """The switch setting that writing ``words`` at ``address`` makes, or None for any other write.

    The BMS's side: a Modbus server hands over the address and the words of an FC 0x10.
    """
    switch = REGISTER_SWITCHES.get(address)
    if switch is None or len(words) != SWITCH_WORDS:
        return None
    for on in (False, True):
        if tuple(words) == _words(on):
            return switch, on
    return None


def decode_switch_request(frame: bytes) -> SwitchWrite:
    """The switch write ``frame`` asks for.

    :raises FrameError: anything but a well-formed FC 0x10 of 0 or 1 (as a u32) to 0x1070, 0x1074 or 0x1078.
    """
    if len(frame) != REQUEST_LEN:
        raise FrameError("not a switch write", f"{len(frame)} bytes, a switch write has {REQUEST_LEN}")
    if with_crc(frame[:-2]) != frame:
        raise FrameError("bad CRC", f"in a {len(frame)}-byte request")
    unit, function = frame[0], frame[1]
    address = int.from_bytes(frame[2:4], "big")
    count = int.from_bytes(frame[4:6], "big")
    if function != WRITE_MULTIPLE_REGISTERS or not 1 <= unit <= 247:
        raise FrameError("not a switch write", f"unit {unit}, function 0x{function:02X}")
    if count != SWITCH_WORDS or frame[6] != 2 * SWITCH_WORDS:
        raise FrameError("not a switch write", f"{count} registers at 0x{address:04X}")
    words = [int.from_bytes(frame[7 + 2 * i : 9 + 2 * i], "big") for i in range(SWITCH_WORDS)]
    setting = switch_of(address, words)
    if setting is None:
        raise FrameError("not a switch write", f"0x{address:04X} = {words} is no switch set to 0 or 1")
    return SwitchWrite(unit, *setting)


def is_permitted_switch_request(frame: bytes) -> bool:
    """The guard of the switch path: True for exactly a switch write (:func:`decode_switch_request`)."""
    try:
        decode_switch_request(frame)
    except FrameError:
        return False
    return True


def scan_switch_reply(buffer: bytes, write: SwitchWrite, *, final: bool = False) -> bool:
    """Whether ``buffer`` (bytes received since the request) holds the BMS's acknowledgement of ``write``.

    Bytes before it (an adapter's echo of the request, noise) are skipped. False while the reply may still be
    incomplete; with ``final`` (no more bytes will come) an unacknowledged reply raises instead.

    :raises FrameError: the unit answered with a Modbus exception (the write was refused), or (``final``) the
        bytes hold no acknowledgement.
    """
    ack = switch_ack(write)
    if ack in buffer:
        return True
    exception_head = bytes((write.unit, WRITE_MULTIPLE_REGISTERS | _EXCEPTION_FLAG))
    at = buffer.find(exception_head)
    while at >= 0:
        candidate = buffer[at : at + EXCEPTION_LEN]
        if len(candidate) == EXCEPTION_LEN and with_crc(candidate[:3]) == candidate:
            raise FrameError(
                "exception reply", f"unit {write.unit} refused the {write.switch} switch write (code {candidate[2]})"
            )
        at = buffer.find(exception_head, at + 1)
    if final:
        raise FrameError("bad reply", f"{len(buffer)} bytes without the acknowledgement of the {write.switch} write")
    return False
