"""Loading profiles: a built-in name or a YAML path in, a compiled frozen :class:`Profile` out.

Built-in profiles are the ``*.yaml`` files of the repository's top-level ``profiles/`` directory. An installed
package carries them as the data-only package ``gateway.builtin_profiles`` (see ``pyproject.toml``); in a
checkout whose install predates that mapping they are read from ``profiles/`` next to the package.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import yaml

from gateway.errors import ProfileError, ProfileNotFoundError
from gateway.profiles.codec import CanFrameCodec, compile_frame
from gateway.profiles.schema import HeartbeatSpec, parse_profile
from gateway.values import Value

BUILTIN_PACKAGE: Final = "gateway.builtin_profiles"
"""The package the top-level ``profiles/`` directory installs as."""
_SUFFIXES: Final = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Profile:
    """A compiled inverter protocol profile. Frozen: load another profile to change anything."""

    name: str
    """Profile name, e.g. ``"pylontech-can"``."""
    description: str
    inverters: tuple[str, ...]
    """Inverters (or inverter families) this profile serves."""
    sources: tuple[str, ...]
    """Specifications and references the profile follows."""
    path: str
    """The file it was loaded from."""
    transport: str
    """Bus kind; ``"can"`` so far."""
    bitrate: int
    """Default CAN bit rate, bit/s."""
    heartbeat: HeartbeatSpec | None
    """The inverter's alive frame and how long without it counts as lost; None: the inverter sends none."""
    silence_after_s: float
    """Fail-safe default: stop transmitting after this long with stale BMS data, s."""
    frames: tuple[CanFrameCodec, ...]
    """Frames the battery side (the gateway) sends, in file order."""
    inverter_frames: tuple[CanFrameCodec, ...]
    """Frames the inverter sends, decodable into named values."""

    @property
    def value_names(self) -> frozenset[str]:
        """Every published value name the sent frames read."""
        return frozenset().union(*(frame.value_names for frame in self.frames))

    def encode_all(self, values: Mapping[str, Value]) -> list[tuple[int, bytes]]:
        """``(can_id, payload)`` of every sent frame for ``values``, in file order.

        :raises EncodeError: a needed value is missing, a string, or NaN.
        """
        return [(frame.can_id, frame.encode(values)) for frame in self.frames]

    def frame(self, can_id: int) -> CanFrameCodec:
        """The sent frame with this id.

        :raises KeyError: the profile sends no such frame.
        """
        for frame in self.frames:
            if frame.can_id == can_id:
                return frame
        raise KeyError(can_id)

    def inverter_frame(self, can_id: int) -> CanFrameCodec | None:
        """The inverter frame with this id, or None if the profile does not know it."""
        for frame in self.inverter_frames:
            if frame.can_id == can_id:
                return frame
        return None


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        if not isinstance(key, list | dict):
            seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_profile_text(text: str, source: str) -> Profile:
    """Parse, validate and compile the YAML ``text`` of a profile; ``source`` names it in messages.

    :raises ProfileError: invalid YAML or an invalid profile, naming ``source``, frame and field.
    """
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ProfileError(f"{source}: YAML error{where}: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"{source}: YAML error: {error}") from None
    spec = parse_profile(data, source)
    return Profile(
        name=spec.name,
        description=spec.description,
        inverters=spec.inverters,
        sources=spec.sources,
        path=source,
        transport=spec.transport,
        bitrate=spec.bitrate,
        heartbeat=spec.heartbeat,
        silence_after_s=spec.silence_after_s,
        frames=tuple(compile_frame(frame) for frame in spec.frames),
        inverter_frames=tuple(compile_frame(frame) for frame in spec.inverter_frames),
    )


def _builtin_dir() -> Traversable:
    try:
        return importlib.resources.files(BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        # A checkout installed before the pyproject mapping existed: <repo>/gateway/profiles/loader.py.
        return Path(__file__).resolve().parents[2] / "profiles"


def _builtin_files() -> Iterator[Traversable]:
    directory = _builtin_dir()
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file() and entry.name.endswith(_SUFFIXES):
                yield entry


def builtin_profile_names() -> list[str]:
    """Names of the profiles shipped with the gateway, sorted (file names without ``.yaml``)."""
    return sorted(entry.name.rsplit(".", 1)[0] for entry in _builtin_files())


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name (``"pylontech-can"``) or a profile file by path (``"my.yaml"``).

    A string that ends in ``.yaml``/``.yml`` or contains a path separator is a path; anything else is a
    built-in name.

    :raises ProfileNotFoundError: unknown name, or a file that cannot be read.
    :raises ProfileError: an invalid profile.
    """
    looks_like_path = name_or_path.endswith(_SUFFIXES) or "/" in name_or_path or "\\" in name_or_path
    if not looks_like_path:
        for entry in _builtin_files():
            if entry.name.rsplit(".", 1)[0] == name_or_path:
                return load_profile_text(entry.read_text(encoding="utf-8"), str(entry))
        names = builtin_profile_names()
        hint = difflib.get_close_matches(name_or_path, names, n=1)
        more = f"did you mean '{hint[0]}'?" if hint else "built-in: " + (", ".join(names) or "none")
        raise ProfileNotFoundError(f"unknown profile '{name_or_path}' ({more})")
    try:
        text = Path(name_or_path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{name_or_path}: not UTF-8 text") from None
    except OSError as error:
        raise ProfileNotFoundError(f"{name_or_path}: cannot read: {error.strerror or error}") from None
    return load_profile_text(text, name_or_path)
