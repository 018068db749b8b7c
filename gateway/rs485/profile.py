"""RS485 inverter profiles: YAML files that say how the gateway answers an inverter's polls.

Built-in profiles are the ``*.yaml`` files of ``profiles/rs485/`` (installed as data of
``gateway.builtin_profiles``). Beside the CAN profiles' loader, with the same shape of API:
:func:`load_rs485_profile` takes a built-in name or a path, :func:`rs485_profile_names` lists the built-ins.
Every problem is one :class:`~gateway.errors.ProfileError` line naming the file, the command or register, and
the field; an unknown name is a :class:`~gateway.errors.ProfileNotFoundError`.

The YAML reference (see the shipped files for complete examples)::

    name: pylontech-rs485             # = the file name for built-ins
    description: one line
    inverters: [...]                  # optional: who polls this
    sources: [...]                    # optional: where the layout comes from
    confirmed_by: [...]               # optional: public reports of it on real inverters
    inverter_behaviour: {...}         # optional: how the inverter reacts to 0 A and to silence
                                      # (gateway.profiles.behaviour, shared with the CAN profiles)
    transport: rs485
    framing: pylontech-ascii          # or modbus-rtu, modbus-tcp, or a list of the Modbus two
    steers: true                      # false: a read-only output (allowed in extra_outputs)
    baudrate: 9600                    # default of inverter.serial.baudrate, bit/s
    address: 2                        # default pack address (Pylontech) or unit (Modbus)
    failsafe: {stale: zeros, silence_after_s: 60, answer_when_silent: false}

    # pylontech-ascii
    version: 0x20                     # VER of every answer
    accept_versions: [0x20]           # optional: other VERs in a request get return code 01
    commands:
      - cid2: 0x42
        name: analog_values
        addresses: [pack]             # pack: each pack's address; master: the first's; zero: address 0
        info: pack                    # pack: INFO may name a pack address (or FF); ignore: INFO not read
        all_modules: true             # INFO FF answers with every module
        scope: module                 # system: answered with the whole stack's values (0x60-0x63)
        sources: [...]                # optional: where this command's layout comes from
        fields: [<field>, ...]

    # modbus-*
    read_functions: [3]
    span: [0x0000, 0x0161]            # reads inside answer (0 for registers nobody defined)
    registers: [{address: 0x0015, <field>}, ...]   # a register with sources: [...] starts a register block
    modules: {base: 0x1000, stride: 0x100, count: 16, registers: [{offset: 0, <field>}, ...]}
    writes: [{function: 0x10, address: 0x0013, count: 1}]   # every other write: illegal function

A field (Pylontech: ``bytes``; registers: ``words``, or ``bytes`` per item for a list with ``length`` that packs
items smaller than a register, first item in the high byte) carries exactly one of ``value`` (a number, with ``scale``,
``offset``, ``signed``, ``negate``, ``bitmask``/``shift``), ``constant``, ``flags`` ({bit: [flag names]}),
``text`` (a text value) or ``text_constant`` (with ``pad: nul|space``), ``list`` (a list value, with
``count_bytes`` or ``length``/``missing``), ``state`` ({above: [flags], below: [flags]}) or ``modules``
(Pylontech: sub-fields repeated per module). ``only_if: {field, above}`` leaves a field out unless an earlier
field's value is above a number. Value names: :mod:`gateway.rs485.values`.

``sources`` (:mod:`gateway.profiles.sources`, shared with the CAN profiles) names where a command's layout, or
a register block's, comes from: a register that has the key starts a block, which runs up to the next one that
has it (the module registers are blocks of their own, from their first register).
"""

from __future__ import annotations

import difflib
import enum
import importlib.resources
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import yaml
import yaml.constructor
import yaml.resolver

from gateway.errors import ProfileError, ProfileNotFoundError
from gateway.profiles import InverterBehaviour, StaleAction, parse_inverter_behaviour
from gateway.profiles.sources import SourceCounts, SourcedPart, parse_confirmed_by, parse_sources
from gateway.rs485.fields import Condition, FieldKind, FieldSpec, field_values
from gateway.rs485.values import RS485_FLAGS, RS485_LISTS, RS485_NUMERIC, RS485_TEXTS
from gateway.yaml_loader import ProfileLoader

BUILTIN_PACKAGE: Final = "gateway.builtin_profiles"
BUILTIN_SUBDIR: Final = "rs485"
_SUFFIXES: Final = (".yaml", ".yml")
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


# --- YAML ------------------------------------------------------------------------------------------------------


def _read_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=ProfileLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{source}: invalid YAML{where}: {' '.join(str(error.problem).split())}") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"{source}: invalid YAML: {' '.join(str(error).split())}") from None


# --- validation ----------------------------------------------------------------------------------------------


class _Node:
    """A mapping being validated, with the words that locate it in messages."""

    def __init__(self, data: object, where: str, allowed: Sequence[str]) -> None:
        if not isinstance(data, Mapping):
            raise ProfileError(f"{where}: expected a mapping")
        self.data: Mapping[Any, Any] = data
        self.where = where
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else f" (valid: {', '.join(sorted(allowed))})"
                self.fail(f"unknown key {key!r}{hint}")

    def fail(self, problem: str) -> None:
        raise ProfileError(f"{self.where}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def required(self, key: str) -> Any:
        if key not in self.data:
            self.fail(f"missing key {key!r}")
        return self.data[key]

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default) if default is not None else self.required(key)
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{key}: expected a non-empty string")
        return str(value)

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        value = self.data.get(key, default) if default is not None else self.required(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(f"{key}: expected an integer from {low} to {high}, got {value!r}")
        return int(value)

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(f"{key}: expected a number, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{key}: expected true or false, got {value!r}")
        return bool(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(f"{key}: expected a list of strings")
        return tuple(value)


_FIELD_KEYS: Final = (
    "name",
    "bytes",
    "words",
    "value",
    "scale",
    "offset",
    "signed",
    "negate",
    "bitmask",
    "shift",
    "constant",
    "flags",
    "text",
    "text_constant",
    "pad",
    "list",
    "count_bytes",
    "length",
    "missing",
    "state",
    "modules",
    "only_if",
    "description",
)
_CARRIERS: Final = ("value", "constant", "flags", "text", "text_constant", "list", "state", "modules")
_PADS: Final = {"nul": b"\x00", "space": b" "}


def _check_names(node: _Node, spec: FieldSpec) -> None:
    for name, role in field_values(spec).items():
        catalogue: Mapping[str, str] = {
            "text": RS485_TEXTS,
            "list": RS485_LISTS,
            "flag": RS485_FLAGS,
        }.get(role, {**RS485_NUMERIC, **RS485_FLAGS})
        if name not in catalogue:
            close = difflib.get_close_matches(name, list(catalogue), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            node.fail(f"unknown {role} value {name!r}{hint}")


def _field(data: object, where: str, *, unit: str, modules_allowed: bool, earlier: Sequence[str]) -> FieldSpec:
    """One field; ``unit`` is ``bytes`` (Pylontech) or ``words`` (registers)."""
    # A register field gives its size in words; only a register list may give bytes instead (items smaller
    # than a register, packed big-endian: Voltronic's two cell states per register).
    node = _Node(data, where, [k for k in _FIELD_KEYS if k not in ("bytes", "words") or k == unit or unit == "words"])
    name = node.string("name")
    node.where = f"{where} '{name}'"
    carriers = [key for key in _CARRIERS if node.has(key)]
    if len(carriers) != 1:
        node.fail(f"needs exactly one of {', '.join(_CARRIERS)} (has {' and '.join(carriers) or 'none'})")
    carrier = carriers[0]
    per_unit = 1 if unit == "bytes" else 2
    only_if = None
    if node.has("only_if"):
        cond = _Node(node.get("only_if"), f"{node.where}: only_if", ["field", "above"])
        target = cond.string("field")
        if target not in earlier:
            cond.fail(f"field {target!r} is not an earlier field")
        only_if = Condition(target, cond.number("above", 0.0))
    common: dict[str, Any] = {"name": name, "description": str(node.get("description", "")), "only_if": only_if}
    if carrier == "modules":
        if not modules_allowed:
            node.fail("modules: only in a Pylontech command, once, not nested")
        items = node.get("modules")
        if not isinstance(items, list) or not items:
            node.fail("modules: expected a non-empty list of fields")
        sub = _fields(items, f"{node.where}: modules", unit=unit, modules_allowed=False)
        return FieldSpec(kind=FieldKind.MODULES, size=0, fields=sub, **common)
    packed = unit == "words" and node.has("bytes")
    if packed:
        if carrier != "list" or node.has("words") or not node.has("length"):
            node.fail("bytes: only a register list with length may size its items in bytes (not with words)")
        size = node.integer("bytes", 1, 64)
    else:
        size = node.integer(unit, 1, 64 if unit == "bytes" else 32, None if carrier != "flags" else 1) * per_unit
    numeric: dict[str, Any] = {
        "scale": node.number("scale", 1.0),
        "offset": node.number("offset", 0.0),
        "signed": node.boolean("signed", False),
        "negate": node.boolean("negate", False),
        "bitmask": node.boolean("bitmask", False),
        "shift": node.integer("shift", 0, 63, 0),
    }
    if numeric["scale"] <= 0:
        node.fail("scale: expected a positive number")
    if size > 8 and carrier in ("value", "constant", "flags"):
        node.fail(f"{unit}: a number is at most 8 bytes")
    spec: FieldSpec
    if carrier == "value":
        value = node.string("value")
        spec = FieldSpec(kind=FieldKind.NUMBER, size=size, value=value, **numeric, **common)
    elif carrier == "constant":
        constant = node.get("constant")
        if isinstance(constant, bool) or not isinstance(constant, int) or not 0 <= constant < 1 << (8 * size):
            node.fail(f"constant: expected an integer that fits {size} bytes")
        spec = FieldSpec(kind=FieldKind.CONSTANT, size=size, constant=int(constant), **common)
    elif carrier == "flags":
        raw = node.get("flags")
        if not isinstance(raw, Mapping) or not raw:
            node.fail("flags: expected a mapping of bit number to a list of flag names")
        bits: list[tuple[int, tuple[str, ...]]] = []
        for bit, names in raw.items():
            if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit < 8 * size:
                node.fail(f"flags: bit {bit!r} is not a bit of {size} bytes")
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                node.fail(f"flags: bit {bit}: expected a flag name or a list of them")
            bits.append((int(bit), tuple(names)))
        spec = FieldSpec(kind=FieldKind.FLAGS, size=size, bits=tuple(sorted(bits)), **common)
    elif carrier in ("text", "text_constant"):
        pad = node.get("pad", "nul")
        if pad not in _PADS:
            node.fail(f"pad: expected one of {', '.join(_PADS)}")
        text = node.string(carrier)
        spec = FieldSpec(
            kind=FieldKind.TEXT,
            size=size,
            value=text if carrier == "text" else None,
            constant_text=text if carrier == "text_constant" else None,
            pad=_PADS[pad],
            **common,
        )
    elif carrier == "list":
        value = node.string("list")
        if node.has("length"):
            if node.has("count_bytes"):
                node.fail("list: give count_bytes or length, not both")
            length = node.integer("length", 1, 256)
            if packed and size * length % 2:
                node.fail(f"length: {length} items of {size} bytes do not fill whole registers")
            missing = node.integer("missing", 0, (1 << (8 * size)) - 1, 0)
            spec = FieldSpec(
                kind=FieldKind.LIST, size=size, value=value, count_size=0, length=length, missing=missing,
                **numeric, **common,
            )  # fmt: skip
        else:
            count = node.integer("count_bytes", 1, 2, 1)
            spec = FieldSpec(kind=FieldKind.LIST, size=size, value=value, count_size=count, **numeric, **common)
    else:  # state
        state = _Node(node.get("state"), f"{node.where}: state", ["above", "below"])
        spec = FieldSpec(
            kind=FieldKind.STATE, size=size, above=state.strings("above"), below=state.strings("below"), **common
        )
    _check_names(node, spec)
    return spec


def _fields(items: object, where: str, *, unit: str, modules_allowed: bool) -> tuple[FieldSpec, ...]:
    if not isinstance(items, list):
        raise ProfileError(f"{where}: expected a list of fields")
    out: list[FieldSpec] = []
    for index, item in enumerate(items):
        spec = _field(item, f"{where}: field {index}", unit=unit, modules_allowed=modules_allowed, earlier=[
            f.name for f in out
        ])  # fmt: skip
        if spec.name in {f.name for f in out}:
            raise ProfileError(f"{where}: field name {spec.name!r} twice")
        if spec.kind is FieldKind.MODULES:
            modules_allowed = False
        out.append(spec)
    return tuple(out)


_COMMAND_KEYS: Final = (
    "cid2", "name", "addresses", "info", "all_modules", "scope", "fields", "description", "sources",
)  # fmt: skip
SCOPES: Final = ("module", "system")


def _pylontech(top: _Node, source: str) -> PylontechSpec:
    version = top.integer("version", 0, 0xFF)
    accept = top.get("accept_versions")
    if accept is not None and (
        not isinstance(accept, list) or not all(isinstance(v, int) and 0 <= v <= 0xFF for v in accept)
    ):
        top.fail("accept_versions: expected a list of integers 0-255")
    items = top.required("commands")
    if not isinstance(items, list) or not items:
        top.fail("commands: expected a non-empty list")
    commands: dict[int, CommandSpec] = {}
    for index, item in enumerate(items):
        node = _Node(item, f"{source}: command {index}", _COMMAND_KEYS)
        cid2 = node.integer("cid2", 0, 0xFF)
        name = node.string("name")
        node.where = f"{source}: command {cid2:#04x} ({name})"
        if cid2 in commands:
            node.fail("cid2 given twice")
        addresses = node.strings("addresses") or ("pack",)
        for kind in addresses:
            if kind not in ADDRESS_KINDS:
                node.fail(f"addresses: {kind!r} is not one of {', '.join(ADDRESS_KINDS)}")
        info = node.string("info", "ignore")
        if info not in INFO_RULES:
            node.fail(f"info: expected one of {', '.join(INFO_RULES)}")
        all_modules = node.boolean("all_modules", False)
        if all_modules and info != "pack":
            node.fail("all_modules: needs info: pack (the request's INFO FF asks for every module)")
        scope = node.string("scope", "module")
        if scope not in SCOPES:
            node.fail(f"scope: expected one of {', '.join(SCOPES)}")
        fields = _fields(node.get("fields", []), node.where, unit="bytes", modules_allowed=True)
        commands[cid2] = CommandSpec(
            cid2,
            name,
            frozenset(addresses),
            info,
            all_modules,
            fields,
            str(node.get("description", "")),
            system=scope == "system",
            sources=parse_sources(node.data, node.where),
        )
    return PylontechSpec(version, None if accept is None else frozenset(accept), commands)


def _register(data: object, where: str, key: str, earlier: Sequence[str]) -> RegisterSpec:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping")
    address = data.get(key)
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise ProfileError(f"{where}: {key}: expected an integer 0x0000-0xFFFF, got {address!r}")
    label = f"{where} at {address:#06x}"
    sources = parse_sources(data, label)
    spec = _field(
        {k: v for k, v in data.items() if k not in (key, "sources")},
        label,
        unit="words",
        modules_allowed=False,
        earlier=earlier,
    )
    if spec.kind is FieldKind.LIST and spec.count_size:
        raise ProfileError(f"{label} '{spec.name}': a register list needs length (registers have no count)")
    if spec.only_if is not None:
        raise ProfileError(f"{label} '{spec.name}': only_if is for Pylontech fields")
    return RegisterSpec(address, spec, sources)


def _registers(items: object, where: str, key: str) -> tuple[RegisterSpec, ...]:
    if not isinstance(items, list) or not items:
        raise ProfileError(f"{where}: expected a non-empty list of registers")
    out: list[RegisterSpec] = []
    for index, item in enumerate(items):
        out.append(_register(item, f"{where}: register {index}", key, ()))
    taken: dict[int, str] = {}
    for reg in out:
        for word in range(reg.address, reg.address + reg.words):
            if word in taken:
                raise ProfileError(f"{where}: register {word:#06x} is in both '{taken[word]}' and '{reg.field.name}'")
            taken[word] = reg.field.name
    return tuple(out)


def _register_map(top: _Node, source: str) -> RegisterMapSpec:
    functions = top.get("read_functions", [3])
    if not isinstance(functions, list) or not functions or not all(f in (3, 4) for f in functions):
        top.fail("read_functions: expected a list of 3 (holding) and/or 4 (input registers)")
    span = top.required("span")
    if (
        not isinstance(span, list)
        or len(span) != 2
        or not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 0xFFFF for a in span)
        or span[0] > span[1]
    ):
        top.fail("span: expected [first, last] register addresses")
    registers = _registers(top.required("registers"), f"{source}: registers", "address")
    modules = None
    if top.has("modules"):
        node = _Node(top.get("modules"), f"{source}: modules", ["base", "stride", "count", "registers"])
        stride = node.integer("stride", 1, 0xFFFF)
        block = _registers(node.required("registers"), f"{source}: modules: registers", "offset")
        if max(r.address + r.words for r in block) > stride:
            node.fail(f"registers reach past the stride ({stride})")
        modules = ModuleBlockSpec(node.integer("base", 0, 0xFFFF), stride, node.integer("count", 1, MAX_MODULES), block)
    for reg in registers:
        if not (span[0] <= reg.address and reg.address + reg.words - 1 <= span[1]):
            raise ProfileError(f"{source}: register {reg.address:#06x} '{reg.field.name}' is outside the span")
    if modules is not None and not (
        span[0] <= modules.base and modules.base + modules.count * modules.stride - 1 <= span[1]
    ):
        raise ProfileError(f"{source}: modules: the module blocks reach outside the span")
    writes: list[WriteSpec] = []
    for index, item in enumerate(top.get("writes", []) or []):
        node = _Node(item, f"{source}: writes: {index}", ["function", "address", "count", "description"])
        function = node.integer("function", 6, 16)
        if function not in (6, 16):
            node.fail("function: expected 6 or 16 (0x10)")
        writes.append(
            WriteSpec(
                function,
                node.integer("address", 0, 0xFFFF),
                node.integer("count", 1, 123, 1),
                str(node.get("description", "")),
            )
        )
    return RegisterMapSpec(frozenset(functions), (span[0], span[1]), registers, modules, tuple(writes))


_TOP_KEYS: Final = (
    "name",
    "description",
    "inverters",
    "sources",
    "confirmed_by",
    "inverter_behaviour",
    "transport",
    "framing",
    "steers",
    "baudrate",
    "address",
    "failsafe",
    "version",
    "accept_versions",
    "commands",
    "read_functions",
    "span",
    "registers",
    "modules",
    "writes",
)
_PYLONTECH_KEYS: Final = ("version", "accept_versions", "commands")
_MODBUS_KEYS: Final = ("read_functions", "span", "registers", "modules", "writes")


def parse_rs485_profile(data: object, source: str) -> Rs485Profile:
    """Validate loaded YAML into a profile. :raises ProfileError: naming ``source`` and the field."""
    top = _Node(data, source, _TOP_KEYS)
    name = top.string("name")
    if top.get("transport") != "rs485":
        top.fail(f"transport: expected rs485, got {top.get('transport')!r}")
    raw_framing = top.required("framing")
    framing_list = raw_framing if isinstance(raw_framing, list) else [raw_framing]
    try:
        framings = tuple(Framing(f) for f in framing_list)
    except ValueError:
        top.fail(f"framing: expected {', '.join(f.value for f in Framing)} (Modbus ones may be a list)")
    pylontech_framing = Framing.PYLONTECH_ASCII in framings
    if not framings or (pylontech_framing and len(framings) > 1):
        top.fail("framing: pylontech-ascii alone, or one or both Modbus framings")
    wrong = _MODBUS_KEYS if pylontech_framing else _PYLONTECH_KEYS
    for key in wrong:
        if top.has(key):
            top.fail(f"{key}: not a key of a {framings[0]} profile")
    failsafe = _Node(top.get("failsafe", {}), f"{source}: failsafe", ["stale", "silence_after_s", "answer_when_silent"])
    try:
        stale = StaleAction(failsafe.get("stale", "zeros"))
    except ValueError:
        failsafe.fail(f"stale: expected one of {', '.join(a.value for a in StaleAction)}")
    silence = failsafe.number("silence_after_s", 60.0)
    if silence <= 0:
        failsafe.fail("silence_after_s: expected a positive number")
    steers = top.boolean("steers", True)
    answer_when_silent = failsafe.boolean("answer_when_silent", False)
    if steers and answer_when_silent:
        failsafe.fail("answer_when_silent: only for read-only profiles (steers: false)")
    low, high = PYLONTECH_ADDRESSES if pylontech_framing else MODBUS_UNITS
    return Rs485Profile(
        name=name,
        description=top.string("description", name),
        source=source,
        framings=framings,
        steers=steers,
        baudrate=top.integer("baudrate", 1, 4_000_000, 9600),
        address=top.integer("address", low, high, 2 if pylontech_framing else 1),
        stale=stale,
        silence_after_s=silence,
        answer_when_silent=answer_when_silent,
        pylontech=_pylontech(top, source) if pylontech_framing else None,
        registers=None if pylontech_framing else _register_map(top, source),
        inverters=top.strings("inverters"),
        sources=top.strings("sources"),
        inverter_behaviour=parse_inverter_behaviour(top.data, source),
        confirmed_by=parse_confirmed_by(top.data, source),
    )


# --- files and built-ins -------------------------------------------------------------------------------------


def _builtin_dir() -> Traversable:
    try:
        return importlib.resources.files(BUILTIN_PACKAGE) / BUILTIN_SUBDIR
    except ModuleNotFoundError:
        # A checkout run from its own directory: <repo>/gateway/rs485/profile.py.
        return Path(__file__).resolve().parents[2] / "profiles" / BUILTIN_SUBDIR


def _builtin_files() -> Iterator[Traversable]:
    directory = _builtin_dir()
    if directory.is_dir():
        for entry in sorted(directory.iterdir(), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith(_SUFFIXES):
                yield entry


def rs485_profile_names() -> list[str]:
    """Names of the built-in RS485 profiles, sorted (file names without ``.yaml``)."""
    return sorted(entry.name.rsplit(".", 1)[0] for entry in _builtin_files())


def load_rs485_profile_text(text: str, source: str) -> Rs485Profile:
    """A profile from YAML text; ``source`` names it in messages. :raises ProfileError:"""
    return parse_rs485_profile(_read_yaml(text, source), source)


def load_rs485_profile(name_or_path: str) -> Rs485Profile:
    """A built-in RS485 profile by name (``"pylontech-rs485"``), or a profile file by path.

    A string ending in ``.yaml``/``.yml`` or containing a path separator is a path.

    :raises ProfileNotFoundError: no built-in has that name, or the file cannot be read.
    :raises ProfileError: the profile is invalid.
    """
    if name_or_path.endswith(_SUFFIXES) or "/" in name_or_path or "\\" in name_or_path:
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
            raise ProfileNotFoundError(f"cannot read RS485 profile file {path}: {reason}") from None
        return load_rs485_profile_text(text, str(path))
    for entry in _builtin_files():
        if entry.name.rsplit(".", 1)[0] == name_or_path:
            return load_rs485_profile_text(entry.read_text(encoding="utf-8"), str(entry))
    names = rs485_profile_names()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else f" (built-in: {', '.join(names) or 'none'})"
    raise ProfileNotFoundError(f"no built-in RS485 profile named {name_or_path!r}{hint}")


def is_rs485_profile(name_or_path: str) -> bool:
    """True when ``name_or_path`` is a built-in RS485 name or a file whose ``transport`` is rs485."""
    if name_or_path in rs485_profile_names():
        return True
    if not (name_or_path.endswith(_SUFFIXES) or "/" in name_or_path):
        return False
    try:
        data = yaml.load(Path(name_or_path).read_text(encoding="utf-8"), Loader=ProfileLoader)  # safe
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, Mapping) and data.get("transport") == "rs485"
