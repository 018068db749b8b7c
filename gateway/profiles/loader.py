"""Loading profiles: a built-in name, an alias or a YAML path in, a compiled frozen :class:`Profile` out.

Built-in profiles are the ``*.yaml`` files of the repository's top-level ``profiles/`` directory. An installed
package carries them as the data-only package ``gateway.builtin_profiles`` (see ``pyproject.toml``); in a
checkout whose install predates that mapping they are read from ``profiles/`` next to the package.

A profile with ``extends:`` is read together with its base (a built-in name or alias, or a path relative to
the extending file), the base first and on its own, so that each problem names the file it is in; a chain that
comes back to a file it already passed is an error. :func:`builtin_profiles` lists the built-ins with their
aliases and fails when two of them claim the same name.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import yaml

from gateway.errors import ProfileError, ProfileNotFoundError
from gateway.profiles.behaviour import InverterBehaviour
from gateway.profiles.codec import CanFrameCodec, compile_frame
from gateway.profiles.merge import merge_profiles
from gateway.profiles.schema import parse_profile
from gateway.profiles.sources import SourceCounts, SourcedPart
from gateway.profiles.spec import HeartbeatSpec, ProfileSpec, SendMode, StaleAction
from gateway.values import Value
from gateway.yaml_loader import ProfileLoader

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
    """The inverter's alive frame, its timeout and the action when it is lost; None: the inverter sends none."""
    silence_after_s: float
    """Fail-safe default: stop transmitting after this long with stale BMS data, s."""
    frames: tuple[CanFrameCodec, ...]
    """Frames the battery side (the gateway) sends, in file order."""
    inverter_frames: tuple[CanFrameCodec, ...]
    """Frames the inverter sends, decodable into named values."""
    aliases: tuple[str, ...] = ()
    """Further names :func:`load_profile` accepts for a built-in profile."""
    extends: str | None = None
    """Name of the base profile this one extends; None if it extends none."""
    mode: SendMode = SendMode.BROADCAST
    """Broadcast every period, or answer each request frame with the whole set."""
    request_id: int | None = None
    """CAN id of the inverter's request frame in request mode; None in broadcast mode."""
    stale: StaleAction = StaleAction.ZEROS
    """What goes out while the BMS data is stale: the zero set, or nothing."""
    inverter_behaviour: InverterBehaviour | None = None
    """How the inverter reacts to 0 A and to silence, as the profile states it (None: it does not say)."""
    confirmed_by: tuple[str, ...] = ()
    """Public reports of this protocol on real inverters, ``<inverter>: <report>``."""

    @property
    def sourced_parts(self) -> tuple[SourcedPart, ...]:
        """Every frame, sent and received, with the sources it names."""
        sent = tuple(SourcedPart(frame.label, frame.spec.sources) for frame in self.frames)
        heard = tuple(SourcedPart(f"inverter {frame.label}", frame.spec.sources) for frame in self.inverter_frames)
        return sent + heard

    @property
    def source_counts(self) -> SourceCounts:
        """How many of its frames are sourced, unverified or say nothing."""
        return SourceCounts.of("frames", self.sourced_parts)

    @property
    def value_names(self) -> frozenset[str]:
        """Every published value name the sent frames read."""
        return frozenset().union(*(frame.value_names for frame in self.frames))

    @property
    def listen_ids(self) -> tuple[int, ...]:
        """CAN ids a link should receive for this profile: inverter frames, heartbeat and request, sorted."""
        ids = {frame.can_id for frame in self.inverter_frames}
        if self.heartbeat is not None:
            ids.add(self.heartbeat.can_id)
        if self.request_id is not None:
            ids.add(self.request_id)
        return tuple(sorted(ids))

    def encode_all(self, values: Mapping[str, Value]) -> list[tuple[int, bytes]]:
        """``(can_id, payload)`` of every sent frame for ``values``, in file order.

        :raises EncodeError: a needed value is missing, a string, or NaN (unless its field sends the invalid
            marker then).
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


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """One built-in profile, for listings (``bms-gateway profiles``)."""

    name: str
    aliases: tuple[str, ...]
    inverters: tuple[str, ...]
    description: str
    transport: str
    extends: str | None
    """Name of the base profile, or None."""
    path: str
    stale: StaleAction = StaleAction.ZEROS
    silence_after_s: float = 60.0
    inverter_behaviour: InverterBehaviour | None = None
    confirmed_by: tuple[str, ...] = ()
    source_counts: SourceCounts | None = None


@dataclass(frozen=True, slots=True)
class _File:
    """A profile file found by name or path: its text, how messages name it, and where its bases are."""

    text: str
    label: str
    """How messages name the file (the path as given, or the built-in file's path)."""
    key: str
    """Identity for cycle detection (the resolved path)."""
    directory: Traversable
    """Where relative ``extends`` paths start."""


def _read_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=ProfileLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ProfileError(f"{source}: YAML error{where}: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"{source}: YAML error: {error}") from None


def _compile(spec: ProfileSpec, source: str, extends: str | None) -> Profile:
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
        aliases=spec.aliases,
        extends=extends,
        mode=spec.mode,
        request_id=spec.request_id,
        stale=spec.stale,
        inverter_behaviour=spec.inverter_behaviour,
        confirmed_by=spec.confirmed_by,
    )


def _resolve(
    data: object, source: str, directory: Traversable, chain: tuple[tuple[str, str], ...]
) -> tuple[object, str | None]:
    """``data`` with its ``extends`` chain applied, and the base's name (None without extends).

    :param chain: (key, label) of every file on the way here, this one last, to detect cycles.
    """
    if not isinstance(data, Mapping) or "extends" not in data:
        return data, None
    target = data["extends"]
    if not isinstance(target, str) or not target:
        raise ProfileError(f"{source}: extends must be a profile name or a path, got {target!r}")
    try:
        base = _locate(target, directory)
    except ProfileNotFoundError as error:
        raise ProfileError(f"{source}: extends: {error}") from None
    if base.key in (key for key, _ in chain):
        path = " -> ".join([*(label for _, label in chain), base.label])
        raise ProfileError(f"{source}: extends cycle: {path}")
    base_data, _ = _resolve(
        _read_yaml(base.text, base.label), base.label, base.directory, (*chain, (base.key, base.label))
    )
    base_spec = parse_profile(base_data, base.label)  # the base must be valid on its own, named by its file
    assert isinstance(base_data, Mapping)
    return merge_profiles(base_data, data, source), base_spec.name


def _load(file: _File) -> Profile:
    data, extends = _resolve(_read_yaml(file.text, file.label), file.label, file.directory, ((file.key, file.label),))
    return _compile(parse_profile(data, file.label), file.label, extends)


def load_profile_text(text: str, source: str) -> Profile:
    """Parse, validate and compile the YAML ``text`` of a profile; ``source`` names it in messages.

    A relative ``extends`` path starts in ``source``'s directory.

    :raises ProfileError: invalid YAML or an invalid profile, naming ``source``, frame and field.
    """
    path = Path(source)
    return _load(_File(text, source, str(path.resolve()), path.parent))


def _builtin_dir() -> Traversable:
    try:
        return importlib.resources.files(BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        # A checkout installed before the pyproject mapping existed: <repo>/gateway/profiles/loader.py.
        return Path(__file__).resolve().parents[2] / "profiles"


def _builtin_files() -> Iterator[Traversable]:
    directory = _builtin_dir()
    if directory.is_dir():
        for entry in sorted(directory.iterdir(), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith(_SUFFIXES):
                yield entry


def _stem(entry: Traversable) -> str:
    return entry.name.rsplit(".", 1)[0]


def _builtin_file(entry: Traversable) -> _File:
    label = str(entry)
    key = str(entry.resolve()) if isinstance(entry, Path) else label
    return _File(entry.read_text(encoding="utf-8"), label, key, _builtin_dir())


def _builtin_index() -> dict[str, Traversable]:
    """Every built-in name and alias → its file.

    :raises ProfileError: an alias that is another built-in's name or alias, naming the file declaring it.
    """
    files = list(_builtin_files())
    index: dict[str, Traversable] = {_stem(entry): entry for entry in files}
    alias_of: dict[str, Traversable] = {}
    for entry in files:
        data = _read_yaml(entry.read_text(encoding="utf-8"), str(entry))
        aliases = data.get("aliases", []) if isinstance(data, Mapping) else []
        if not isinstance(aliases, list):
            continue  # loading the file reports it
        for alias in (a for a in aliases if isinstance(a, str)):
            if alias in alias_of:
                raise ProfileError(f"{entry}: alias '{alias}' is also an alias of {alias_of[alias]}")
            if alias in index:
                raise ProfileError(f"{entry}: alias '{alias}' is the name of the built-in profile {index[alias]}")
            alias_of[alias] = entry
    return index | alias_of


def builtin_profile_names(*, aliases: bool = False) -> list[str]:
    """Names of the profiles shipped with the gateway, sorted (file names without ``.yaml``).

    :param aliases: include every alias too (for completion and "did you mean").
    :raises ProfileError: with ``aliases``, when two built-ins claim one name.
    """
    if aliases:
        return sorted(_builtin_index())
    return sorted(_stem(entry) for entry in _builtin_files())


def builtin_profiles() -> tuple[ProfileInfo, ...]:
    """Every built-in profile, loaded and validated, sorted by name: for ``bms-gateway profiles``.

    :raises ProfileError: a built-in profile is invalid, or two claim one name or alias.
    """
    _builtin_index()
    infos = []
    for entry in _builtin_files():
        profile = _load(_builtin_file(entry))
        infos.append(
            ProfileInfo(
                name=profile.name,
                aliases=profile.aliases,
                inverters=profile.inverters,
                description=profile.description,
                transport=profile.transport,
                extends=profile.extends,
                path=profile.path,
                stale=profile.stale,
                silence_after_s=profile.silence_after_s,
                inverter_behaviour=profile.inverter_behaviour,
                confirmed_by=profile.confirmed_by,
                source_counts=profile.source_counts,
            )
        )
    return tuple(sorted(infos, key=lambda info: info.name))


def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith(_SUFFIXES) or "/" in name_or_path or "\\" in name_or_path


def _locate(name_or_path: str, directory: Traversable) -> _File:
    """The file a name, an alias or a path (relative to ``directory``) names.

    :raises ProfileNotFoundError: unknown name, or a file that cannot be read.
    :raises ProfileError: a file that is not UTF-8, or an alias clash among the built-ins.
    """
    if not _looks_like_path(name_or_path):
        for entry in _builtin_files():
            if _stem(entry) == name_or_path:
                return _builtin_file(entry)
        index = _builtin_index()
        if name_or_path in index:
            return _builtin_file(index[name_or_path])
        names = builtin_profile_names()
        hint = difflib.get_close_matches(name_or_path, sorted(index), n=1)
        more = f"did you mean '{hint[0]}'?" if hint else "built-in: " + (", ".join(names) or "none")
        raise ProfileNotFoundError(f"unknown profile '{name_or_path}' ({more})")
    if isinstance(directory, Path):
        path = Path(name_or_path) if Path(name_or_path).is_absolute() else directory / name_or_path
        label = str(path) if directory != Path() else name_or_path
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ProfileError(f"{label}: not UTF-8 text") from None
        except OSError as error:
            raise ProfileNotFoundError(f"{label}: cannot read: {error.strerror or error}") from None
        return _File(text, label, str(path.resolve()), path.parent)
    entry = directory.joinpath(name_or_path)  # a base next to a built-in inside a packaged resource
    if not entry.is_file():
        raise ProfileNotFoundError(f"{entry}: cannot read: No such file")
    return _File(entry.read_text(encoding="utf-8"), str(entry), str(entry), directory)


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name (``"pylontech-can"``) or alias, or a profile file by path (``"my.yaml"``).

    A string that ends in ``.yaml``/``.yml`` or contains a path separator is a path; anything else is a
    built-in name or alias.

    :raises ProfileNotFoundError: unknown name, or a file that cannot be read.
    :raises ProfileError: an invalid profile (or base), an ``extends`` cycle, or an alias clash.
    """
    return _load(_locate(name_or_path, Path()))
