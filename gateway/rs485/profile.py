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

The validated specs are in :mod:`gateway.rs485.profile_spec`, the field schema in
:mod:`gateway.rs485.profile_fields`, the Pylontech command schema in :mod:`gateway.rs485.profile_pylontech`,
the Modbus register-map schema in :mod:`gateway.rs485.profile_modbus`; this module reads the files and the top
level.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Iterator, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import yaml
import yaml.constructor
import yaml.resolver

from gateway.errors import ProfileError, ProfileNotFoundError
from gateway.profiles import StaleAction, parse_inverter_behaviour
from gateway.profiles.sources import parse_confirmed_by
from gateway.rs485.profile_fields import Node
from gateway.rs485.profile_modbus import parse_register_map
from gateway.rs485.profile_pylontech import parse_pylontech
from gateway.rs485.profile_spec import MODBUS_UNITS, PYLONTECH_ADDRESSES, Framing, Rs485Profile
from gateway.yaml_loader import ProfileLoader

BUILTIN_PACKAGE: Final = "gateway.builtin_profiles"
BUILTIN_SUBDIR: Final = "rs485"
_SUFFIXES: Final = (".yaml", ".yml")


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
    top = Node(data, source, _TOP_KEYS)
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
    failsafe = Node(top.get("failsafe", {}), f"{source}: failsafe", ["stale", "silence_after_s", "answer_when_silent"])
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
        pylontech=parse_pylontech(top, source) if pylontech_framing else None,
        registers=None if pylontech_framing else parse_register_map(top, source),
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
