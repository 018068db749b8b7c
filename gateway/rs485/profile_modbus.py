"""The Modbus register-map schema of an RS485 profile: ``read_functions``, ``span``, ``registers``, ``modules``
(registers repeated per module) and the accepted ``writes`` into a :class:`RegisterMapSpec`; no register may
overlap another or leave the span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.errors import ProfileError
from gateway.profiles.sources import parse_sources
from gateway.rs485.fields import FieldKind
from gateway.rs485.profile_fields import Node, parse_field
from gateway.rs485.profile_spec import MAX_MODULES, ModuleBlockSpec, RegisterMapSpec, RegisterSpec, WriteSpec


def _register(data: object, where: str, key: str, earlier: Sequence[str]) -> RegisterSpec:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping")
    address = data.get(key)
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise ProfileError(f"{where}: {key}: expected an integer 0x0000-0xFFFF, got {address!r}")
    label = f"{where} at {address:#06x}"
    sources = parse_sources(data, label)
    spec = parse_field(
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


def parse_register_map(top: Node, source: str) -> RegisterMapSpec:
    """The Modbus keys of the profile's top level. :raises ProfileError: naming the register and field."""
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
        node = Node(top.get("modules"), f"{source}: modules", ["base", "stride", "count", "registers"])
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
        node = Node(item, f"{source}: writes: {index}", ["function", "address", "count", "description"])
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
