"""The gateway's typed errors.

Every error a user can meet is a :class:`GatewayError` whose message is one line naming the cause, and where the
user can act, a :attr:`GatewayError.hint`: one line with the likely causes and the fix. The CLI prints both
(:func:`error_lines`) and never a traceback.

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
    """Base of every error the gateway raises on purpose.

    :param hint: what the user can do about it, one line without the ``hint:`` prefix; None: nothing to add.
    """

    hint: str | None = None

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        if hint is not None:
            self.hint = hint


def error_lines(error: BaseException) -> list[str]:
    """The lines a user sees for ``error``: its message, then ``hint: …`` when it has one."""
    hint = getattr(error, "hint", None)
    return [str(error), *([f"hint: {hint}"] if hint else [])]


def error_line(error: BaseException) -> str:
    """:func:`error_lines` on one line, for a log record: ``message; hint: …``."""
    return "; ".join(error_lines(error))


class FrameError(GatewayError):
    """A received frame is malformed. ``fault`` is a short machine-readable kind, e.g. ``"bad checksum"``."""

    def __init__(self, fault: str, detail: str = "", *, hint: str | None = None) -> None:
        self.fault = fault
        self.detail = detail
        super().__init__(f"{fault}: {detail}" if detail else fault, hint=hint)


class LinkError(GatewayError):
    """A transport could not deliver: port missing, vanished, timed out or refused a write."""


class LinkTimeout(LinkError):
    """The peer did not answer (completely) within the request's timeout."""


class ConfigError(GatewayError):
    """A configuration problem; the message starts with the dotted key it concerns."""

    def __init__(self, key: str, problem: str, *, hint: str | None = None) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem, hint=hint)


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

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(message, hint=hint)


class ControlNotVerified(ControlError):
    """The write frames went out, but reading the BMS back does not show the new setting."""
