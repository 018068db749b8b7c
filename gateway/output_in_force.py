"""The inverter output a config puts in force, CAN or RS485, as ``check`` shows it: the profile, each setting
with its origin, and the fail-safe timeline.

A CAN profile goes through :func:`gateway.effective.resolve`; an RS485 one through the same builder ``run`` uses
(:func:`gateway.rs485.server.build_rs485_output`, built but never started, so no port is opened), so that
``check`` refuses exactly what ``run`` would refuse (a missing ``inverter.serial``, an address out of range,
timing that contradicts the profile).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import SystemClock
from gateway.config import Config
from gateway.effective import Sourced, config_origin, load_config_profile, resolve
from gateway.failsafe_timing import FailsafeTiming, can_failsafe_timing, failsafe_timing
from gateway.rs485.profile import is_rs485_profile
from gateway.rs485.server import SourceState, build_rs485_output, load_output_profile
from gateway.runtime import FailsafeState
from gateway.transport.serial_server import SerialEndpoint

RS485_SILENT_ACTION = "no answer to the inverter's polls until fresh BMS data returns"
READ_ONLY_SILENT_ACTION = "keeps answering, with zero limits and failsafe_state 3 (silent)"


@dataclass(frozen=True, slots=True)
class OutputInForce:
    """What ``check`` prints about the inverter output."""

    profile: str
    path: str
    """The profile's file."""
    inverters: tuple[str, ...]
    rows: list[tuple[str, object, str]]
    """Each setting the config and the profile decide together: key, value, origin."""
    failsafe: FailsafeTiming


def _never_asked() -> SourceState:
    """The source of an output that is built only to be checked: it never serves, so nothing asks."""
    return (), None, FailsafeState.STOPPED


def _rs485_in_force(config: Config) -> OutputInForce:
    profile = load_output_profile(config.inverter.profile, "inverter.profile")
    output = build_rs485_output(config, _never_asked, SystemClock(), profile=profile)  # ConfigError as run's
    serial, own = config.inverter.serial, f"profile {profile.name}"
    timeout = Sourced(output.settings.bms_timeout_s, config_origin(config, config.failsafe, "failsafe.bms_timeout_s"))
    silence = Sourced(output.settings.silence_after_s, "config" if config.failsafe.silence_after_s else own)
    assert isinstance(output.endpoint, SerialEndpoint)  # inverter: is served on inverter.serial, never on TCP
    rows: list[tuple[str, object, str]] = [
        ("inverter.serial.baudrate", output.endpoint.baudrate, "config" if serial and serial.baudrate else own),
        ("inverter.address", output.address, own if config.inverter.address is None else "config"),
        ("failsafe.bms_timeout_s", timeout.value, timeout.origin),
        ("failsafe.silence_after_s", silence.value, silence.origin),
    ]
    silent_action = READ_ONLY_SILENT_ACTION if profile.answer_when_silent else RS485_SILENT_ACTION
    timing = failsafe_timing(profile.name, profile.stale, timeout, silence, silent_action=silent_action)
    return OutputInForce(profile.name, profile.source, profile.inverters, rows, timing)


def output_in_force(config: Config) -> OutputInForce:
    """The inverter output ``config`` names, resolved.

    :raises ConfigError: the profile does not exist, or the config and the profile do not fit together.
    :raises ProfileError: the profile file is invalid.
    """
    if is_rs485_profile(config.inverter.profile):
        return _rs485_in_force(config)
    profile = load_config_profile(config)
    effective = resolve(config, profile)
    return OutputInForce(
        profile.name, profile.path, profile.inverters, effective.rows(), can_failsafe_timing(effective, profile)
    )
