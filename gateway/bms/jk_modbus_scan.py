"""Find the JK-PB packs on an RS485 bus: which unit addresses answer, what they are, and address-0 trouble.

A JK-PB whose DIP switches are all off (address 0) becomes the **bus master** at power-up: it polls the other
packs itself and no longer answers as a Modbus slave, and its polls collide with the gateway's
(``shared/protocols/jk_bms.md``, "Physical layer and addressing"). Address 0 is also Modbus broadcast, which no
slave answers, so such a pack cannot be found by polling it. :func:`scan` looks for it two ways:

* it first **listens** for a moment without sending: bytes on a bus where the gateway is the only master
  mean another master is talking (most likely a pack at address 0);
* each pack that answers is asked for the device address its settings hold (0x1108, the DIP switches as read
  at power-up): 0, or an address other than the one it answered at, is reported.

Only reads are sent (FC03, and the trigger frames for firmware that answers FC03 poorly), through the same
:class:`~gateway.bms.jk_modbus_driver.RtuBus` guard as the driver. :func:`scan_warnings` is pure.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.bms import jk_modbus
from gateway.bms.jk_modbus_driver import RtuBus
from gateway.bms.jk_modbus_image import BlockImage
from gateway.bms.jk_modbus_model import POLL_PLAN
from gateway.bms.jk_modbus_tables import INFO, SETTINGS, Block
from gateway.errors import FrameError, LinkError, LinkTimeout
from gateway.model import DeviceInfo
from gateway.transport.serial_link import SerialFactory, open_locked, open_serial_port

DEFAULT_SCAN_ADDRESSES: Final = tuple(range(1, 16))
"""What four DIP switches can set, without 0 (which makes a pack the bus master)."""
_ADDRESS_READ: Final = jk_modbus.read_plan(SETTINGS, ["device_address"])
_LISTEN_SLICE_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class Found:
    """A pack that answered the scan."""

    address: int
    """The unit address it answered at."""
    device: DeviceInfo
    method: str
    """How it answered: ``FC03`` or ``trigger``."""
    reported_address: int | None
    """The device address its settings state; None when that read failed."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    port: str
    addresses: tuple[int, ...]
    """The addresses polled, in order."""
    found: tuple[Found, ...]
    foreign_bytes: int
    """Bytes heard while listening before the first request (0: nobody else talks)."""
    listened_s: float


def scan_warnings(result: ScanResult) -> list[str]:
    """One line per address problem the scan revealed (empty when none)."""
    warnings: list[str] = []
    if result.foreign_bytes:
        warnings.append(
            f"heard {result.foreign_bytes} bytes on {result.port} in {result.listened_s:g} s before sending anything: "
            "another master is on the bus. A JK-PB set to address 0 (all DIP switches off) is the bus master: "
            "it polls the other packs, does not answer as a slave and collides with the gateway's polls; "
            "set every pack to 1-15 and power-cycle it"
        )
    for pack in result.found:
        if pack.reported_address == 0:
            warnings.append(
                f"unit {pack.address} reports device address 0: after its next power-up it will act as bus master, "
                "stop answering and collide with the gateway's polls; set its DIP switches to 1-15"
            )
        elif pack.reported_address is not None and pack.reported_address != pack.address:
            warnings.append(
                f"unit {pack.address} reports device address {pack.reported_address}: its DIP switches were "
                "changed since power-up (it reads them at start); power-cycle it and scan again"
            )
    if not result.found and not result.foreign_bytes:
        warnings.append(f"no JK-PB answered on {result.port} at units {_ranges(result.addresses)}")
    return warnings


def _ranges(addresses: Sequence[int]) -> str:
    """``1-4, 7`` for (1, 2, 3, 4, 7)."""
    runs: list[list[int]] = []
    for address in addresses:
        if runs and address == runs[-1][-1] + 1:
            runs[-1].append(address)
        else:
            runs.append([address])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def listen(port: str, baudrate: int, seconds: float, *, serial_factory: SerialFactory = open_serial_port) -> int:
    """Bytes heard on ``port`` in ``seconds`` without sending anything.

    :raises LinkError: the port cannot be opened.
    """
    link, lock = open_locked(
        port, serial_factory, baudrate=baudrate, bytesize=8, parity="N", stopbits=1, timeout=_LISTEN_SLICE_S
    )
    heard = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            heard += len(link.read(max(1, link.in_waiting)))
    except OSError as exc:
        raise LinkError(f"serial port {port} lost: {_first_line(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            link.close()
        lock.release()
    return heard


def _image(bus: RtuBus, unit: int, block: Block, trigger: bool) -> BlockImage:
    if trigger:
        return bus.trigger(unit, block)
    reads = [(read.address, bus.read_registers(unit, read)) for read in POLL_PLAN[block]]
    return jk_modbus.image_from_registers(block, reads)


def probe(bus: RtuBus, unit: int, attempts: int = 1) -> Found | None:
    """What answers at ``unit``: device info by FC03, else by trigger frame; None when nothing does."""
    for trigger in (False, True):
        for attempt in range(attempts):
            if attempt:
                bus.backoff(attempt)
            try:
                device = jk_modbus.to_device(jk_modbus.decode(_image(bus, unit, INFO, trigger)))
            except (LinkTimeout, FrameError):
                continue
            return Found(unit, device, "trigger" if trigger else "FC03", _reported_address(bus, unit, trigger))
    return None


def _reported_address(bus: RtuBus, unit: int, trigger: bool) -> int | None:
    try:
        if trigger:
            image = bus.trigger(unit, SETTINGS)
        else:
            image = jk_modbus.image_from_registers(
                SETTINGS, [(read.address, bus.read_registers(unit, read)) for read in _ADDRESS_READ]
            )
    except (LinkTimeout, FrameError):
        return None
    value = jk_modbus.decode(image).get("device_address")
    return int(value) if isinstance(value, int | float) else None


def scan(
    port: str,
    *,
    baudrate: int = 115200,
    addresses: Sequence[int] = DEFAULT_SCAN_ADDRESSES,
    timeout_s: float = 0.3,
    retries: int = 0,
    listen_s: float = 1.0,
    serial_factory: SerialFactory = open_serial_port,
    on_probe: Callable[[int, Found | None], None] | None = None,
) -> ScanResult:
    """Listen ``listen_s``, then probe each of ``addresses`` in turn.

    :param on_probe: called after each address with what answered there (progress for the CLI).
    :raises LinkError: the port cannot be opened or fails.
    """
    heard = listen(port, baudrate, listen_s, serial_factory=serial_factory) if listen_s > 0 else 0
    bus = RtuBus(port, baudrate, timeout_s, serial_factory=serial_factory)
    found: list[Found] = []
    try:
        for unit in addresses:
            hit = probe(bus, unit, 1 + max(0, retries))
            if hit is not None:
                found.append(hit)
            if on_probe is not None:
                on_probe(unit, hit)
    finally:
        bus.close()
    return ScanResult(port, tuple(addresses), tuple(found), heard, listen_s)
