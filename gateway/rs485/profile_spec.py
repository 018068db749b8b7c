"""The validated RS485 profile: :class:`Rs485Profile` and the specs it holds, a Pylontech command set
(:class:`PylontechSpec`, :class:`CommandSpec`) or a Modbus register map (:class:`RegisterMapSpec`,
:class:`RegisterSpec`, :class:`ModuleBlockSpec`, :class:`WriteSpec`), with the framings and address ranges they
allow. :mod:`gateway.rs485.profile` loads them from YAML; nothing here parses or does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.profiles import InverterBehaviour, StaleAction
from gateway.profiles.sources import SourceCounts, SourcedPart
from gateway.rs485.fields import FieldSpec

PYLONTECH_ADDRESSES: Final = (1, 0xFE)
"""Pack addresses a Pylontech profile may use (0 and 0xFF have their own meaning)."""
MODBUS_UNITS: Final = (1, 247)
MAX_MODULES: Final = 16


class Framing(enum.StrEnum):
    PYLONTECH_ASCII = "pylontech-ascii"
    MODBUS_RTU = "modbus-rtu"
    MODBUS_TCP = "modbus-tcp"


MODBUS_FRAMINGS: Final = frozenset({Framing.MODBUS_RTU, Framing.MODBUS_TCP})
ADDRESS_KINDS: Final = ("pack", "master", "zero")
INFO_RULES: Final = ("ignore", "pack")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One Pylontech command the gateway answers."""

    cid2: int
    name: str
    addresses: frozenset[str]
    """Which request addresses it answers: ``pack`` (each pack's), ``master`` (the first pack's), ``zero``."""
    info: str
    """``pack``: the request's INFO may name a pack (first byte; FF: all); ``ignore``: INFO is not read."""
    all_modules: bool
    fields: tuple[FieldSpec, ...]
    description: str = ""
    system: bool = False
    """Answered for the whole stack (system values, every module), whatever the INFO says."""
    sources: tuple[str, ...] = ()
    """Where its layout comes from (:mod:`gateway.profiles.sources`)."""


@dataclass(frozen=True, slots=True)
class PylontechSpec:
    version: int
    accept_versions: frozenset[int] | None
    """None: any VER is accepted."""
    commands: Mapping[int, CommandSpec]


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    address: int
    """First register, or the offset within a module block."""
    field: FieldSpec
    sources: tuple[str, ...] = ()
    """Set on the register that starts a register block: where the block's layout comes from."""

    @property
    def words(self) -> int:
        size = self.field.wire_size or 0
        return size // 2


@dataclass(frozen=True, slots=True)
class ModuleBlockSpec:
    """Registers repeated per module: module ``i`` starts at ``base + i × stride``."""

    base: int
    stride: int
    count: int
    registers: tuple[RegisterSpec, ...]


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """A write the map accepts (and ignores): the Growatt handshake."""

    function: int
    address: int
    count: int
    description: str = ""


@dataclass(frozen=True, slots=True)
class RegisterMapSpec:
    read_functions: frozenset[int]
    span: tuple[int, int]
    registers: tuple[RegisterSpec, ...]
    modules: ModuleBlockSpec | None
    writes: tuple[WriteSpec, ...]


@dataclass(frozen=True, slots=True)
class Rs485Profile:
    """A validated RS485 profile."""

    name: str
    description: str
    source: str
    """The file it came from."""
    framings: tuple[Framing, ...]
    steers: bool
    """True: it tells an inverter what to do (only ``inverter:`` may use it); False: read-only."""
    baudrate: int
    address: int
    stale: StaleAction
    silence_after_s: float
    answer_when_silent: bool
    """Read-only maps keep answering (with zero limits and the state) when the BMS data is too old."""
    pylontech: PylontechSpec | None
    registers: RegisterMapSpec | None
    inverters: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    inverter_behaviour: InverterBehaviour | None = None
    """How the inverter reacts to 0 A and to silence, as the profile states it."""
    confirmed_by: tuple[str, ...] = ()
    """Public reports of this protocol on real inverters, ``<inverter>: <report>``."""

    @property
    def sourced_parts(self) -> tuple[SourcedPart, ...]:
        """Every command (Pylontech), or every register block (Modbus), with the sources it names."""
        if self.pylontech is not None:
            return tuple(
                SourcedPart(f"command {c.cid2:#04x} ({c.name})", c.sources) for c in self.pylontech.commands.values()
            )
        assert self.registers is not None
        blocks = register_blocks(self.registers.registers, "registers")
        if self.registers.modules is not None:
            blocks += register_blocks(self.registers.modules.registers, "module registers")
        return blocks

    @property
    def source_counts(self) -> SourceCounts:
        """How many of its commands or register blocks are sourced, unverified or say nothing."""
        return SourceCounts.of("commands" if self.pylontech is not None else "register blocks", self.sourced_parts)

    @property
    def address_range(self) -> tuple[int, int]:
        return PYLONTECH_ADDRESSES if self.pylontech is not None else MODBUS_UNITS


def register_blocks(registers: Sequence[RegisterSpec], kind: str) -> tuple[SourcedPart, ...]:
    """The register blocks of ``registers``: each starts at a register with sources, or at the first one.

    Labelled ``<kind> 0x0010-0x0029`` (first register to the last word of the block's last register).
    """
    starts = [index for index, reg in enumerate(registers) if index == 0 or reg.sources]
    blocks: list[SourcedPart] = []
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(registers)
        last = registers[end - 1]
        label = f"{kind} {registers[start].address:#06x}-{last.address + max(last.words, 1) - 1:#06x}"
        blocks.append(SourcedPart(label, registers[start].sources))
    return tuple(blocks)
