"""The settings in force: config values win over profile defaults, and each knows where it came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.config import Config
from gateway.errors import ConfigError, ProfileNotFoundError
from gateway.profiles import Profile, load_profile

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sourced(Generic[T]):
    """A setting's value and its origin: ``"config"``, ``"profile <name>"`` or ``"default"``."""

    value: T
    origin: str


@dataclass(frozen=True, slots=True)
class Effective:
    """Settings that the config and the inverter profile decide together."""

    can_bitrate: Sourced[int]
    """CAN bitrate, bit/s."""
    bms_timeout_s: Sourced[float]
    """BMS data older than this is stale, s."""
    silence_after_s: Sourced[float]
    """BMS data older than this silences the output, s."""
    heartbeat_timeout_s: Sourced[float | None]
    """Inverter heartbeat older than this counts as lost, s (None: the profile expects no heartbeat)."""

    def rows(self) -> list[tuple[str, object, str]]:
        return [
            ("inverter.can.bitrate", self.can_bitrate.value, self.can_bitrate.origin),
            ("failsafe.bms_timeout_s", self.bms_timeout_s.value, self.bms_timeout_s.origin),
            ("failsafe.silence_after_s", self.silence_after_s.value, self.silence_after_s.origin),
            # Not a config key: the profile file's own key, always from the profile.
            ("heartbeat.timeout_s", self.heartbeat_timeout_s.value, self.heartbeat_timeout_s.origin),
        ]


def _pick(config_value: T | None, profile_value: T, profile: Profile) -> Sourced[T]:
    if config_value is not None:
        return Sourced(config_value, "config")
    return Sourced(profile_value, f"profile {profile.name}")


def config_origin(config: Config, section: object, key: str) -> str:
    """``"config"`` when the user wrote dotted ``key`` (even if equal to the default), else ``"default"``."""
    if key in config.explicit_keys:
        return "config"
    name = key.rsplit(".", 1)[-1]
    for spec in dataclasses.fields(section):  # type: ignore[arg-type]
        if spec.name == name:
            # A Config built in code records no keys; a value other than the default was still chosen.
            return "default" if getattr(section, name) == spec.default else "config"
    raise KeyError(key)


def load_config_profile(config: Config) -> Profile:
    """The profile ``inverter.profile`` names.

    :raises ConfigError: on ``inverter.profile`` when no profile has that name or its file cannot be read.
    :raises ProfileError: the profile itself is invalid (reported by file, frame and field).
    """
    try:
        return load_profile(config.inverter.profile)
    except ProfileNotFoundError as error:
        raise ConfigError("inverter.profile", str(error)) from None


def resolve(config: Config, profile: Profile) -> Effective:
    """Combine config and profile. :raises ConfigError: the combination is unusable."""
    can = config.inverter.can
    if profile.transport == "can" and can is None:
        raise ConfigError("inverter.can", f"missing: profile {profile.name} talks CAN, so say which adapter")
    bms_timeout = config.failsafe.bms_timeout_s
    timeout_origin = config_origin(config, config.failsafe, "failsafe.bms_timeout_s")
    silence = _pick(config.failsafe.silence_after_s, profile.silence_after_s, profile)
    if silence.value <= bms_timeout:
        raise ConfigError(
            "failsafe.silence_after_s",
            f"{silence.value:g} s ({silence.origin}) must be greater than failsafe.bms_timeout_s ({bms_timeout:g})",
        )
    heartbeat = profile.heartbeat
    return Effective(
        can_bitrate=_pick(can.bitrate if can else None, profile.bitrate, profile),
        bms_timeout_s=Sourced(bms_timeout, timeout_origin),
        silence_after_s=silence,
        heartbeat_timeout_s=Sourced(heartbeat.timeout_s if heartbeat else None, f"profile {profile.name}"),
    )
