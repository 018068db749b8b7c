"""The gateway's typed errors.

Every error a user can meet is a :class:`GatewayError` whose message is one line naming the cause; the CLI
prints that line and never a traceback.

* :class:`FrameError`: bytes from a wire that are not a valid frame (bad start, length, checksum, ...).
* :class:`LinkError`: a transport failed (port missing or vanished, timeout, write failed).
* :class:`ConfigError`: a configuration file is missing, unreadable or invalid; names the key.
* :class:`ProfileError`: an inverter profile is invalid; names the file, frame and field.
* :class:`ProfileNotFoundError`: no built-in profile has that name, or the profile file cannot be read.
* :class:`ControlRefused`: an opt-in BMS write was refused before anything was written.
* :class:`ControlNotVerified`: a BMS write was sent, but the BMS's read back does not show it.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class FrameError(GatewayError):
    """A received frame is malformed. ``fault`` is a short machine-readable kind, e.g. ``"bad checksum"``."""

    def __init__(self, fault: str, detail: str = "") -> None:
        self.fault = fault
        self.detail = detail
        super().__init__(f"{fault}: {detail}" if detail else fault)


class LinkError(GatewayError):
    """A transport could not deliver: port missing, vanished, timed out or refused a write."""


class LinkTimeout(LinkError):
    """The peer did not answer (completely) within the request's timeout."""


class ConfigError(GatewayError):
    """A configuration problem; the message starts with the dotted key it concerns."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class ProfileError(GatewayError):
    """An inverter profile failed validation; the message names file, frame and field."""


class ProfileNotFoundError(ProfileError):
    """No built-in profile has the given name, or the given profile file cannot be read.

    Separate from an invalid profile so that whoever passed the name can say where it came from (the
    config key), while a broken profile file is reported by file, frame and field.
    """


class ControlError(GatewayError):
    """An opt-in BMS write (:mod:`gateway.control`) did not happen as asked; the message never holds a password."""


class ControlRefused(ControlError):
    """Refused before anything was written. ``reason`` is a short machine-readable kind, e.g. ``"rate limited"``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ControlNotVerified(ControlError):
    """The write frames went out, but reading the BMS back does not show the new setting."""
