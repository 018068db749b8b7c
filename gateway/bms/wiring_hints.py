"""The hint for a BMS that does not answer: the likely causes, and the driver the bytes that did come look like.

On a first connection "no reply" is by far the most common failure, and its causes are few: the wrong
``bms.driver`` for the pack, TX and RX swapped, GND not connected, the wrong baud rate, and for JK-PB packs the
DIP-switch address. Sometimes the wire does carry bytes, only not the protocol the driver speaks: a JK B-series
answers only the NW protocol (frames ``4E 57``), a JK-PB speaks Modbus RTU and sends ``55 AA EB 90`` frames (and
a JK-PB set to address 0 polls the others itself). :func:`looks_like` tells the two apart, so that the hint can
name the driver the bytes belong to.
"""

from __future__ import annotations

from typing import Final

from gateway.bms import jk_modbus, jk_nw

JK_UART: Final = "jk-uart"
JK_MODBUS: Final = "jk-modbus"
_DRIVERS: Final = "bms.driver (jk-uart for JK B-series/BD6A via the RS485 adapter, jk-modbus for JK-PB inverter BMSs)"
_MODBUS_FUNCTIONS: Final = frozenset({0x03, 0x10, 0x83, 0x90})
"""Read and write-multiple, and their exception replies: what a JK-PB bus carries."""


def _modbus_frame_lengths(data: bytes, at: int) -> tuple[int, ...]:
    """The lengths a Modbus RTU frame starting at ``at`` could have (request or reply), by its header."""
    if len(data) - at < 5 or data[at + 1] not in _MODBUS_FUNCTIONS:
        return ()
    function = data[at + 1]
    if function & 0x80:
        return (5,)
    if function == 0x03:
        return (8, 5 + data[at + 2])  # the request; a reply with its byte count
    return (8, 9 + data[at + 6]) if len(data) - at >= 7 else (8,)  # FC16: the reply; a request with its count


def has_modbus_frame(data: bytes) -> bool:
    """Whether ``data`` holds a whole Modbus RTU frame with a good CRC (a JK-PB's reply, or a master's poll)."""
    for at in range(len(data)):
        if data[at] > 247:
            continue
        for length in _modbus_frame_lengths(data, at):
            frame = data[at : at + length]
            if len(frame) == length and jk_modbus.crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little"):
                return True
    return False


def looks_like(received: bytes) -> str | None:
    """The driver whose protocol ``received`` carries: :data:`JK_UART` (NW frames), :data:`JK_MODBUS` (JK-PB
    frames or Modbus RTU), or None when the bytes say nothing (noise, an echo, nothing at all)."""
    if jk_modbus.FRAME_START in received:
        return JK_MODBUS
    if jk_nw.START in received:
        return JK_UART
    return JK_MODBUS if has_modbus_frame(received) else None


def no_reply_hint(driver: str, received: bytes = b"", *, echoed: bytes = b"") -> str:
    """The hint for a BMS that gave no (valid) reply to ``driver``; ``received``: what the wire did carry,
    ``echoed``: the request, which an adapter that echoes sends back and which says nothing of the BMS."""
    heard = received.replace(echoed, b"") if echoed else received
    other = looks_like(heard)
    causes = f"check {_DRIVERS}, TX/RX not swapped, GND connected, 115200 baud"
    if driver == JK_MODBUS:
        causes += ", and each pack's DIP address in bms.addresses (1-15; 0 makes a pack the bus master)"
    else:
        causes += "; a JK-PB also needs its DIP address in bms.addresses"
    if other is not None and other != driver:
        protocol = "JK NW protocol" if other == JK_UART else "JK-PB (Modbus RTU)"
        return f"the bytes that came back look like the {protocol}: try bms.driver: {other}; else {causes}"
    return causes
