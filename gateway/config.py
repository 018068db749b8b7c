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

import ipaddress
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.can_options import interface_mistake
from gateway.errors import ConfigError
from gateway.limits.settings import CurrentSharing, LimitsSettings
from gateway.model import Chemistry
from gateway.secret import REDACTED, Secret
from gateway.yaml_schema import (
    _EXTRA_KEYS,
    _MORE_KEYS,
    _WRITTEN_KEYS,
    _choice,
    _flag,
    _integer,
    _integer_from,
    _Invalid,
    _join,
    _name_or_number,
    _number,
    _optional,
    _parse_section,
    _Section,
    _section_of,
    _setting,
    _show,
    _show_number,
    _text,
    read_yaml_file,
)

KNOWN_BMS_DRIVERS: Final = frozenset({"jk-uart", "jk-modbus"})
"""Names accepted for ``bms.driver``; the one place to add a driver."""
ADDRESSED_BMS_DRIVERS: Final = frozenset({"jk-modbus"})
"""Drivers that poll several unit addresses on one bus: the only ones that take ``bms.addresses``."""
DEFAULT_BMS_ADDRESSES: Final = (1,)
MODBUS_UNITS: Final = (1, 247)
"""Lowest and highest Modbus unit address."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
"""Names accepted for ``logging.level``, most verbose first."""


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


# ---------------------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------------------


MAX_CURRENT_A: Final = 2000.0
"""Upper bound of every current setting, A (and A/s): far above any pack a JK BMS runs; a typo such as a
300-digit number is refused instead of parsed (security audit I1)."""
MAX_VOLTAGE_V: Final = 1000.0
"""Upper bound of every voltage setting, V (and V/s), for the same reason."""
_AMPS: Final = _number(at_least=0, at_most=MAX_CURRENT_A)
NETWORK_PORT_SCHEMES: Final = ("rfc2217", "socket")
"""pyserial URL schemes that reach a serial port over the network; only with ``allow_network_port: true``."""


def _serial_port(value: object) -> str:
    """A serial device path, or an ``rfc2217://`` / ``socket://`` URL (checked against ``allow_network_port`` by
    the section). Every other pyserial URL is refused: ``spy://`` writes the traffic, control password included,
    to a file; ``loop://`` and the rest are for tests, not for a battery (security audit I1)."""
    text = _text(value)
    scheme, separator, _ = text.partition("://")
    if separator and scheme.lower() not in NETWORK_PORT_SCHEMES:
        wanted = "give the device path (/dev/ttyUSB0, or better /dev/serial/by-id/...)"
        raise _Invalid(f"{scheme}:// URLs are not accepted: {wanted}")
    return text


def _check_network_port(path: str, port: str, allowed: bool) -> None:
    scheme = port.partition("://")[0].lower()
    if "://" in port and not allowed:
        raise ConfigError(
            _join(path, "port"),
            f"{scheme}:// carries the BMS traffic (and any control password) over the network in clear; set "
            f"{_join(path, 'allow_network_port')}: true to accept that",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BmsConfig(_Section):
    """``bms``: how to reach the battery management system."""

    driver: str = _setting(_choice(sorted(KNOWN_BMS_DRIVERS)), "jk-uart")
    """BMS protocol driver, one of :data:`KNOWN_BMS_DRIVERS`."""
    port: str = _setting(_serial_port)
    """Serial port: a device path such as ``/dev/ttyUSB0``; ``rfc2217://`` or ``socket://`` only with
    :attr:`allow_network_port`."""
    allow_network_port: bool = _setting(_flag, False)
    """Accept an ``rfc2217://`` or ``socket://`` port: the traffic crosses the network unencrypted."""
    baudrate: int = _setting(_integer(1), 115200)
    """Serial speed, bit/s."""
    poll_interval_s: float = _setting(_number(at_least=0.05, at_most=60), 1.0)
    """Time between the starts of two polls, s (0.05 to 60)."""
    fast_poll_interval_s: float = _setting(_number(at_least=0.05, at_most=60), 0.2)
    """Time between the starts of two polls while the pack is near a threshold, s (0.05 to 60; adaptive polling,
    :mod:`gateway.poll_rate`): a cell past a knee, a temperature in a derating band, a limit ramping, held or at 0,
    the fail-safe not normal. Several packs on one bus poll as fast as their cycle allows. Never slower than
    ``poll_interval_s``; set it equal to poll at one rate."""
    timeout_s: float = _setting(_number(above=0, at_most=10), 0.5)
    """How long to wait for one reply, s (above 0, at most 10)."""
    retries: int = _setting(_integer(0), 1)
    """Extra attempts per poll after a failed request."""
    addresses: tuple[int, ...] = _setting(_unit_addresses, DEFAULT_BMS_ADDRESSES)
    """Modbus unit addresses of the packs on the bus (JK-PB DIP switches), polled in this order; only for the
    drivers in :data:`ADDRESSED_BMS_DRIVERS`."""

    def _validate(self, path: str) -> None:
        _check_network_port(path, self.port, self.allow_network_port)
        if self.driver not in ADDRESSED_BMS_DRIVERS and self.addresses != DEFAULT_BMS_ADDRESSES:
            raise ConfigError(
                _join(path, "addresses"),
                f"only for driver {', '.join(sorted(ADDRESSED_BMS_DRIVERS))} (driver is {self.driver})",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class CanConfig(_Section):
    """``inverter.can``: the CAN bus, as python-can opens it."""

    interface: str = _setting(_text)
    """python-can interface name (``socketcan``, ``virtual``, ``slcan``, ...): one python-can knows."""
    channel: str = _setting(_name_or_number)
    """python-can channel (``can0``, a serial port for slcan, ...); an integer is kept as its text."""
    bitrate: int | None = _setting(_optional(_integer(1)), None)
    """Bus speed, bit/s; ``None``: use the inverter profile's bitrate."""
    extra: Mapping[str, object] = field(default_factory=dict, metadata=_EXTRA_KEYS)
    """Any other keys of the section, passed to ``can.Bus(...)`` unchanged (``check`` warns about unknown ones)."""

    def _validate(self, path: str) -> None:
        # Refused here, not when the bus opens: a misspelt name would otherwise be retried forever.
        mistake = interface_mistake(self.interface)
        if mistake is not None:
            raise ConfigError(_join(path, mistake.key), mistake.problem, hint=mistake.hint)


_OUTPUT_ADDRESS: Final = _integer_from(1, 254)
"""An RS485 output's address: a Pylontech pack address or a Modbus unit (each profile narrows the range)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialPortConfig(_Section):
    """``inverter.serial``, ``extra_outputs[].serial``: an RS485 port on which the gateway answers polls."""

    port: str = _setting(_serial_port)
    """Serial port: a device path; ``rfc2217://`` or ``socket://`` only with :attr:`allow_network_port`."""
    baudrate: int | None = _setting(_optional(_integer(1)), None)
    """Serial speed, bit/s; ``None``: the profile's (9600 for every built-in RS485 profile)."""
    allow_network_port: bool = _setting(_flag, False)
    """Accept an ``rfc2217://`` or ``socket://`` port: the traffic crosses the network unencrypted."""

    def _validate(self, path: str) -> None:
        _check_network_port(path, self.port, self.allow_network_port)


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpConfig(_Section):
    """``extra_outputs[].tcp``: where a Modbus TCP output listens."""

    host: str = _setting(_text, "127.0.0.1")
    """Address to bind; the default keeps the output on this machine."""
    port: int = _setting(_integer_from(1, 65535), 5020)
    """TCP port (502, Modbus's own, needs root or CAP_NET_BIND_SERVICE)."""
    allow_remote: bool = _setting(_flag, False)
    """Allow a non-loopback :attr:`host`: Modbus TCP has no authentication."""
    max_connections: int = _setting(_integer_from(1, 64), 8)
    """Clients served at once; one more is closed at once (idle clients must not use up the file descriptors)."""
    idle_timeout_s: float = _setting(_number(at_least=1, at_most=3600), 60.0)
    """A client that sends nothing for this long is disconnected, s."""

    def _validate(self, path: str) -> None:
        _check_loopback_bind(path, "host", self.host, self.allow_remote, "Modbus TCP")


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


_TAPER_SOC: Final = _number(at_least=0, at_most=100)
_TAPER_FRACTION: Final = _number(above=0, at_most=1)


def _soc_ccl_taper(value: object) -> tuple[tuple[float, float], ...]:
    """``limits.soc_ccl_taper``: a mapping SOC % → fraction of the charge ceiling, e.g. ``{95: 0.5, 98: 0.2}``;
    as (SOC, fraction) pairs, SOC ascending."""
    if not isinstance(value, Mapping) or not value:
        raise _Invalid(f"expected a mapping of SOC % to a fraction, e.g. {{95: 0.5, 98: 0.2}}, got {_show(value)}")
    steps = []
    for soc, fraction in value.items():
        try:
            steps.append((_TAPER_SOC(soc), _TAPER_FRACTION(fraction)))
        except _Invalid as error:
            raise _Invalid(f"at SOC {_show(soc)}: {error}") from None
    return tuple(sorted(steps))


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig(_Section):
    """``limits``: the user's caps on top of the BMS's own limits, and how current limits move."""

    max_charge_current_a: float = _setting(_AMPS, _TUNING.max_charge_current_a)
    """Highest charge current ever requested from the inverter, A."""
    max_discharge_current_a: float = _setting(_AMPS, _TUNING.max_discharge_current_a)
    """Highest discharge current ever allowed to the inverter, A."""
    bms_current_fraction: float = _setting(_number(above=0, at_most=1), _TUNING.bms_current_fraction)
    """Fraction of the BMS's max charge / discharge current the inverter may use."""
    temperature_margin_c: float = _setting(_number(at_least=0, at_most=10), _TUNING.temperature_margin_c)
    """Current is 0 this far inside the BMS's temperature windows, °C."""
    current_hold_s: float = _setting(_number(at_least=0), _TUNING.current_hold_s)
    """After a current limit fell, wait this long before raising it again, s."""
    current_ramp_a_per_s: float = _setting(_number(above=0, at_most=MAX_CURRENT_A), _TUNING.current_ramp_a_per_s)
    """Then raise it at this rate, A/s."""
    current_deadband_a: float = _setting(_AMPS, _TUNING.current_deadband_a)
    """Smaller changes are not passed on, A."""
    overshoot_margin_a: float = _setting(_AMPS, _TUNING.overshoot_margin_a)
    """Measured current may exceed the limit by this much before the gateway acts, A."""
    overshoot_after_s: float = _setting(_number(above=0), _TUNING.overshoot_after_s)
    """An excess lasting this long is acted on, s."""
    inverter_response_s: float = _setting(_number(at_least=0), _TUNING.inverter_response_s)
    """After a limit fell, the inverter gets this long to follow it before an excess counts, s."""
    enforcement_disable_min_s: float = _setting(_number(at_least=0), _TUNING.enforcement_disable_min_s)
    """A side disabled by enforcement stays disabled at least this long, s."""
    overshoot_forgive_s: float = _setting(_number(above=0), _TUNING.overshoot_forgive_s)
    """After this long of obedience the advertised limit returns to the true one, s."""
    current_sharing: str = _setting(_choice(CURRENT_SHARING), _TUNING.current_sharing.value)
    """Several packs: how their current is assumed to divide, one of :data:`CURRENT_SHARING`."""
    offline_current_fraction: float = _setting(_number(above=0, at_most=1), _TUNING.offline_current_fraction)
    """Several packs: while one is offline, the battery's current limits are multiplied by this."""
    recovery_current_c: float = _setting(_number(at_least=0, at_most=0.1), _TUNING.recovery_current_c)
    """A deeply discharged cell (at or below the chemistry's recovery threshold) is charged at most this × the
    pack's capacity, A per Ah; 0: not at all until a person checks it."""
    soc_ccl_taper: tuple[tuple[float, float], ...] | None = _setting(_optional(_soc_ccl_taper), None)
    """Charge current near full by SOC: ``{SOC %: fraction of the charge ceiling}``, each from its SOC on; ``None``:
    off."""

    def _validate(self, path: str) -> None:
        steps = self.soc_ccl_taper or ()
        for (low_soc, low_fraction), (high_soc, high_fraction) in itertools.pairwise(steps):
            if high_fraction > low_fraction:
                raise ConfigError(
                    _join(path, "soc_ccl_taper"),
                    f"the fraction rises from {_show_number(low_fraction)} at SOC {_show_number(low_soc)} % to "
                    f"{_show_number(high_fraction)} at {_show_number(high_soc)} %",
                    hint="the charge current should fall as the SOC rises: give higher SOCs smaller fractions",
                )


_CELL_VOLTS: Final = _optional(_number(at_least=1.0, at_most=5.0))
"""A per-cell voltage override, V, or ``None`` (derive it)."""
MAX_INVERTER_OFFSET_V: Final = 2.0
"""``charging.inverter_voltage_offset_v`` at most this either way, V: a larger gap between two voltmeters on one
battery is a wiring fault to fix, not a setting."""


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
    rebulk_cell_v: float | None = _setting(_CELL_VOLTS, _TUNING.rebulk_cell_v)
    tail_current_c: float | None = _setting(_optional(_number(above=0, at_most=0.2)), _TUNING.tail_current_c)
    tail_time_s: float = _setting(_number(at_least=0), _TUNING.tail_time_s)
    inverter_voltage_offset_v: float = _setting(
        _number(at_least=-MAX_INVERTER_OFFSET_V, at_most=MAX_INVERTER_OFFSET_V), _TUNING.inverter_voltage_offset_v
    )
    float_ramp_v_per_s: float = _setting(_number(above=0, at_most=MAX_VOLTAGE_V), _TUNING.float_ramp_v_per_s)
    cvl_hold_s: float = _setting(_number(at_least=0), _TUNING.cvl_hold_s)
    cvl_ramp_v_per_s: float = _setting(_number(above=0, at_most=MAX_VOLTAGE_V), _TUNING.cvl_ramp_v_per_s)
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
            ("rebulk_cell_v", "float_cell_v", "must be below"),
            ("rebulk_cell_v", "bulk_cell_v", "must be below"),
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


def _check_loopback_bind(path: str, host_key: str, host: str, allow_remote: bool, what: str) -> None:
    """:raises ConfigError: ``host`` reaches beyond this machine and the section's ``allow_remote`` is false."""
    if not is_loopback(host) and not allow_remote:
        raise ConfigError(
            _join(path, host_key),
            f"{host} is not a loopback address and {what} has no authentication: "
            f"set {_join(path, 'allow_remote')}: true to serve beyond this machine",
        )


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
        _check_loopback_bind(path, "bind", self.bind, self.allow_remote, "the endpoint")


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
    max_writes_per_day: int = _setting(_integer_from(1, 1000), 20)
    """Most writes in any 24 h (rolling), counted with :attr:`min_interval_s` in one record of the state
    store, shared by the service and the CLI and kept across restarts (:mod:`gateway.control_budget`)."""
    mqtt: bool = _setting(_flag, False)
    """Also take switch commands from Home Assistant over MQTT (needs :attr:`enabled`, ``mqtt.enabled``, broker
    credentials, and TLS or a loopback broker: :meth:`Config._validate`)."""

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
    state_dir: str | None = _setting(_optional(_text), None)
    """Where what must survive a restart is kept, unless systemd says (``$STATE_DIRECTORY``); None:
    ``~/.local/state/bms-gateway`` (:mod:`gateway.state_store`)."""
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
        self._validate_mqtt_control()
        # A timeout no longer than one poll interval would call every reading stale before the next arrives.
        if self.failsafe.bms_timeout_s <= self.bms.poll_interval_s:
            raise ConfigError(
                "failsafe.bms_timeout_s",
                f"must be greater than bms.poll_interval_s ({_show_number(self.bms.poll_interval_s)})",
            )

    def _validate_mqtt_control(self) -> None:
        """Switch commands over MQTT only from a broker that authenticates and is not overheard (security audit H2):
        the broker's users and ACL are then the only thing deciding who may switch the BMS."""
        mqtt = self.mqtt
        if not (self.control.mqtt and self.control.enabled and mqtt.enabled):
            return
        if mqtt.username is None or mqtt.password is None:
            raise ConfigError(
                "control.mqtt",
                "needs mqtt.username and mqtt.password: on an anonymous broker anyone who can connect could switch "
                "the BMS; hint: give the gateway a broker user and let only Home Assistant's user publish to "
                f"{mqtt.topic_prefix}/+/control/+/set (docs/control.md)",
            )
        if not mqtt.tls.enabled and not is_loopback(mqtt.host):
            raise ConfigError(
                "control.mqtt",
                f"mqtt.host {mqtt.host} is not a loopback address and mqtt.tls.enabled is false: the broker password "
                "and every switch command would cross the network in clear; hint: set mqtt.tls.enabled: true, or "
                "run the broker here (mqtt.host: localhost)",
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
            for name in ("poll_interval_s", "fast_poll_interval_s"):
                key = f"bms[{index}].{name}"
                if index and key in self.explicit_keys and getattr(bus, name) != getattr(self.bms, name):
                    raise ConfigError(key, "set it on bms[0] only: every bus is polled in one cycle")


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


def limits_tuning(limits: LimitsConfig, charging: ChargingConfig) -> LimitsSettings:
    """The limits engine's tuning from the ``limits`` and ``charging`` sections (of the config, or of a charge-cycle
    scenario file)."""
    values: dict[str, Any] = {}
    for section in (limits, charging):
        values.update({name: getattr(section, name) for name in section.__slots__})
    chemistry = values.pop("chemistry")
    values["current_sharing"] = CurrentSharing(values["current_sharing"])
    return LimitsSettings(**values, chemistry=None if chemistry is None else Chemistry(chemistry))


def load_config(path: Path) -> Config:
    """Read, parse and validate the YAML configuration file at ``path``.

    Raises :class:`ConfigError` if the file is missing, unreadable, not UTF-8, not valid YAML or not a
    valid configuration.
    """
    return parse_config(read_yaml_file(path), str(path))
