"""The Pylontech command schema of an RS485 profile: ``version``, ``accept_versions`` and ``commands`` (each
command's cid2, the request addresses and INFO it answers, its scope and its fields) into a :class:`PylontechSpec`.
"""

from __future__ import annotations

from typing import Final

from gateway.profiles.sources import parse_sources
from gateway.rs485.profile_fields import Node, parse_fields
from gateway.rs485.profile_spec import ADDRESS_KINDS, INFO_RULES, CommandSpec, PylontechSpec

_COMMAND_KEYS: Final = (
    "cid2", "name", "addresses", "info", "all_modules", "scope", "fields", "description", "sources",
)  # fmt: skip
SCOPES: Final = ("module", "system")


def parse_pylontech(top: Node, source: str) -> PylontechSpec:
    """The Pylontech keys of the profile's top level. :raises ProfileError: naming the command and field."""
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
        node = Node(item, f"{source}: command {index}", _COMMAND_KEYS)
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
        fields = parse_fields(node.get("fields", []), node.where, unit="bytes", modules_allowed=True)
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
