"""Validating a YAML file into frozen dataclasses: the mechanism behind the configuration file, shared by every
file a user writes that is validated like it (the charge-cycle scenario file).

A schema is dataclasses deriving from :class:`_Section`: each field names its value parser in its metadata
(:func:`_setting`, :func:`_section_of`), and one generic walker (:func:`_parse_section`) applies them, rejects
unknown keys (suggesting the closest known one) and reports missing required keys. Every problem is a
:class:`~gateway.errors.ConfigError` whose one-line message starts with the dotted key it concerns. The names
keep their leading underscore: they are the schema-writing kit of :mod:`gateway.config` and its siblings, not
an API for anything else.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader

from gateway.errors import ConfigError
from gateway.yaml_loader import ConfigLoader

_T = TypeVar("_T")
_S = TypeVar("_S", bound="_Section")

_Parser = Callable[[object], _T]
"""Turns one raw YAML value into a typed value, or raises :class:`_Invalid` saying what is wrong."""

_MAX_NESTING: Final = 32
"""Deepest list/mapping nesting accepted in pass-through options (also stops self-referencing YAML)."""
_SHOWN_CHARS: Final = 40
"""Longest rendering of a bad value in a message; longer ones are cut with ``...``."""

# Keys of dataclass field metadata that drive the walker.
_PARSE: Final = "config_parse"
_SECTION: Final = "config_section"
_EXTRA: Final = "config_extra"
_WRITTEN: Final = "config_written"
_MORE: Final = "config_more"
"""On a section field: the key may also be a list of such sections; entries after the first go to the field
this names (one marked :data:`_FILLED`)."""
_FILLED: Final = "config_filled"


class _Invalid(Exception):
    """A value parser's complaint; the walker prefixes the dotted key to make a :class:`ConfigError`."""


# ---------------------------------------------------------------------------------------------------------
# Showing values in messages
# ---------------------------------------------------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _show(value: object) -> str:
    """``value`` as the user wrote it in YAML, kept short: ``'fast'``, ``true``, ``null``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= _SHOWN_CHARS else repr(value[:_SHOWN_CHARS]) + "..."
    if isinstance(value, int):
        try:
            return _clip(str(value))
        except ValueError:  # more digits than Python converts to text
            return "a very large integer"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return _clip(repr(value))
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime.datetime):
        return "a timestamp"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


def _show_number(value: float) -> str:
    """A bound or a setting in a message: ``10`` rather than ``10.0``, ``0.05`` as is."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------------------------------------------------
# Value parsers: one per kind of value
# ---------------------------------------------------------------------------------------------------------


def _text(value: object) -> str:
    """A non-empty string, as is."""
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a non-empty string, got {_show(value)}")
    return value


def _name_or_number(value: object) -> str:
    """A non-empty string, or an integer taken as its decimal text (python-can channels such as ``0``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a non-empty string or an integer, got {_show(value)}")
    return value


def _choice(options: Sequence[str]) -> _Parser[str]:
    """One of ``options``, exactly; a near miss gets a suggestion."""

    def parse(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        problem = f"expected one of {', '.join(options)}, got {_show(value)}"
        if isinstance(value, str):
            close = [value.lower()] if value.lower() in options else []
            close = close or difflib.get_close_matches(value, options, n=1)
            if close:
                problem += f" (did you mean {close[0]}?)"
        raise _Invalid(problem)

    return parse


def _integer(minimum: int) -> _Parser[int]:
    """An integer ``>= minimum``. YAML ``true``/``false`` and ``1.0`` are not integers here."""
    wanted = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer of at least {minimum}")

    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid(f"expected {wanted}, got {_show(value)}")
        return value

    return parse


def _number(
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
) -> _Parser[float]:
    """A finite number (YAML int or float, not bool) within the given bounds, as a float."""
    low = f"greater than {_show_number(above)}" if above is not None else None
    if at_least is not None:
        low = f"at least {_show_number(at_least)}"
    high = f"less than {_show_number(below)}" if below is not None else None
    if at_most is not None:
        high = f"at most {_show_number(at_most)}"
    if above == 0 and high is None:
        wanted = "a positive number"
    elif at_least == 0 and high is None:
        wanted = "a non-negative number"
    elif at_least is not None and at_most is not None:
        wanted = f"a number from {_show_number(at_least)} to {_show_number(at_most)}"
    else:
        wanted = " ".join(["a number", " and ".join(bound for bound in (low, high) if bound)]).rstrip()

    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected {wanted}, got {_show(value)}")
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
        if (
            not math.isfinite(result)
            or (above is not None and not result > above)
            or (at_least is not None and not result >= at_least)
            or (below is not None and not result < below)
            or (at_most is not None and not result <= at_most)
        ):
            raise _Invalid(f"expected {wanted}, got {_show(value)}")
        return result

    return parse


def _integer_from(low: int, high: int) -> _Parser[int]:
    """An integer from ``low`` to ``high``."""

    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(f"expected an integer from {low} to {high}, got {_show(value)}")
        return value

    return parse


def _flag(value: object) -> bool:
    """YAML ``true`` or ``false``; nothing else (``yes``/``1`` are YAML 1.1 booleans or integers)."""
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _optional(parse: _Parser[_T]) -> _Parser[_T | None]:
    """``parse``, or ``None`` for YAML ``null``."""

    def parse_optional(value: object) -> _T | None:
        return None if value is None else parse(value)

    return parse_optional


def _plain_data(value: object, key: str, option: str = "", depth: int = 0) -> object:
    """A copy of pass-through data made only of strings, numbers, booleans, null, lists and string-keyed
    mappings, so that it can go to python-can and to JSON unchanged. ``key`` locates ``value`` for messages;
    ``option`` is the top-level option it belongs to."""
    option = option or key
    if depth > _MAX_NESTING:
        raise ConfigError(option, "nested too deeply (or refers to itself)")
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list):
        return [_plain_data(item, f"{key}[{index}]", option, depth + 1) for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        plain: dict[str, object] = {}
        for inner, item in value.items():
            if not isinstance(inner, str):
                raise ConfigError(_join(key, _show(inner)), "expected a string as key")
            plain[inner] = _plain_data(item, _join(key, inner), option, depth + 1)
        return plain
    raise ConfigError(key, f"expected a string, number, true/false, null, list or mapping, got {_show(value)}")


# ---------------------------------------------------------------------------------------------------------
# Declaring the schema
# ---------------------------------------------------------------------------------------------------------


class _Required:
    """Marks a setting without a default."""


_REQUIRED: Final = _Required()


def _setting(parse: _Parser[_T], default: _T | _Required = _REQUIRED) -> _T:
    """A dataclass field read from YAML by ``parse``; without ``default`` the key is required."""
    metadata = {_PARSE: parse}
    if isinstance(default, _Required):
        return cast(_T, field(metadata=metadata))
    return field(default=default, metadata=metadata)


def _section_of(cls: type[_Section], *, more: str | None = None) -> Mapping[str, object]:
    """Field metadata of a nested section: ``field(metadata=_section_of(X))``. An absent or ``null`` section
    is read as empty (each of its required keys then reports "missing"), unless the field defaults to
    ``None``: then it stays ``None``.

    :param more: the key may also be a non-empty list of sections (``key[i].name`` in messages): this field
        gets the first, the field named ``more`` (declared with :data:`_MORE_KEYS`) the others.
    """
    return {_SECTION: cls} if more is None else {_SECTION: cls, _MORE: more}


_EXTRA_KEYS: Final[Mapping[str, object]] = {_EXTRA: True}
"""Field metadata of the mapping that collects every undeclared key of its section (checked to be plain data)."""
_WRITTEN_KEYS: Final[Mapping[str, object]] = {_WRITTEN: True}
"""Field metadata of the set the walker fills with the dotted keys found in the file; not a key itself."""
_MORE_KEYS: Final[Mapping[str, object]] = {_FILLED: True}
"""Field metadata of the tuple that takes the entries after the first of a list-form section (``_section_of(X,
more=...)``); not a key itself."""


def _not_a_key(spec: dataclasses.Field[Any]) -> bool:
    return _WRITTEN in spec.metadata or _FILLED in spec.metadata


def _is_required(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _json_value(value: object) -> object:
    if isinstance(value, _Section):
        return value.to_json()
    if isinstance(value, Mapping):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class _Section:
    """Base of every configuration section."""

    def _validate(self, path: str) -> None:
        """Check rules that span this section's keys; ``path`` is the section's dotted key ("" at the top)."""

    def to_json(self) -> dict[str, Any]:
        """Plain dict of this section (nested sections as dicts, unset values as ``None``; a list-form section
        with several entries as the list)."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            if _not_a_key(spec):
                continue
            value = getattr(self, spec.name)
            more = getattr(self, spec.metadata[_MORE]) if _MORE in spec.metadata else ()
            out[spec.name] = _json_value([value, *more] if more else value)
        return out


# ---------------------------------------------------------------------------------------------------------
# The walker
# ---------------------------------------------------------------------------------------------------------


def _unknown_key(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key (known keys: {', '.join(known)})"


def _parse_section(cls: type[_S], data: object, path: str, written: set[str]) -> _S:
    """Validate the mapping ``data`` (``None``: empty) found at dotted ``path`` into a ``cls``; add the
    dotted keys found in ``data`` (at any depth) to ``written``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {_show(data)}")
    specs = dataclasses.fields(cls)
    known = [spec.name for spec in specs if _EXTRA not in spec.metadata and not _not_a_key(spec)]
    extra_field = next((spec.name for spec in specs if _EXTRA in spec.metadata), None)

    extra: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(key, str) and key in known:
            written.add(_join(path, key))
            continue
        shown = key if isinstance(key, str) else _show(key)
        if extra_field is None:
            raise ConfigError(_join(path, shown), _unknown_key(shown, known))
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(_join(path, shown), "expected an option name of letters, digits and underscores")
        extra[key] = _plain_data(value, _join(path, key))
        written.add(_join(path, key))

    values: dict[str, Any] = {}
    for spec in specs:
        key = _join(path, spec.name)
        if spec.name == extra_field:
            values[spec.name] = MappingProxyType(extra)
        elif _not_a_key(spec):
            continue  # filled below, once every section has been read; or with the list it belongs to
        elif _SECTION in spec.metadata:
            raw = data.get(spec.name)
            if _MORE in spec.metadata and isinstance(raw, list):
                first, *more = _parse_section_list(spec.metadata[_SECTION], raw, key, written)
                values[spec.name], values[spec.metadata[_MORE]] = first, tuple(more)
            elif raw is not None or spec.default is not None:  # an optional section stays None
                values[spec.name] = _parse_section(spec.metadata[_SECTION], raw, key, written)
        elif spec.name in data:
            parse: _Parser[object] = spec.metadata[_PARSE]
            try:
                values[spec.name] = parse(data[spec.name])
            except _Invalid as invalid:
                raise ConfigError(key, str(invalid)) from None
        elif _is_required(spec):
            raise ConfigError(key, "missing")
    for spec in specs:
        if _WRITTEN in spec.metadata:
            values[spec.name] = frozenset(written)

    section = cast(Callable[..., _S], cls)(**values)
    section._validate(path)
    return section


def _parse_section_list(cls: type[_S], data: list[object], path: str, written: set[str]) -> list[_S]:
    """Each item of the non-empty list ``data`` at ``path`` as a ``cls``, its keys reported as ``path[i].key``."""
    if not data:
        raise ConfigError(path, "expected a mapping, or a non-empty list of mappings, got an empty list")
    return [_parse_section(cls, item, f"{path}[{index}]", written) for index, item in enumerate(data)]


# ---------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _load_yaml(content: str, source: str, what: str = "config file") -> object:
    """Parse YAML text; any failure is one :class:`ConfigError` line with the position when known."""
    try:
        return yaml.load(content, Loader=ConfigLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as error:
        problem = error.problem or error.context or "syntax error"
        if error.context and problem.startswith("but "):  # "expected a single document ... but found ..."
            problem = f"{error.context} {problem}"
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        hint = None
        if "'\\t'" in problem:  # PyYAML's words for a tab: the commonest mistake of a hand-edited file
            hint = "YAML indents with spaces, never tabs: replace the tab(s) on that line with spaces"
        raise ConfigError("", f"{what} {source}: invalid YAML{where}: {_one_line(problem)}", hint=hint) from None
    except yaml.reader.ReaderError as error:  # a control character; the text is already decoded
        before = content[: error.position]
        line, column = before.count("\n") + 1, error.position - before.rfind("\n")
        raise ConfigError(
            "",
            f"{what} {source}: invalid YAML at line {line}, column {column}: "
            f"character #x{error.character:04x} is not allowed",
        ) from None
    except RecursionError:
        raise ConfigError("", f"{what} {source}: invalid YAML: nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as error:
        raise ConfigError("", f"{what} {source}: invalid YAML: {_one_line(str(error))}") from None


def read_yaml_file(path: Path, what: str = "config file") -> object:
    """The YAML data of the file at ``path``; ``what`` names the file in messages ("config file").

    :raises ConfigError: missing, a directory, unreadable, not UTF-8, or not valid YAML (with the position).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("", f"{what} {path} not found") from None
    except IsADirectoryError:
        raise ConfigError("", f"{what} {path} is a directory") from None
    except OSError as error:
        raise ConfigError("", f"{what} {path} cannot be read: {error.strerror or error}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError("", f"{what} {path} is not UTF-8 text (bad byte at offset {error.start})") from None
    return _load_yaml(content, str(path), what)
