"""The fields of an RS485 profile (a Pylontech command's bytes, a register's words) parsed from YAML into
:class:`~gateway.rs485.fields.FieldSpec`: which carrier a field has (value, constant, flags, text, list, state,
modules), the keys each accepts, and the value names it may carry (:mod:`gateway.rs485.values`). Also
:class:`Node`, the mapping being validated that every part of the RS485 schema uses for its messages.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.errors import ProfileError
from gateway.rs485.fields import Condition, FieldKind, FieldSpec, field_values
from gateway.rs485.values import RS485_FLAGS, RS485_LISTS, RS485_NUMERIC, RS485_TEXTS


class Node:
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


def _check_names(node: Node, spec: FieldSpec) -> None:
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


def parse_field(data: object, where: str, *, unit: str, modules_allowed: bool, earlier: Sequence[str]) -> FieldSpec:
    """One field; ``unit`` is ``bytes`` (Pylontech) or ``words`` (registers)."""
    # A register field gives its size in words; only a register list may give bytes instead (items smaller
    # than a register, packed big-endian: Voltronic's two cell states per register).
    node = Node(data, where, [k for k in _FIELD_KEYS if k not in ("bytes", "words") or k == unit or unit == "words"])
    name = node.string("name")
    node.where = f"{where} '{name}'"
    carriers = [key for key in _CARRIERS if node.has(key)]
    if len(carriers) != 1:
        node.fail(f"needs exactly one of {', '.join(_CARRIERS)} (has {' and '.join(carriers) or 'none'})")
    carrier = carriers[0]
    per_unit = 1 if unit == "bytes" else 2
    only_if = None
    if node.has("only_if"):
        cond = Node(node.get("only_if"), f"{node.where}: only_if", ["field", "above"])
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
        sub = parse_fields(items, f"{node.where}: modules", unit=unit, modules_allowed=False)
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
        state = Node(node.get("state"), f"{node.where}: state", ["above", "below"])
        spec = FieldSpec(
            kind=FieldKind.STATE, size=size, above=state.strings("above"), below=state.strings("below"), **common
        )
    _check_names(node, spec)
    return spec


def parse_fields(items: object, where: str, *, unit: str, modules_allowed: bool) -> tuple[FieldSpec, ...]:
    """A list of fields, names unique, at most one ``modules`` field (when ``modules_allowed``)."""
    if not isinstance(items, list):
        raise ProfileError(f"{where}: expected a list of fields")
    out: list[FieldSpec] = []
    for index, item in enumerate(items):
        spec = parse_field(item, f"{where}: field {index}", unit=unit, modules_allowed=modules_allowed, earlier=[
            f.name for f in out
        ])  # fmt: skip
        if spec.name in {f.name for f in out}:
            raise ProfileError(f"{where}: field name {spec.name!r} twice")
        if spec.kind is FieldKind.MODULES:
            modules_allowed = False
        out.append(spec)
    return tuple(out)
