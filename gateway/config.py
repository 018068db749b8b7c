"""The gateway's one configuration file: YAML validated into frozen dataclasses.

:func:`load_config` reads a file, :func:`parse_config` validates already-loaded data. Every problem, from a
missing file to a misspelt key, is a :class:`~gateway.errors.ConfigError` whose one-line message starts with
the dotted key it concerns, e.g. ``bms.baudrate: expected a positive integer, got 'fast'``; no other exception
escapes for bad input.

The schema is declared once, in the dataclasses below: each field names its parser in its metadata
(:func:`_setting`, :func:`_section_of`), and one generic walker (:func:`_parse_section`) applies them, rejects
unknown keys (suggesting the closest known one) and reports missing required keys. To add a key, add one
field with a parser; to add a section, add one dataclass and one field on its parent. A rule that spans keys
goes in the section's :meth:`_Section._validate`.

:attr:`Config.explicit_keys` records which dotted keys the file itself set, so that a value can be reported as
coming from the config even when it equals the default.

Values an inverter profile may also provide (``inverter.can.bitrate``, ``failsafe.silence_after_s``) stay
``None`` when the user did not set them, so the profile layer can apply "config wins over profile default".
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
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
from gateway.limits.settings import CurrentSharing, LimitsSettings
from gateway.model import Chemistry
from gateway.secret import REDACTED, Secret

_T = TypeVar("_T")
_S = TypeVar("_S", bound="_Section")

_Parser = Callable[[object], _T]
"""Turns one raw YAML value into a typed value, or raises :class:`_Invalid` saying what is wrong."""

KNOWN_BMS_DRIVERS: Final = frozenset({"jk-uart", "jk-modbus"})
"""Names accepted for ``bms.driver``; the one place to add a driver."""
ADDRESSED_BMS_DRIVERS: Final = frozenset({"jk-modbus"})
"""Drivers that poll several unit addresses on one bus: the only ones that take ``bms.addresses``."""
DEFAULT_BMS_ADDRESSES: Final = (1,)
MODBUS_UNITS: Final = (1, 247)
"""Lowest and highest Modbus unit address."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
"""Names accepted for ``logging.level``, most verbose first."""

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


def _unit_addresses(value: object) -> tuple[int, ...]:
    """A non-empty list of distinct Modbus unit addresses (integers 1–247), in polling order."""
    low, high = MODBUS_UNITS
    wanted = f"a non-empty list of distinct integers from {low} to {high}"
    if not isinstance(value, list) or not value:
        raise _Invalid(f"expected {wanted}, got {_show(value)}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
            raise _Invalid(f"expected {wanted}, got {_show(item)} in the list")
    duplicates = sorted({item for item in value if value.count(item) > 1})
    if duplicates:
        raise _Invalid(f"expected {wanted}, got {duplicates[0]} more than once")
    return tuple(value)


def _integer_from(low: int, high: int) -> _Parser[int]:
    """An integer from ``low`` to ``high``."""

    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(f"expected an integer from {low} to {high}, got {_show(value)}")
        return value

    return parse


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
# The schema
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BmsConfig(_Section):
    """``bms``: how to reach the battery management system."""

    driver: str = _setting(_choice(sorted(KNOWN_BMS_DRIVERS)), "jk-uart")
    """BMS protocol driver, one of :data:`KNOWN_BMS_DRIVERS`."""
    port: str = _setting(_text)
    """Serial port: a device path such as ``/dev/ttyUSB0`` or any pyserial URL."""
    baudrate: int = _setting(_integer(1), 115200)
    """Serial speed, bit/s."""
    poll_interval_s: float = _setting(_number(at_least=0.05, at_most=60), 1.0)
    """Time between the starts of two polls, s (0.05 to 60)."""
    timeout_s: float = _setting(_number(above=0, at_most=10), 0.5)
    """How long to wait for one reply, s (above 0, at most 10)."""
    retries: int = _setting(_integer(0), 1)
    """Extra attempts per poll after a failed request."""
    addresses: tuple[int, ...] = _setting(_unit_addresses, DEFAULT_BMS_ADDRESSES)
    """Modbus unit addresses of the packs on the bus (JK-PB DIP switches), polled in this order; only for the
    drivers in :data:`ADDRESSED_BMS_DRIVERS`."""

    def _validate(self, path: str) -> None:
        if self.driver not in ADDRESSED_BMS_DRIVERS and self.addresses != DEFAULT_BMS_ADDRESSES:
            raise ConfigError(
                _join(path, "addresses"),
                f"only for driver {', '.join(sorted(ADDRESSED_BMS_DRIVERS))} (driver is {self.driver})",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class CanConfig(_Section):
    """``inverter.can``: the CAN bus, as python-can opens it."""

    interface: str = _setting(_text)
    """python-can interface name (``socketcan``, ``virtual``, ``slcan``, ...); not restricted here."""
    channel: str = _setting(_name_or_number)
    """python-can channel (``can0``, a serial port for slcan, ...); an integer is kept as its text."""
    bitrate: int | None = _setting(_optional(_integer(1)), None)
    """Bus speed, bit/s; ``None``: use the inverter profile's bitrate."""
    extra: Mapping[str, object] = field(default_factory=dict, metadata=_EXTRA_KEYS)
    """Any other keys of the section, passed to ``can.Bus(...)`` unchanged."""


_OUTPUT_ADDRESS: Final = _integer_from(1, 254)
"""An RS485 output's address: a Pylontech pack address or a Modbus unit (each profile narrows the range)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialPortConfig(_Section):
    """``inverter.serial``, ``extra_outputs[].serial``: an RS485 port on which the gateway answers polls."""

    port: str = _setting(_text)
    """Serial port: a device path or any pyserial URL."""
    baudrate: int | None = _setting(_optional(_integer(1)), None)
    """Serial speed, bit/s; ``None``: the profile's (9600 for every built-in RS485 profile)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpConfig(_Section):
    """``extra_outputs[].tcp``: where a Modbus TCP output listens."""

    host: str = _setting(_text, "127.0.0.1")
    """Address to bind; the default keeps the output on this machine."""
    port: int = _setting(_integer_from(1, 65535), 5020)
    """TCP port (502, Modbus's own, needs root or CAP_NET_BIND_SERVICE)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtraOutputConfig(_Section):
    """One item of ``extra_outputs``: a read-only output beside the inverter's."""

    profile: str = _setting(_text)
    """An RS485 profile that does not steer an inverter (``modbus-battery``), by name or path."""
    serial: SerialPortConfig | None = field(default=None, metadata=_section_of(SerialPortConfig))
    tcp: TcpConfig | None = field(default=None, metadata=_section_of(TcpConfig))
    address: int | None = _setting(_optional(_OUTPUT_ADDRESS), None)
    """The Modbus unit (or Pylontech address); ``None``: the profile's default."""

    def _validate(self, path: str) -> None:
        if (self.serial is None) == (self.tcp is None):
            raise ConfigError(path, "give exactly one of serial and tcp")


def _extra_outputs(value: object) -> tuple[ExtraOutputConfig, ...]:
    """``extra_outputs``: a list of output sections (``null``: none); each item's keys report their index."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of outputs, got {_show(value)}")
    return tuple(
        _parse_section(ExtraOutputConfig, item, f"extra_outputs[{index}]", set()) for index, item in enumerate(value)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class InverterConfig(_Section):
    """``inverter``: what to speak to the inverter, and over what."""

    profile: str = _setting(_text)
    """A built-in profile name (``pylontech-can``) or a path to a profile file; resolved by the profile layer."""
    can: CanConfig | None = field(default=None, metadata=_section_of(CanConfig))
    """CAN bus settings; ``None`` when absent (CAN profiles require it, checked by the profile layer)."""
    serial: SerialPortConfig | None = field(default=None, metadata=_section_of(SerialPortConfig))
    """The RS485 port for RS485 profiles; ``None`` when absent (they require it, checked when assembled)."""
    address: int | None = _setting(_optional(_OUTPUT_ADDRESS), None)
    """RS485 profiles: the Pylontech pack address or the Modbus unit; ``None``: the profile's default."""


_TUNING: Final = LimitsSettings()
"""The limits engine's defaults: the config refers to them instead of restating them."""
CHEMISTRIES: Final = tuple(c.value for c in Chemistry)
CURRENT_SHARING: Final = tuple(c.value for c in CurrentSharing)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig(_Section):
    """``limits``: the user's caps on top of the BMS's own limits, and how current limits move."""

    max_charge_current_a: float = _setting(_number(at_least=0), _TUNING.max_charge_current_a)
    """Highest charge current ever requested from the inverter, A."""
    max_discharge_current_a: float = _setting(_number(at_least=0), _TUNING.max_discharge_current_a)
    """Highest discharge current ever allowed to the inverter, A."""
    bms_current_fraction: float = _setting(_number(above=0, at_most=1), _TUNING.bms_current_fraction)
    """Fraction of the BMS's max charge / discharge current the inverter may use."""
    temperature_margin_c: float = _setting(_number(at_least=0, at_most=10), _TUNING.temperature_margin_c)
    """Current is 0 this far inside the BMS's temperature windows, °C."""
    current_hold_s: float = _setting(_number(at_least=0), _TUNING.current_hold_s)
    """After a current limit fell, wait this long before raising it again, s."""
    current_ramp_a_per_s: float = _setting(_number(above=0), _TUNING.current_ramp_a_per_s)
    """Then raise it at this rate, A/s."""
    current_deadband_a: float = _setting(_number(at_least=0), _TUNING.current_deadband_a)
    """Smaller changes are not passed on, A."""
    overshoot_margin_a: float = _setting(_number(at_least=0), _TUNING.overshoot_margin_a)
    """Measured current may exceed the limit by this much before the gateway acts, A."""
    overshoot_after_s: float = _setting(_number(above=0), _TUNING.overshoot_after_s)
    """An excess lasting this long is acted on, s."""
    overshoot_forgive_s: float = _setting(_number(above=0), _TUNING.overshoot_forgive_s)
    """After this long of obedience the advertised limit returns to the true one, s."""
    current_sharing: str = _setting(_choice(CURRENT_SHARING), _TUNING.current_sharing.value)
    """Several packs: how their current is assumed to divide, one of :data:`CURRENT_SHARING`."""
    offline_current_fraction: float = _setting(_number(above=0, at_most=1), _TUNING.offline_current_fraction)
    """Several packs: while one is offline, the battery's current limits are multiplied by this."""


_CELL_VOLTS: Final = _optional(_number(at_least=1.0, at_most=5.0))
"""A per-cell voltage override, V, or ``None`` (derive it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargingConfig(_Section):
    """``charging``: the charge voltage logic and the voltage thresholds (``null``: derived from the BMS).

    Each key is the field of the same name in :class:`~gateway.limits.settings.LimitsSettings`, documented
    (with its unit) there and in ``config/example.yaml``.
    """

    chemistry: str | None = _setting(_optional(_choice(CHEMISTRIES)), None)
    """Overrides the BMS's battery type: one of :data:`CHEMISTRIES`; ``None``: the BMS's."""
    bulk_cell_v: float | None = _setting(_CELL_VOLTS, None)
    float_cell_v: float | None = _setting(_CELL_VOLTS, None)
    charge_knee_cell_v: float | None = _setting(_CELL_VOLTS, None)
    charge_cutoff_cell_v: float | None = _setting(_CELL_VOLTS, None)
    discharge_knee_cell_v: float | None = _setting(_CELL_VOLTS, None)
    discharge_cutoff_cell_v: float | None = _setting(_CELL_VOLTS, None)
    absorption_s: float = _setting(_number(at_least=0), _TUNING.absorption_s)
    absorption_timeout_s: float = _setting(_number(above=0), _TUNING.absorption_timeout_s)
    absorption_max_delta_v: float = _setting(_number(above=0, at_most=0.5), _TUNING.absorption_max_delta_v)
    rebulk_soc_pct: float = _setting(_number(at_least=0, at_most=100), _TUNING.rebulk_soc_pct)
    rebulk_delta_v: float = _setting(_number(above=0, at_most=1), _TUNING.rebulk_delta_v)
    float_ramp_v_per_s: float = _setting(_number(above=0), _TUNING.float_ramp_v_per_s)
    cvl_hold_s: float = _setting(_number(at_least=0), _TUNING.cvl_hold_s)
    cvl_ramp_v_per_s: float = _setting(_number(above=0), _TUNING.cvl_ramp_v_per_s)
    cvl_deadband_v: float = _setting(_number(at_least=0, at_most=1), _TUNING.cvl_deadband_v)
    soc_cap_pct: float | None = _setting(_optional(_number(above=0, at_most=100)), _TUNING.soc_cap_pct)
    force_charge_soc_pct: float | None = _setting(
        _optional(_number(at_least=0, at_most=50)), _TUNING.force_charge_soc_pct
    )
    full_charge_interval_days: float | None = _setting(_optional(_number(above=0)), _TUNING.full_charge_interval_days)

    def _validate(self, path: str) -> None:
        pairs = (
            ("float_cell_v", "bulk_cell_v", "must not be above"),
            ("charge_knee_cell_v", "charge_cutoff_cell_v", "must be below"),
            ("discharge_cutoff_cell_v", "discharge_knee_cell_v", "must be below"),
        )
        for low, high, rule in pairs:
            low_v, high_v = getattr(self, low), getattr(self, high)
            if low_v is None or high_v is None:
                continue
            if low_v > high_v or (rule == "must be below" and low_v == high_v):
                raise ConfigError(_join(path, low), f"{rule} {_join(path, high)} ({_show_number(high_v)})")


@dataclass(frozen=True, slots=True, kw_only=True)
class FailsafeConfig(_Section):
    """``failsafe``: what happens when the BMS stops answering."""

    bms_timeout_s: float = _setting(_number(above=0), 10.0)
    """Age of the newest BMS data after which it is stale and both current limits become 0, s."""
    silence_after_s: float | None = _setting(_optional(_number(above=0)), None)
    """Age of the newest BMS data after which the gateway stops sending to the inverter, s; ``None``: use
    the profile's default. Must be greater than :attr:`bms_timeout_s`."""

    def _validate(self, path: str) -> None:
        if self.silence_after_s is not None and self.silence_after_s <= self.bms_timeout_s:
            raise ConfigError(
                _join(path, "silence_after_s"),
                f"must be greater than {_join(path, 'bms_timeout_s')} ({_show_number(self.bms_timeout_s)})",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig(_Section):
    """``logging``: what the gateway writes to its log."""

    level: str = _setting(_choice(LOG_LEVELS), "info")
    """Lowest level logged, one of :data:`LOG_LEVELS`."""


# --- telemetry: MQTT, the status endpoint, the fail-safe relay (gateway/telemetry/) -----------------------


def _flag(value: object) -> bool:
    """YAML ``true`` or ``false``; nothing else (``yes``/``1`` are YAML 1.1 booleans or integers)."""
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _secret(value: object) -> Secret:
    """A non-empty string kept in a :class:`~gateway.secret.Secret`, so that it never reaches a log line."""
    if not isinstance(value, str) or not value:
        raise _Invalid("expected a non-empty string")  # the value itself is never shown
    return Secret(value)


def _topic_part(value: object) -> str:
    """An MQTT topic prefix: no wildcards, no empty levels, no leading or trailing ``/``."""
    text = _text(value)
    if any(c in text for c in "+#\0") or text.startswith("/") or text.endswith("/") or "//" in text:
        raise _Invalid(f"expected a topic without +, #, empty levels or a leading/trailing /, got {_show(text)}")
    return text


def _node_id(value: object) -> str:
    """A Home Assistant node id: letters, digits, ``_`` and ``-`` (it becomes one topic level and unique ids)."""
    text = _text(value)
    if not all(c.isascii() and (c.isalnum() or c in "_-") for c in text):
        raise _Invalid(f"expected letters, digits, _ and - only, got {_show(text)}")
    return text


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Invalid(f"expected a port number from 1 to 65535, got {_show(value)}")
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) only ever reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to later is not ours to trust


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttTlsConfig(_Section):
    """``mqtt.tls``: TLS to the broker."""

    enabled: bool = _setting(_flag, False)
    ca_file: str | None = _setting(_optional(_text), None)
    """CA certificates (PEM) that sign the broker's certificate; ``None``: the system's CAs."""
    cert_file: str | None = _setting(_optional(_text), None)
    """Client certificate (PEM), for brokers that authenticate clients by certificate."""
    key_file: str | None = _setting(_optional(_text), None)
    """The client certificate's private key (PEM)."""
    insecure: bool = _setting(_flag, False)
    """Skip the check that the broker's certificate names ``mqtt.host``: for a broker reached by IP address."""

    def _validate(self, path: str) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            missing, given = ("key_file", "cert_file") if self.key_file is None else ("cert_file", "key_file")
            raise ConfigError(_join(path, missing), f"missing (needed with {_join(path, given)})")


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig(_Section):
    """``mqtt``: publish state, limits and health to an MQTT broker, with Home Assistant discovery."""

    enabled: bool = _setting(_flag, False)
    host: str = _setting(_text, "localhost")
    port: int = _setting(_port, 1883)
    username: str | None = _setting(_optional(_text), None)
    password: Secret | None = _setting(_optional(_secret), None)  # noqa: RUF009 (Secret is immutable)
    """Never logged nor shown by ``check --json``."""
    tls: MqttTlsConfig = field(default_factory=MqttTlsConfig, metadata=_section_of(MqttTlsConfig))
    client_id: str | None = _setting(_optional(_text), None)
    """MQTT client id; ``None``: ``bms-gateway-<node_id>``."""
    topic_prefix: str = _setting(_topic_part, "bms-gateway")
    """Topics are ``<topic_prefix>/<node_id>/...``."""
    node_id: str | None = _setting(_optional(_node_id), None)
    """Names this gateway in topics and Home Assistant unique ids; ``None``: the host name."""
    discovery: bool = _setting(_flag, True)
    """Publish Home Assistant MQTT discovery configs."""
    discovery_prefix: str = _setting(_topic_part, "homeassistant")
    min_interval_s: float = _setting(_number(at_least=0.5, at_most=3600), 5.0)
    """No topic is published more often than this, s (a fail-safe change goes out within 1 s)."""
    keepalive_s: int = _setting(_integer(5), 30)
    """MQTT keepalive, s: a gateway cut off without a goodbye shows "offline" after about 1.5 × this."""

    def _validate(self, path: str) -> None:
        if self.password is not None and self.username is None:
            raise ConfigError(_join(path, "password"), f"needs {_join(path, 'username')}")

    def to_json(self) -> dict[str, Any]:
        out = _Section.to_json(self)  # slots dataclasses lose zero-argument super()
        out["password"] = None if self.password is None else REDACTED
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusConfig(_Section):
    """``status``: the HTTP endpoint with JSON status (``bms-gateway status`` reads it) and Prometheus metrics."""

    enabled: bool = _setting(_flag, True)
    bind: str = _setting(_text, "127.0.0.1")
    """Address to listen on; anything but loopback needs :attr:`allow_remote`."""
    port: int = _setting(_port, 9480)
    allow_remote: bool = _setting(_flag, False)
    """Allow a non-loopback :attr:`bind`: the endpoint has no authentication."""
    metrics: bool = _setting(_flag, True)
    """Serve ``/metrics`` (needs the ``metrics`` extra, prometheus-client)."""

    def _validate(self, path: str) -> None:
        self.check_bind(path)

    def check_bind(self, path: str = "status") -> None:
        """:raises ConfigError: :attr:`bind` reaches beyond this machine and :attr:`allow_remote` is false."""
        if not is_loopback(self.bind) and not self.allow_remote:
            raise ConfigError(
                _join(path, "bind"),
                f"{self.bind} is not a loopback address and the endpoint has no authentication: "
                f"set {_join(path, 'allow_remote')}: true to serve beyond this machine",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig(_Section):
    """``relay``: a GPIO line driving a relay that disconnects the battery from the inverter in fail-safe."""

    enabled: bool = _setting(_flag, False)
    chip: str = _setting(_text, "/dev/gpiochip0")
    """GPIO chip device (``gpioinfo`` lists them)."""
    line: int | None = _setting(_optional(_integer(0)), None)
    """Line offset on the chip (the BCM number on a Raspberry Pi); required when enabled."""
    active_low: bool = _setting(_flag, False)
    """The relay closes when the line is driven low (many relay boards)."""

    def _validate(self, path: str) -> None:
        if self.enabled and self.line is None:
            raise ConfigError(_join(path, "line"), f"missing (needed when {_join(path, 'enabled')} is true)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig(_Section):
    """``control``: opt-in writes of the BMS's charge, discharge and balancer switches (:mod:`gateway.control`).

    Nothing is ever written to the BMS unless :attr:`enabled` is true and :attr:`password` is set.
    """

    enabled: bool = _setting(_flag, False)
    password: Secret | None = _setting(_optional(_secret), None)  # noqa: RUF009 (Secret is immutable)
    """The BMS's settings password, compared with the one the BMS reports before any write; never logged nor
    shown by ``check --json``."""
    min_interval_s: float = _setting(_number(at_least=1, at_most=3600), 10.0)
    """Least time between two writes, s."""

    def _validate(self, path: str) -> None:
        if self.enabled and self.password is None:
            raise ConfigError(_join(path, "password"), f"missing (needed when {_join(path, 'enabled')} is true)")

    def to_json(self) -> dict[str, Any]:
        out = _Section.to_json(self)  # slots dataclasses lose zero-argument super()
        out["password"] = None if self.password is None else REDACTED
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(_Section):
    """The whole configuration file."""

    bms: BmsConfig = field(metadata=_section_of(BmsConfig, more="more_bms"))
    """The BMS link; with ``bms`` a list (several buses, mixed drivers), its first entry."""
    more_bms: tuple[BmsConfig, ...] = field(default=(), metadata=_MORE_KEYS)
    """The entries after the first of a list-form ``bms``; not a key of the file (see :attr:`buses`)."""
    inverter: InverterConfig = field(metadata=_section_of(InverterConfig))
    extra_outputs: tuple[ExtraOutputConfig, ...] = _setting(_extra_outputs, ())
    """Read-only outputs beside the inverter's (e.g. ``modbus-battery`` over TCP for an EMS)."""
    limits: LimitsConfig = field(default_factory=LimitsConfig, metadata=_section_of(LimitsConfig))
    charging: ChargingConfig = field(default_factory=ChargingConfig, metadata=_section_of(ChargingConfig))
    failsafe: FailsafeConfig = field(default_factory=FailsafeConfig, metadata=_section_of(FailsafeConfig))
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata=_section_of(LoggingConfig))
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata=_section_of(MqttConfig))
    status: StatusConfig = field(default_factory=StatusConfig, metadata=_section_of(StatusConfig))
    relay: RelayConfig = field(default_factory=RelayConfig, metadata=_section_of(RelayConfig))
    control: ControlConfig = field(default_factory=ControlConfig, metadata=_section_of(ControlConfig))
    explicit_keys: frozenset[str] = field(default=frozenset(), metadata=_WRITTEN_KEYS, compare=False, repr=False)
    """Dotted keys present in the file (``"failsafe"``, ``"failsafe.bms_timeout_s"``, also when ``null``);
    filled by the parser, empty for a Config built in code. Not a key of the file."""

    @property
    def buses(self) -> tuple[BmsConfig, ...]:
        """Every BMS link, in polling order: ``bms``, or each entry of a list-form ``bms``."""
        return (self.bms, *self.more_bms)

    def _validate(self, path: str) -> None:
        if self.more_bms:
            self._validate_buses()
        # A timeout no longer than one poll interval would call every reading stale before the next arrives.
        if self.failsafe.bms_timeout_s <= self.bms.poll_interval_s:
            raise ConfigError(
                "failsafe.bms_timeout_s",
                f"must be greater than bms.poll_interval_s ({_show_number(self.bms.poll_interval_s)})",
            )

    def _validate_buses(self) -> None:
        """Rules across the entries of a list-form ``bms``."""
        ports: dict[str, int] = {}
        for index, bus in enumerate(self.buses):
            if bus.port in ports:
                raise ConfigError(
                    f"bms[{index}].port", f"{bus.port} is also bms[{ports[bus.port]}].port: one entry per port"
                )
            ports[bus.port] = index
            # One poller reads every bus in turn, once per cycle: the first entry sets the cycle.
            key = f"bms[{index}].poll_interval_s"
            if index and key in self.explicit_keys and bus.poll_interval_s != self.bms.poll_interval_s:
                raise ConfigError(key, "set it on bms[0] only: every bus is polled in one cycle")


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


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also rejects duplicate keys and reports a bad value (``2024-02-30``) with
    its line instead of leaking a ``ValueError``."""

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
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_show(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _load_yaml(content: str, source: str) -> object:
    """Parse YAML text; any failure is one :class:`ConfigError` line with the position when known."""
    try:
        return yaml.load(content, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        problem = error.problem or error.context or "syntax error"
        if error.context and problem.startswith("but "):  # "expected a single document ... but found ..."
            problem = f"{error.context} {problem}"
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError("", f"config file {source}: invalid YAML{where}: {_one_line(problem)}") from None
    except yaml.reader.ReaderError as error:  # a control character; the text is already decoded
        before = content[: error.position]
        line, column = before.count("\n") + 1, error.position - before.rfind("\n")
        raise ConfigError(
            "",
            f"config file {source}: invalid YAML at line {line}, column {column}: "
            f"character #x{error.character:04x} is not allowed",
        ) from None
    except RecursionError:
        raise ConfigError("", f"config file {source}: invalid YAML: nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as error:
        raise ConfigError("", f"config file {source}: invalid YAML: {_one_line(str(error))}") from None


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate data loaded from YAML into a :class:`Config`.

    ``source`` names where ``data`` came from (a file path) in file-level messages. Raises
    :class:`ConfigError` for anything wrong.
    """
    if data is None:
        raise ConfigError("", f"config file {source} is empty")
    if not isinstance(data, Mapping):
        raise ConfigError("", f"config file {source}: expected a mapping of sections, got {_show(data)}")
    return _parse_section(Config, data, "", set())


def load_config(path: Path) -> Config:
    """Read, parse and validate the YAML configuration file at ``path``.

    Raises :class:`ConfigError` if the file is missing, unreadable, not UTF-8, not valid YAML or not a
    valid configuration.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("", f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError("", f"config file {path} is a directory") from None
    except OSError as error:
        raise ConfigError("", f"config file {path} cannot be read: {error.strerror or error}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError("", f"config file {path} is not UTF-8 text (bad byte at offset {error.start})") from None
    return parse_config(_load_yaml(content, str(path)), str(path))
