"""The YAML loaders of every file the gateway reads: the config, the profiles (CAN and RS485), scenario files.

All are ``yaml.SafeLoader`` subclasses (no Python objects) that also reject a key given twice in one mapping
(PyYAML silently keeps the last) and report a bad value (``2024-02-30``) with its position instead of leaking a
``ValueError``. They differ in YAML aliases (``*name``):

* :class:`ConfigLoader` refuses them. A config is short and written by hand; an alias there is a mistake or a
  "billion laughs" bomb: nine aliases nested eight deep expand to 9^8 nodes in the pass-through keys
  (``inverter.can``), 1.2 GB and 29 s before "OK" (security audit L7). Refused while composing, before anything is
  expanded.
* :class:`ProfileLoader` allows them (the SMA profile reuses a list of flags by alias) but counts what they
  expand to and refuses a file whose expanded size passes :data:`MAX_PROFILE_NODES`, also while composing.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

MAX_PROFILE_NODES: Final = 20_000
"""Most YAML nodes a profile may expand to, aliases counted as often as they are used (the largest built-in
profile, growatt-can, has 726)."""
_SHOWN_KEY_CHARS: Final = 60


class _StrictLoader(yaml.SafeLoader):
    """Duplicate keys refused; bad values reported with their position."""

    def construct_object(self, node: yaml.nodes.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as error:
            raise yaml.constructor.ConstructorError(None, None, str(error), node.start_mark) from None

    def construct_mapping(self, node: yaml.nodes.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                shown = repr(key) if len(repr(key)) <= _SHOWN_KEY_CHARS else repr(key)[:_SHOWN_KEY_CHARS] + "..."
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


class ConfigLoader(_StrictLoader):
    """For the config and scenario files: YAML aliases refused before they are expanded."""

    def compose_node(self, parent: yaml.nodes.Node | None, index: int) -> yaml.nodes.Node | None:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed here: write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


class ProfileLoader(_StrictLoader):
    """For profiles: aliases allowed, the expanded size capped at :data:`MAX_PROFILE_NODES`."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._expanded_nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.nodes.Node | None, index: int) -> yaml.nodes.Node | None:
        alias = self.check_event(yaml.events.AliasEvent)
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        node = super().compose_node(parent, index)
        # A plain node counts once (its children count as they are composed); an alias counts all it expands to.
        self._expanded_nodes += self._size(node, mark) if alias and node is not None else 1
        if self._expanded_nodes > MAX_PROFILE_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"the file expands to more than {MAX_PROFILE_NODES} YAML nodes (aliases counted)", mark
            )
        return node

    def _size(self, node: yaml.nodes.Node, mark: yaml.Mark) -> int:
        """Nodes in ``node`` with every alias inside expanded; an alias inside its own anchor is refused."""
        key = id(node)
        known = self._sizes.get(key)
        if known is not None:
            if known < 0:
                raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", mark)
            return known
        self._sizes[key] = -1
        size = 1
        if isinstance(node, yaml.nodes.SequenceNode):
            size += sum(self._size(item, mark) for item in node.value)
        elif isinstance(node, yaml.nodes.MappingNode):
            size += sum(self._size(k, mark) + self._size(v, mark) for k, v in node.value)
        self._sizes[key] = size
        return size
